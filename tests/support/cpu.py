"""What the CPU diagnostics (`python -m tests.ledger_cpu`, `python -m tests.notifier_cpu`) share: a process's CPU
time from /proc, publishing many envelopes at once, and an optional py-spy profile of the process measured."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from shared.broker import Broker
from shared.events import Envelope


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def publish_all(broker: Broker, envelopes: Sequence[Envelope], concurrency: int = 200) -> None:
    for start in range(0, len(envelopes), concurrency):
        await asyncio.gather(*(broker.publish(e) for e in envelopes[start : start + concurrency]))


@asynccontextmanager
async def profiled(pid: int, output: str | None) -> AsyncIterator[None]:
    """With an output path, py-spy samples the process meanwhile and writes its collapsed stacks there."""
    if not output:
        yield
        return
    py_spy = str(Path(sys.executable).parent / "py-spy")
    spy = await asyncio.create_subprocess_exec(
        *(py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", output, "--rate", "200"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(2)
        await asyncio.wait_for(spy.wait(), 30)
