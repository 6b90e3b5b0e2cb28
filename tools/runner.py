"""What `make run` runs the Procfile with: every process in the foreground, each output line prefixed by its name.

Unlike honcho, which stops everything when one process exits, a process that exits (crashed, killed, a
dependency it gave up on) is reported loudly and started again after a backoff (1 s, doubling up to 30 s; back
to 1 s once it ran a minute), while the others keep running. Ctrl-C or SIGTERM stops them all: SIGTERM to each,
SIGKILL to any still running after STOP_GRACE_SECONDS, and the runner exits 0.

Each process runs in a session of its own, so a Ctrl-C in the terminal reaches the runner only, which stops
them in order (the services drain in-flight requests on SIGTERM).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_SECONDS = 8.0  # services drain for 5 s (shared/runtime.py DRAIN_SECONDS); Ctrl-C is done within 10 s
FIRST_RESTART_SECONDS = 1.0
MAX_RESTART_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 60.0


@dataclass(frozen=True)
class Entry:
    """One Procfile line: `name: [VAR=value ...] command args...`."""

    name: str
    env: dict[str, str]
    argv: list[str]


def parse_procfile(text: str) -> list[Entry]:
    """The entries of a Procfile (comments and blank lines skipped)."""
    entries = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        words = shlex.split(command)
        if not sep or not name.strip() or not words:
            raise ValueError(f"not a Procfile line: {line!r}")
        env = {}
        while words and "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        entries.append(Entry(name.strip(), env, words))
    return entries


class Runner:
    """Runs Procfile entries, restarting any that exits, until `stop()`."""

    def __init__(self, entries: list[Entry], directory: Path) -> None:
        self._entries = entries
        self._directory = directory
        self._width = max(len(entry.name) for entry in entries)
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()

    def say(self, name: str, line: str) -> None:
        sys.stdout.write(f"{time.strftime('%H:%M:%S')} {name.ljust(self._width)} | {line}\n")
        sys.stdout.flush()

    async def run(self) -> None:
        """Run every entry until `stop()`, then stop them all."""
        keepers = [asyncio.create_task(self._keep_running(entry)) for entry in self._entries]
        await self._stopping.wait()
        await asyncio.gather(*(self._terminate(name, process) for name, process in list(self._processes.items())))
        # The keepers print what their processes said last, then end.
        _, late = await asyncio.wait(keepers, timeout=1.0)
        for keeper in late:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)

    def stop(self) -> None:
        self._stopping.set()

    async def _keep_running(self, entry: Entry) -> None:
        delay = FIRST_RESTART_SECONDS
        restarts = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                *entry.argv,
                cwd=self._directory,
                env={**os.environ, **entry.env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            self._processes[entry.name] = process
            if self._stopping.is_set():  # the stop came while it was starting
                await self._terminate(entry.name, process)
                return
            self.say("runner", f"{entry.name} started (pid {process.pid})")
            assert process.stdout is not None
            async for raw in process.stdout:
                self.say(entry.name, raw.decode(errors="replace").rstrip("\n"))
            code = await process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= HEALTHY_AFTER_SECONDS:
                delay = FIRST_RESTART_SECONDS
            restarts += 1
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            banner = "!" * 12
            self.say(
                "runner",
                f"{banner} {entry.name} {how}; restarting it in {delay:g} s (restart {restarts}); "
                f"the others keep running {banner}",
            )
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
                return
            except TimeoutError:
                pass
            delay = min(delay * 2, MAX_RESTART_SECONDS)

    async def _terminate(self, name: str, process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            self.say("runner", f"{name} did not stop within {STOP_GRACE_SECONDS:g} s of SIGTERM; killing it")
            process.kill()
            await process.wait()


async def _main(entries: list[Entry], directory: Path) -> int:
    runner = Runner(entries, directory)
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop_signal, runner.stop)
    await runner.run()
    runner.say("runner", "every process stopped")
    return 0


def run_foreground(procfile_path: str, directory: str) -> int:
    """Run the Procfile's processes until Ctrl-C or SIGTERM (exit 0), restarting any that exits."""
    return asyncio.run(_main(parse_procfile(Path(procfile_path).read_text()), Path(directory)))
