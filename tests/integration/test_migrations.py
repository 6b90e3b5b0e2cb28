"""Migrations against the real PostgreSQL: applied once, safe to repeat and to run from two processes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import subprocess
import sys

import pytest

from services.ledger.postgres_store import PostgresLedgerStore
from shared.config import SERVICE_NAMES
from shared.db import (
    MigrationChanged,
    connect,
    create_pool,
    ensure_database,
    migrate,
    migration_files,
    prepare_database,
    schemas_missing,
)
from shared.events import PaymentStatus
from tests.support.infra import create_database, drop_database, unique_name
from tests.support.ledger import record_event
from tests.support.payment_histories import intent_created, status_changed
from tests.support.processes import ROOT, stack_environment


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


async def _tamper_checksum(url: str, service: str, version: int) -> None:
    conn = await connect(url)
    try:
        await conn.execute(
            "UPDATE public.paystream_migrations SET checksum = 'edited' WHERE service = $1 AND version = $2",
            service,
            version,
        )
    finally:
        await conn.close()


async def test_a_migration_changed_since_it_was_applied_stops_migrating(servers) -> None:
    url = await create_database(servers.database_url, migrations=("ledger",))
    try:
        await _tamper_checksum(url, "ledger", 1)
        conn = await connect(url)
        try:
            with pytest.raises(MigrationChanged, match=r"ledger/001_ledger\.sql"):
                await migrate(conn, ["ledger"])
        finally:
            await conn.close()
    finally:
        await drop_database(url)


async def test_a_service_whose_applied_migration_changed_stops_at_start(servers, tmp_path) -> None:
    url = await create_database(servers.database_url, migrations=("ledger",))
    try:
        await _tamper_checksum(url, "ledger", 1)
        env = {**stack_environment(url, servers.amqp_url, unique_name("psmig")), "LOG_FORMAT": "console"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.ledger",
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Bounded only so a regression (a service that keeps running) fails instead of hanging the suite.
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 1
        assert "migration ledger/001_ledger.sql has changed since it was applied" in stderr.decode()
    finally:
        await drop_database(url)


async def test_payments_recorded_before_the_version_column_get_version_zero_and_keep_recording(servers) -> None:
    url = await create_database(servers.database_url, migrations=())
    (version, name, first_sql), *later = migration_files("ledger")
    assert any(n == "002_payment_version.sql" for _, n, _ in later)
    conn = await connect(url)
    try:
        # The ledger as deployed before the version column: only its first migration applied.
        await conn.execute(first_sql)
        await conn.execute(
            "CREATE TABLE public.paystream_migrations (service text NOT NULL, version integer NOT NULL,"
            " name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (service, version))"
        )
        await conn.execute(
            "INSERT INTO public.paystream_migrations (service, version, name, checksum) VALUES ('ledger', $1, $2, $3)",
            version,
            name,
            hashlib.sha256(first_sql.encode()).hexdigest(),
        )
        old = f"pay_{secrets.token_hex(8)}"
        await conn.execute(
            "INSERT INTO ledger.payment_requests (id, merchant_id, idempotency_key, request_fingerprint, reference,"
            " amount, currency, return_url, status, created_at, updated_at, expires_at) VALUES"
            " ($1, 'demo', $1, 'f', 'order', 1999, 'USD', 'https://shop.example/', 'PENDING', now(), now(),"
            " now() + interval '1 hour')",
            old,
        )

        applied = await migrate(conn, ["ledger"])

        assert "ledger/002_payment_version.sql" in applied
        assert await conn.fetchval("SELECT version FROM ledger.payment_requests WHERE id = $1", old) == 0
    finally:
        await conn.close()
    pool = await create_pool(url, max_size=2)
    try:
        store = PostgresLedgerStore(pool)
        await record_event(store, intent_created(old))
        recorded = await record_event(store, status_changed(old, PaymentStatus.SUCCEEDED, "webhook", "paid"))
        assert recorded.outcome == "applied"
        row = await pool.fetchrow("SELECT status, version FROM ledger.payment_requests WHERE id = $1", old)
        assert (row["status"], row["version"]) == ("SUCCEEDED", 2)
    finally:
        await pool.close()
        await drop_database(url)


async def test_a_schema_counts_as_deployed_once_its_owner_has_migrated(servers) -> None:
    url = await create_database(servers.database_url, migrations=())
    try:
        before = await schemas_missing(url, ["ledger", "intake_api"])
        await prepare_database(url, ["intake_api"])
        after_intake = await schemas_missing(url, ["ledger", "intake_api"])
        await prepare_database(url, ["ledger"])

        assert (before, after_intake) == (["ledger", "intake_api"], ["ledger"])
        assert await schemas_missing(url, ["ledger", "intake_api"]) == []
    finally:
        await drop_database(url)
