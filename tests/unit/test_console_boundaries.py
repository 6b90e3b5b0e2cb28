"""The console is a client of the public intake API only (docs/reference/console.md): none of its modules imports
a database or broker client, or the project's own database, broker or message modules."""

from __future__ import annotations

import ast

from tests.support.processes import ROOT

FORBIDDEN = ("asyncpg", "aio_pika", "aiormq", "shared.db", "shared.broker", "shared.registry", "shared.outbox")


def imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_console_module_reaches_the_database_or_the_broker() -> None:
    modules = sorted((ROOT / "services" / "console").rglob("*.py"))
    assert len(modules) > 5
    for module in modules:
        imported = imported_modules(module.read_text())
        reached = sorted(
            name for name in imported for banned in FORBIDDEN if name == banned or name.startswith(f"{banned}.")
        )
        assert not reached, f"{module.relative_to(ROOT)} imports {reached}"


def test_the_check_sees_an_import_of_the_database() -> None:
    assert "asyncpg" in imported_modules("import asyncpg")
    assert "shared.db.connect" in imported_modules("from shared.db import connect")
