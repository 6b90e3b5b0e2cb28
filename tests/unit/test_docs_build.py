"""The documentation site builds with `mkdocs build --strict` (a broken link, a missing page, a stale anchor or a
warning of any kind fails), and its generated reference holds what the code says (issue 19, item 6)."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# The pages the generator completes at build time, and the marker each keeps in the repository.
GENERATED = {
    "reference/configuration.md": "<!-- generated: settings -->",
    "reference/intake-api.md": "<!-- generated: openapi -->",
    "reference/messages.md": "<!-- generated: asyncapi -->",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built once, strict, into a temporary directory (never into the checkout)."""
    site_dir = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = build.stdout + build.stderr
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert not re.search(r"^WARNING", log, re.MULTILINE), f"the build warned:\n{log}"
    return site_dir


def page_text(site: Path, page: str) -> str:
    return (site / page.removesuffix(".md") / "index.html").read_text()


def test_the_site_builds_strict_with_every_reference_page_the_code_cites(site: Path) -> None:
    cited = set()
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py"), *ROOT.glob("tests/**/*.py")]:
        cited |= set(re.findall(r"docs/(reference/[a-z0-9-]+\.md)", path.read_text()))
    assert cited, "no code cites a reference page: is the pattern broken?"
    for page in sorted(cited):
        assert (site / page.removesuffix(".md") / "index.html").is_file(), f"docs/{page} is cited but not built"


def test_the_generated_pages_keep_their_marker_in_the_repository_and_their_table_in_the_site(site: Path) -> None:
    for page, marker in GENERATED.items():
        assert marker in (DOCS / page).read_text(), f"docs/{page} lost its {marker} (a committed copy?)"
        built = page_text(site, page)
        assert "generated:" not in built, f"{page}: the marker was not replaced"
        assert "<table>" in built, f"{page}: no generated table"


def every_settings_class() -> list[type[BaseSettings]]:
    """Every settings class of the project: the shared bases and each service's own (`settings` modules)."""
    for module in ["shared.config", *sorted(_settings_modules())]:
        importlib.import_module(module)
    found, pending = [], list(BaseSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith(("shared.", "services.")):
            found.append(cls)
    return found


def _settings_modules() -> set[str]:
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for package in ("services", "shared")
        for path in (ROOT / package).rglob("settings.py")
    }


def test_the_configuration_reference_lists_every_setting(site: Path) -> None:
    built = page_text(site, "reference/configuration.md")
    classes = every_settings_class()
    variables = {name.upper() for cls in classes for name in cls.model_fields}
    assert "DATABASE_URL" in variables, f"no settings class found among {classes}"
    for variable in sorted(variables):
        assert f"<code>{variable}</code>" in built, f"{variable} is missing from the configuration page"


def test_the_api_reference_lists_every_operation_of_the_openapi_document(site: Path) -> None:
    from services.intake_api.openapi import openapi_document

    built = page_text(site, "reference/intake-api.md")
    for path, operations in openapi_document()["paths"].items():
        for method in operations:
            assert f"{method.upper()} {path}" in built, f"{method.upper()} {path} is missing"


def test_the_messages_reference_lists_every_message_of_the_asyncapi_document(site: Path) -> None:
    document = json.loads((DOCS / "asyncapi.json").read_text())
    built = page_text(site, "reference/messages.md")
    for name, message in document["components"]["messages"].items():
        assert f"<code>{name}</code>" in built and f"<code>{message['name']}</code>" in built, name
