"""PostgreSQL: creating the database and its roles, the connection pool, and numbered SQL migrations per service.

Migrations live in services/<name>/migrations/NNN_description.sql. Each is applied once, in order, in its
own transaction, recorded in public.paystream_migrations; a session advisory lock makes concurrent
starts of several services safe.

Each service that keeps records connects as its own role, which owns its schema (shared/ownership.py,
docs/explanation/ownership.md). A connection that may create roles (the deployment's administrator: `make run`,
the migration job, the tests) creates them, applies the migrations and hands everything in each schema to its
owner's role; then the interfaces each owner publishes are granted to the roles that read them.
"""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from shared.logs import get_logger
from shared.ownership import DATABASE_SERVICES, SCHEMAS, SCHEMAS_BY_OWNER, Schema, role_name

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


def dump_json(value: Any) -> str:
    """`value` as the json and jsonb codecs of our connections write it (for a value passed as text)."""
    # Non-string keys become strings, as the standard library's json.dumps made them.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


@dataclass(frozen=True)
class Timeouts:
    """How soon a silent PostgreSQL is noticed (docs/explanation/failure-detection.md; DATABASE_*_TIMEOUT_SECONDS).

    asyncpg has no heartbeat: without these, a statement sent into a partition waits until the kernel gives up
    on the connection, many minutes later, holding its pool slot (and the batch or request behind it).
    """

    # A statement not answered in this time fails, client-side (asyncpg's command_timeout; it then cancels it
    # on a second connection, and drops the connection if that fails too) and server-side (statement_timeout).
    statement: float = 15.0
    # A connection (TCP, TLS, start-up) not made in this time fails.
    connect: float = 5.0
    # TCP: an idle connection whose peer is gone is found by keepalive probes, one with data unacknowledged by
    # TCP_USER_TIMEOUT; both drop it after about this many seconds. Set on both ends: PostgreSQL's backend
    # lets go of a vanished client's locks and transaction as soon.
    tcp: int = 15

    @property
    def server_settings(self) -> dict[str, str]:
        probe = max(1, self.tcp // 3)
        return {
            "statement_timeout": str(int(self.statement * 1000)),
            "tcp_keepalives_idle": str(probe),
            "tcp_keepalives_interval": str(probe),
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": str(self.tcp * 1000),
        }


DEFAULT_TIMEOUTS = Timeouts()
# A migration may rewrite a large table, and a service starting meanwhile waits for it (an advisory lock).
MIGRATION_TIMEOUTS = Timeouts(statement=600.0)


def _keep_alive(conn: asyncpg.Connection, timeouts: Timeouts) -> None:
    """TCP keepalive and TCP_USER_TIMEOUT on the client's socket (asyncpg has no option for them)."""
    sock = conn._transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket: no network to lose
    probe = max(1, timeouts.tcp // 3)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", probe),
        ("TCP_KEEPINTVL", probe),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", timeouts.tcp * 1000),
    ):
        if hasattr(socket, option):  # Linux has all four; others some
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # orjson: every event's payload and headers go through these, several times a payment.
    await conn.set_type_codec("jsonb", encoder=dump_json, decoder=orjson.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=dump_json, decoder=orjson.loads, schema="pg_catalog")


async def _reset_if_needed(conn: asyncpg.Connection) -> None:
    """Connections come back clean (no LISTEN, no session state are used on pooled ones); only a
    connection returned mid-transaction needs the full reset. Saves a round trip per acquire."""
    if conn.is_in_transaction():
        await conn.reset()


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, timeouts: Timeouts = DEFAULT_TIMEOUTS
) -> asyncpg.Pool:
    """A pool whose connections notice a silent server within `timeouts`."""

    async def init(conn: asyncpg.Connection) -> None:
        _keep_alive(conn, timeouts)
        await _init_connection(conn)

    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=init,
        timeout=timeouts.connect,
        command_timeout=timeouts.statement,
        server_settings=timeouts.server_settings,
        reset=_reset_if_needed,
    )
    assert pool is not None
    return pool


async def connect(url: str, *, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> asyncpg.Connection:
    """One connection (not pooled) that notices a silent server within `timeouts`."""
    conn = await asyncpg.connect(
        url, timeout=timeouts.connect, command_timeout=timeouts.statement, server_settings=timeouts.server_settings
    )
    _keep_alive(conn, timeouts)
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


_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS public.paystream_migrations (
    service text NOT NULL,
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, version)
)
"""


def service_url(url: str, service: str) -> str:
    """`url` as `service` connects: as its own role (with the URL's password), unless the URL names that role."""
    parts = urlsplit(url)
    role = role_name(database_name(url), service)
    if parts.username == role:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    secret = f":{parts.password}" if parts.password is not None else ""
    return urlunsplit((parts.scheme, f"{role}{secret}@{host}", parts.path, parts.query, parts.fragment))


async def _quoted(conn: asyncpg.Connection, name: str) -> str:
    return str(await conn.fetchval("SELECT quote_ident($1)", name))


async def may_manage_roles(conn: asyncpg.Connection) -> bool:
    """Whether this connection's user may create the services' roles (a superuser, or one with CREATEROLE)."""
    return bool(await conn.fetchval("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"))


async def provision(conn: asyncpg.Connection, *, password: str | None = None) -> None:
    """Create every service's role in this database (idempotent, race-safe), give each its schema (and whatever an
    older version created in it as another user), and the migrations table to every role.

    Run by a user that may manage roles, under the migration lock. `password`: the roles' (the deployment's URL's,
    so each service reaches its role with the credentials it was given); None where the server trusts its users.
    """
    database = str(await conn.fetchval("SELECT current_database()"))
    superuser = bool(await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
    roles = {service: role_name(database, service) for service in DATABASE_SERVICES}
    secret = "" if password is None else f" PASSWORD {await conn.fetchval('SELECT quote_literal($1)', password)}"
    for role in roles.values():
        quoted = await _quoted(conn, role)
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            try:
                await conn.execute(f"CREATE ROLE {quoted} LOGIN{secret}")
            except (asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
                pass  # roles are global to the server: another process made it between our check and our CREATE
        if not superuser:  # CREATEROLE alone: become a member, to hand the role its objects and act as it
            await conn.execute(f"GRANT {quoted} TO CURRENT_USER")
        await conn.execute(f"GRANT CONNECT ON DATABASE {await _quoted(conn, database)} TO {quoted}")
    await conn.execute(_MIGRATIONS_TABLE)
    everyone = ", ".join([await _quoted(conn, role) for role in roles.values()])
    await conn.execute(f"GRANT SELECT, INSERT ON public.paystream_migrations TO {everyone}")
    for schema in SCHEMAS:
        await _hand_over(conn, schema.name, roles[schema.owner])


async def _hand_over(conn: asyncpg.Connection, schema: str, role: str) -> None:
    """Make `role` the owner of `schema` and of everything in it (created before roles existed, by another user)."""
    quoted_schema, quoted_role = await _quoted(conn, schema), await _quoted(conn, role)
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted_schema} AUTHORIZATION {quoted_role}")
    owner = await conn.fetchval("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", schema)
    if owner != quoted_role:
        await conn.execute(f"ALTER SCHEMA {quoted_schema} OWNER TO {quoted_role}")
    # Tables (their indexes and serial sequences follow), views and functions not already the role's.
    relations = await conn.fetch(
        """
        SELECT c.oid::regclass::text AS name FROM pg_class c
        WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
          AND c.relowner <> $2::regrole
        """,
        schema,
        role,
    )
    for relation in relations:
        await conn.execute(f"ALTER TABLE {relation['name']} OWNER TO {quoted_role}")
    functions = await conn.fetch(
        "SELECT p.oid::regprocedure::text AS name FROM pg_proc p"
        " WHERE p.pronamespace = $1::regnamespace AND p.proowner <> $2::regrole",
        schema,
        role,
    )
    for function in functions:
        await conn.execute(f"ALTER FUNCTION {function['name']} OWNER TO {quoted_role}")


async def _define_views(conn: asyncpg.Connection, schema: Schema) -> None:
    """Create each view the schema publishes, or append the columns declared since (shared/ownership.py).

    Columns only ever come at the end (PostgreSQL's CREATE OR REPLACE VIEW allows no other change): a reader's
    query keeps working whatever was added after it was written."""
    for name, view in schema.views.items():
        if view.source is None:
            continue  # its owner's migrations define it
        existing = [
            r["attname"]
            for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0"
                " AND NOT attisdropped ORDER BY attnum",
                name,
            )
        ]
        declared = view.expressions()
        added = [column for column in declared if column not in existing]
        if existing and not added:
            continue
        columns = [*existing, *added]
        select = ", ".join(
            column if declared.get(column, column) == column else f"{declared[column]} AS {column}"
            for column in columns
        )
        await conn.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT {select} FROM {view.source}")


async def _publish(conn: asyncpg.Connection, schema: Schema, database: str) -> None:
    """As the owner: grant each interface the schema publishes to the roles of its readers (those that exist)."""
    readers = {reader for readers in schema.interfaces().values() for reader in readers}
    existing = {
        r["rolname"]
        for r in await conn.fetch(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])", [role_name(database, s) for s in readers]
        )
    }

    async def roles_of(services: Iterable[str]) -> str:
        names = [role_name(database, s) for s in services if role_name(database, s) in existing]
        return ", ".join([await _quoted(conn, name) for name in names])

    if everyone := await roles_of(readers):
        await conn.execute(f"GRANT USAGE ON SCHEMA {await _quoted(conn, schema.name)} TO {everyone}")
    for name, view in schema.views.items():
        if (grantees := await roles_of(view.readers)) and await conn.fetchval("SELECT to_regclass($1)", name):
            await conn.execute(f"GRANT SELECT ON {name} TO {grantees}")
    for function, services in schema.functions.items():
        name = function.split(".", 1)[1]
        found = await conn.fetchval(
            "SELECT 1 FROM pg_proc WHERE pronamespace = $1::regnamespace AND proname = $2", schema.name, name
        )
        if (grantees := await roles_of(services)) and found:
            await conn.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {grantees}")


async def migrate(conn: asyncpg.Connection, services: Iterable[str], *, password: str | None = None) -> list[str]:
    """Apply every pending migration of `services`, then grant what each publishes; returns the names applied now.

    A connection that may manage roles first creates them (`provision`), applies the migrations itself (and the
    views the owner publishes) and hands what they made to the schema's owner; a service's own role (a deployment
    that gives each service its own DATABASE_URL) applies its migrations as itself."""
    applied_now: list[str] = []
    database = str(await conn.fetchval("SELECT current_database()"))
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
    try:
        manager = await may_manage_roles(conn)
        if manager:
            await provision(conn, password=password)
        else:
            await conn.execute(_MIGRATIONS_TABLE)
        for service in services:
            applied_now += await _apply(conn, service)
            schema = SCHEMAS_BY_OWNER.get(service)
            if schema is None:
                continue
            await _define_views(conn, schema)
            if manager:  # what the migrations made is the owner's, like the schema
                await _hand_over(conn, schema.name, role_name(database, service))
            await _publish(conn, schema, database)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)
    return applied_now


async def _apply(conn: asyncpg.Connection, service: str) -> list[str]:
    applied_now: list[str] = []
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
                "INSERT INTO public.paystream_migrations (service, version, name, checksum) VALUES ($1, $2, $3, $4)",
                service,
                version,
                name,
                checksum,
            )
        applied_now.append(f"{service}/{name}")
        log.info("migration applied", migrations_of=service, migration=name)
    return applied_now


async def interfaces_missing(url: str, interfaces: Iterable[str]) -> list[str]:
    """Those of the views `interfaces` that the user of `url` cannot read yet (not created, or not granted)."""
    conn = await connect(url)
    try:
        missing = []
        for view in interfaces:
            schema = view.split(".", 1)[0]
            # In this order: each check errs on what the one before it rules out.
            readable = await conn.fetchval(
                """
                SELECT CASE
                    WHEN NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) THEN false
                    WHEN NOT has_schema_privilege($1, 'USAGE') THEN false
                    WHEN to_regclass($2) IS NULL THEN false
                    ELSE has_table_privilege($2, 'SELECT')
                END
                """,
                schema,
                view,
            )
            if not readable:
                missing.append(view)
        return missing
    finally:
        await conn.close()


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
    """Create the database if missing and apply the services' migrations: what every service does at start (with
    the deployment's URL: if it may manage roles, the services' roles are made too, with its password)."""
    await ensure_database(url)
    conn = await connect(url, timeouts=MIGRATION_TIMEOUTS)
    try:
        return await migrate(conn, services, password=urlsplit(url).password)
    finally:
        await conn.close()
