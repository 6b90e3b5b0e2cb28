"""Migrations against the real PostgreSQL: applied once, safe to repeat and to run from two processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from shared.config import SERVICE_NAMES
from shared.db import connect, ensure_database, migrate, migration_files
from tests.support.infra import create_database, drop_database
from tests.support.processes import ROOT


async def _applied(url: str) -> list[tuple[str, int]]:
    conn = await connect(url)
    try:
        rows = await conn.fetch("SELECT service, version FROM public.paystream_migrations ORDER BY service, version")
        return [(r["service"], r["version"]) for r in rows]
    finally:
        await conn.close()


def _expected() -> list[tuple[str, int]]:
    return sorted((service, version) for service in SERVICE_NAMES for version, _, _ in migration_files(service))


async def test_applying_migrations_twice_applies_each_once(servers) -> None:
    url = await create_database(servers.database_url, migrations=())
    try:
        conn = await connect(url)
        try:
            first = await migrate(conn, SERVICE_NAMES)
            second = await migrate(conn, SERVICE_NAMES)
        finally:
            await conn.close()
        assert len(first) == len(_expected()) > 0
        assert second == []
        assert await _applied(url) == _expected()
    finally:
        await drop_database(url)


async def test_two_processes_migrating_at_once_both_succeed(servers) -> None:
    url = await create_database(servers.database_url, migrations=())
    script = (
        "import asyncio, sys; from shared.db import prepare_database; from shared.config import SERVICE_NAMES;"
        "asyncio.run(prepare_database(sys.argv[1], SERVICE_NAMES))"
    )
    try:
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, url, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            for _ in range(2)
        ]
        outputs = await asyncio.gather(*(p.communicate() for p in processes))
        assert [p.returncode for p in processes] == [0, 0], outputs
        assert await _applied(url) == _expected()
    finally:
        await drop_database(url)


async def test_a_missing_database_is_created_and_racing_creators_are_fine(servers) -> None:
    url = await create_database(servers.database_url, migrations=())
    await drop_database(url)
    try:
        await asyncio.gather(ensure_database(url), ensure_database(url), ensure_database(url))
        conn = await connect(url)
        await conn.close()
    finally:
        await drop_database(url)
