"""One owner per schema, enforced by PostgreSQL (docs/explanation/ownership.md): each service connects as its own
role, which owns its schema, reads another's records only through the views granted to it, and is refused the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.intake_api.app import INTAKE_READS
from services.notifier.app import NOTIFIER_READS
from shared.db import connect, migrate, prepare_database, service_url
from shared.ownership import DATABASE_SERVICES, SCHEMAS, reads, role_name
from tests.support.infra import Servers, create_database, drop_database

DENIED = asyncpg.InsufficientPrivilegeError


@pytest.fixture(scope="module")
async def owned_database(servers: Servers) -> AsyncIterator[str]:
    """A database with every service's schema deployed, as `make run` prepares it."""
    url = await create_database(servers.database_url, migrations=("ledger", "intake_api", "notifier"))
    yield url
    await drop_database(url)


async def as_service(url: str, service: str) -> asyncpg.Connection:
    return await connect(service_url(url, service))


async def test_each_service_connects_as_its_own_role_which_owns_its_schema_and_all_in_it(owned_database: str) -> None:
    admin = await connect(owned_database)
    try:
        database = await admin.fetchval("SELECT current_database()")
        for schema in SCHEMAS:
            role = role_name(database, schema.owner)
            conn = await as_service(owned_database, schema.owner)
            try:
                assert await conn.fetchval("SELECT current_user") == role
            finally:
                await conn.close()
            assert (
                await admin.fetchval("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", schema.name)
                == role
            )
            others = await admin.fetch(
                "SELECT relname, relowner::regrole::text AS owner FROM pg_class"
                " WHERE relnamespace = $1::regnamespace AND relkind IN ('r', 'v', 'S') AND relowner <> $2::regrole",
                schema.name,
                role,
            )
            assert others == [], (schema.name, others)
    finally:
        await admin.close()


@pytest.mark.parametrize(
    ("service", "statement"),
    [
        # The intake may not record a payment in the ledger's tables, nor even read them past the view.
        (
            "intake_api",
            "INSERT INTO ledger.payment_logs (payment_request_id, event_id, event_type, source, outcome,"
            " payload, occurred_at) VALUES ('pay_x', gen_random_uuid(), 't', 'intake', 'applied', '{}', now())",
        ),
        ("intake_api", "UPDATE ledger.payment_requests SET status = 'SUCCEEDED'"),
        ("intake_api", "SELECT count(*) FROM ledger.payment_requests"),
        # Nor write the notifier's endpoints directly: it asks the notifier's functions to.
        ("intake_api", "UPDATE notifier.webhook_endpoints SET url = 'https://evil.example/'"),
        ("intake_api", "INSERT INTO notifier.events (id, merchant_id, type, data) VALUES ('evt_x', 'm', 't', '{}')"),
        # The notifier reads payments through the view; it writes none of the ledger's or the intake's rows.
        ("notifier", "UPDATE ledger.payment_requests SET status = 'FAILED'"),
        ("notifier", "SELECT count(*) FROM ledger.payment_events_v1"),
        ("notifier", "DELETE FROM intake.outbox"),
        # The ledger touches nobody else's records.
        (
            "ledger",
            "INSERT INTO intake.outbox (event_id, payment_id, event_type, envelope)"
            " VALUES (gen_random_uuid(), 'pay_x', 't', '{}')",
        ),
        ("ledger", "UPDATE notifier.deliveries SET status = 'delivered'"),
        ("ledger", "SELECT count(*) FROM notifier.events_v1"),
        ("ledger", "SELECT notifier.delete_webhook_endpoint_v1('we_x', 'm')"),
    ],
)
async def test_a_service_is_refused_what_it_does_not_own_and_was_not_granted(
    owned_database: str, service: str, statement: str
) -> None:
    conn = await as_service(owned_database, service)
    try:
        with pytest.raises(DENIED, match="permission denied"):
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_a_reader_reads_what_its_owner_publishes_to_it_and_the_owner_writes_its_own(
    owned_database: str,
) -> None:
    intake = await as_service(owned_database, "intake_api")
    notifier = await as_service(owned_database, "notifier")
    try:
        assert await intake.fetchval("SELECT count(*) FROM ledger.payments_v1") == 0
        assert await intake.fetchval("SELECT count(*) FROM ledger.payment_events_v1") == 0
        assert await notifier.fetchval("SELECT count(*) FROM ledger.payments_v1") == 0
        # The intake registers an endpoint through the notifier's function: the row is the notifier's.
        row = await intake.fetchrow(
            "SELECT id, status FROM notifier.register_webhook_endpoint_v1('we_own', 'shop', 'https://shop.example/h',"
            " '{*}', 'sealed', 20)"
        )
        assert row is not None and (row["id"], row["status"]) == ("we_own", "enabled")
        assert await intake.fetchval("SELECT count(*) FROM notifier.webhook_endpoints_v1 WHERE id = 'we_own'") == 1
        await notifier.execute("UPDATE notifier.webhook_endpoints SET failing_since = now() WHERE id = 'we_own'")
        assert await intake.fetchval("SELECT notifier.delete_webhook_endpoint_v1('we_own', 'shop')") is True
        # The view hands out no secret.
        with pytest.raises(asyncpg.UndefinedColumnError):
            await intake.fetchval("SELECT secret_sealed FROM notifier.webhook_endpoints_v1")
    finally:
        await intake.close()
        await notifier.close()


async def test_concurrent_registrations_never_pass_the_endpoint_cap(owned_database: str) -> None:
    intake = [await as_service(owned_database, "intake_api") for _ in range(6)]
    try:
        rows = await asyncio.gather(
            *(
                conn.fetch(
                    "SELECT id FROM notifier.register_webhook_endpoint_v1($1, 'capped', 'https://c.example/h',"
                    " '{*}', 'sealed', 3)",
                    f"we_cap_{n}",
                )
                for n, conn in enumerate(intake)
            )
        )
        assert sum(len(r) for r in rows) == 3
    finally:
        for conn in intake:
            await conn.close()


async def test_preparing_one_database_from_several_processes_at_once_makes_each_role_once(servers: Servers) -> None:
    url = await create_database(servers.database_url, migrations=())
    try:
        connections = [await connect(url) for _ in range(3)]
        try:
            await asyncio.gather(*(migrate(conn, DATABASE_SERVICES) for conn in connections))
        finally:
            for conn in connections:
                await conn.close()
        for service in DATABASE_SERVICES:
            conn = await as_service(url, service)
            await conn.close()
    finally:
        await drop_database(url)


def test_each_service_declares_exactly_what_the_ownership_map_grants_it() -> None:
    assert sorted(INTAKE_READS) == sorted(reads("intake_api"))
    assert sorted(NOTIFIER_READS) == sorted(reads("notifier"))
    assert reads("ledger") == []


async def test_a_published_view_shows_every_column_its_declaration_lists(owned_database: str) -> None:
    # The ledger's view follows the payment resource: a column added there (the capture's, say) reaches readers.
    intake = await as_service(owned_database, "intake_api")
    try:
        for schema in SCHEMAS:
            for name, view in schema.views.items():
                columns = await intake.fetch(
                    "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0", name
                )
                assert set(view.expressions()) <= {c["attname"] for c in columns}, name
    finally:
        await intake.close()


async def test_a_database_owner_that_may_only_create_roles_prepares_them_as_a_superuser_would(
    servers: Servers,
) -> None:
    # As on Kubernetes: CloudNativePG's application owner is no superuser; it is given CREATEROLE at creation.
    url = await create_database(servers.database_url, migrations=())
    database = url.rsplit("/", 1)[1]
    owner = f"{database}_owner"
    admin = await connect(url)
    try:
        await admin.execute(f'CREATE ROLE "{owner}" LOGIN CREATEROLE')
        await admin.execute(f'ALTER DATABASE "{database}" OWNER TO "{owner}"')
        await admin.execute(f'ALTER SCHEMA public OWNER TO "{owner}"')
        as_owner = url.replace("://postgres@", f"://{owner}@", 1)
        assert as_owner != url, "the test server URL is expected to name the postgres user"

        await prepare_database(as_owner, ["ledger", "intake_api", "notifier"])

        intake = await as_service(url, "intake_api")
        try:
            assert await intake.fetchval("SELECT count(*) FROM ledger.payments_v1") == 0
            with pytest.raises(DENIED, match="permission denied"):
                await intake.execute("DELETE FROM ledger.payment_requests")
        finally:
            await intake.close()
    finally:
        await admin.close()
        await drop_database(url)
        cleanup = await connect(servers.database_url)
        try:
            await cleanup.execute(f'DROP ROLE IF EXISTS "{owner}"')
        finally:
            await cleanup.close()
