"""A PostgreSQL cluster of a test's own (initdb + pg_ctl on a free port), so it can be crashed and restarted.

The machine's shared server at 5432 is never touched. As root, the commands run as the `postgres` user,
since initdb and postgres refuse to run as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import free_port


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine: the test cannot run."""


def _bin_dir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not versions:
        raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    return versions[-1].parent


@dataclass
class OwnPostgres:
    """One PostgreSQL server in `data_dir`, listening on 127.0.0.1:`port`, trusting local connections."""

    data_dir: Path
    port: int
    bin_dir: Path

    @property
    def server_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=check)

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.data_dir.parent / "server.log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.data_dir.parent} -c listen_addresses=127.0.0.1", "start",
        )  # fmt: skip

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: every backend killed at once, crash recovery on the next start."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False)


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """A fresh PostgreSQL cluster in a new directory under /tmp, started; stopped and removed afterwards.

    Not under pytest's tmp_path: that sits in a root-only folder the `postgres` user cannot enter.
    """
    bin_dir = _bin_dir()
    root = Path(tempfile.mkdtemp(prefix="paystream-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = OwnPostgres(root / "data", free_port(), bin_dir)
    server._run("initdb", "-D", str(server.data_dir), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
