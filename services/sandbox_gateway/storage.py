"""What the sandbox keeps across restarts, as a real provider does: a small SQLite file in SANDBOX_DATA_DIR.

Without it the sandbox forgot its intents when it restarted, so the cancels and expiries of those payments were
answered 404 and the payments' webhooks never came. Unset, the sandbox keeps everything in memory (tests that
build it in-process).

Every kind of record (intents, their webhook schedule, and whatever the sandbox learns next: refunds, holds)
lives in one table as a JSON document under (kind, id), with the two columns records are found by besides: the
Idempotency-Key that made it and the record it belongs to (a refund's intent). The in-memory store stays the
model the sandbox works on (plain synchronous code on one event loop); every change is written through here
before the request that made it is answered, and everything is read back once at start. To keep a new kind:
`storage.put("refund", refund.id, asdict(refund), key=idempotency_key, parent=intent_id)` on every change, and
`storage.all("refund")` at start.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "sandbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    key TEXT,
    parent TEXT,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX IF NOT EXISTS records_by_parent ON records (kind, parent);
"""


@dataclass(frozen=True)
class Record:
    """One kept record: its document and the columns it is found by."""

    id: str
    key: str | None
    parent: str | None
    body: dict[str, Any]


class SandboxStorage:
    """The sandbox's records in `<data_dir>/sandbox.sqlite3` (made, with the folder, if missing)."""

    def __init__(self, data_dir: str | Path) -> None:
        folder = Path(data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / FILE_NAME
        # Autocommit: each put is its own transaction, durable when it returns (WAL, synced at checkpoints:
        # the sandbox is a development stand-in, a power cut may lose its last writes, a crash does not).
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def put(
        self, kind: str, record_id: str, body: dict[str, Any], *, key: str | None = None, parent: str | None = None
    ) -> None:
        """Keep the record as it is now (replacing what was kept under its kind and id)."""
        self._db.execute(
            "INSERT INTO records (kind, id, key, parent, body) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (kind, id) DO UPDATE SET key = excluded.key, parent = excluded.parent, body = excluded.body",
            (kind, record_id, key, parent, json.dumps(body, separators=(",", ":"))),
        )

    def delete(self, kind: str, record_id: str) -> None:
        self._db.execute("DELETE FROM records WHERE kind = ? AND id = ?", (kind, record_id))

    def all(self, kind: str) -> Iterator[Record]:
        """Every record of `kind`, in the order they were first kept."""
        rows = self._db.execute("SELECT id, key, parent, body FROM records WHERE kind = ? ORDER BY rowid", (kind,))
        for record_id, key, parent, body in rows.fetchall():
            yield Record(record_id, key, parent, json.loads(body))

    def close(self) -> None:
        self._db.close()
