"""Which database errors the intake answers with 503 + Retry-After (retry) rather than 500
(docs/reference/intake-api.md)."""

from __future__ import annotations

import asyncpg
import pytest

from services.intake_api.routes import database_unavailable


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(),
        ConnectionResetError(),
        TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to immediate shutdown command"),
        asyncpg.CrashShutdownError("terminating connection because of crash of another server process"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.ProtocolError("unexpected message"),
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.DiskFullError("could not extend file"),
        asyncpg.InternalServerError("XX000"),
        asyncpg.exceptions.UnknownPostgresError("a reply with no SQLSTATE"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_database_that_cannot_serve_now_is_a_retry(error: BaseException) -> None:
    assert database_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UndefinedColumnError("column does not exist"),
        asyncpg.UniqueViolationError("duplicate key"),
        ValueError("a bug of ours"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_bad_statement_or_a_bug_is_not_disguised_as_an_outage(error: BaseException) -> None:
    assert not database_unavailable(error)
