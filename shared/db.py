"""PostgreSQL: creating the database, the connection pool, and numbered SQL migrations per service.

Migrations live in services/<name>/migrations/NNN_description.sql. Each is applied once, in order, in its
own transaction, recorded in public.paystream_migrations; a session advisory lock makes concurrent
starts of several services safe.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from shared.logs import get_logger

log = get_logger(__name__)

_MIGRATION_LOCK_ID = 7_202_611_230  # any constant shared by every Paystream process
_MIGRATION_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


class MigrationChanged(RuntimeError):
    """A migration file differs from the one applied under its number: the schema is not what the code expects.

    Never retried: the service stops at start (a changed migration must get a new number instead)."""


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def ensure_database(url: str, *, timeout: float = 10.0) -> None:
    """Create the database named in `url` if it does not exist (racing creators are fine)."""
    name = database_name(url)
    conn = await asyncpg.connect(with_database(url, "postgres"), timeout=timeout)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
                log.info("database created", database=name)
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                pass  # another process created it between our check and our CREATE
    finally:
        await conn.close()


def _dump_json(value: Any) -> str:
    # Non-string keys become strings, as the standard library's json.dumps made them.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    # orjson: every event's payload and headers go through these, several times a payment.
    await conn.set_type_codec("jsonb", encoder=_dump_json, decoder=orjson.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=_dump_json, decoder=orjson.loads, schema="pg_catalog")


async def _reset_if_needed(conn: asyncpg.Connection) -> None:
    """Connections come back clean (no LISTEN, no session state are used on pooled ones); only a
    connection returned mid-transaction needs the full reset. Saves a round trip per acquire."""
    if conn.is_in_transaction():
        await conn.reset()


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        timeout=timeout,
        command_timeout=30,
        reset=_reset_if_needed,
    )
    assert pool is not None
    return pool


async def connect(url: str, *, timeout: float = 10.0) -> asyncpg.Connection:
    conn = await asyncpg.connect(url, timeout=timeout)
    await _init_connection(conn)
    return conn


def migration_files(service: str) -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of a service's migrations, in order; an empty list if it has none."""
    package = f"services.{service}"
    try:
        folder = resources.files(package).joinpath("migrations")
    except ModuleNotFoundError:
        return []
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"{service}: two migrations share a number")
    return found


async def migrate(conn: asyncpg.Connection, services: Iterable[str]) -> list[str]:
    """Apply every pending migration of `services`; returns the names applied now."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS public.paystream_migrations (
                service text NOT NULL,
                version integer NOT NULL,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (service, version)
            )
            """
        )
        for service in services:
            done: dict[int, Any] = {
                r["version"]: r["checksum"]
                for r in await conn.fetch(
                    "SELECT version, checksum FROM public.paystream_migrations WHERE service = $1", service
                )
            }
            for version, name, sql in migration_files(service):
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if version in done:
                    if done[version] != checksum:
                        raise MigrationChanged(
                            f"migration {service}/{name} has changed since it was applied;"
                            " add a new numbered migration instead of editing an applied one"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO public.paystream_migrations (service, version, name, checksum)"
                        " VALUES ($1, $2, $3, $4)",
                        service,
                        version,
                        name,
                        checksum,
                    )
                applied_now.append(f"{service}/{name}")
                log.info("migration applied", migrations_of=service, migration=name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)
    return applied_now


async def schemas_missing(url: str, services: Iterable[str]) -> list[str]:
    """Those of `services` whose schema is not deployed yet (no migration of theirs applied)."""
    conn = await connect(url)
    try:
        if await conn.fetchval("SELECT to_regclass('public.paystream_migrations')") is None:
            return list(services)
        deployed = {r["service"] for r in await conn.fetch("SELECT DISTINCT service FROM public.paystream_migrations")}
        return [service for service in services if service not in deployed]
    finally:
        await conn.close()


async def prepare_database(url: str, services: Iterable[str]) -> list[str]:
    """Create the database if missing and apply the services' migrations: what every service does at start."""
    await ensure_database(url)
    conn = await connect(url)
    try:
        return await migrate(conn, services)
    finally:
        await conn.close()
