"""`make run`'s runner (tools/runner.py) with real services: one killed comes back, reported loudly, while the
others keep serving; Ctrl-C stops everything and exits 0 within 10 s."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.infra import Servers, delete_namespace, unique_name
from tests.support.processes import PORT_VARIABLES, ROOT, eventually, stack_environment

SERVICES = ("sandbox_gateway", "webhook_receiver")


class RunnerProcess:
    def __init__(self, process: subprocess.Popen[bytes], output: Path, env: dict[str, str]) -> None:
        self.process = process
        self.output = output
        self.env = env

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def pids(self, name: str) -> list[int]:
        return [int(pid) for pid in re.findall(rf"\| {name} started \(pid (\d+)\)", self.text())]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.env[PORT_VARIABLES[name]]}"


def start_runner(procfile: Path, output: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`make run`'s last step, `python -m tools.stack foreground`, its output to `output`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SANDBOX_", "STRIPE_"))}
    with output.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "tools.stack", "foreground", str(procfile), str(ROOT)],
            cwd=ROOT,
            env={**environment, **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
async def runner(servers: Servers, tmp_path: Path) -> AsyncIterator[RunnerProcess]:
    namespace = unique_name("psrun")
    env = stack_environment(servers.database_url, servers.amqp_url, namespace)
    procfile = tmp_path / "Procfile"
    procfile.write_text("".join(f"{name}: {sys.executable} -m services.{name}\n" for name in SERVICES))
    output = tmp_path / "runner.log"
    process = start_runner(procfile, output, env)
    running = RunnerProcess(process, output, env)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for name in SERVICES:
            for pid in running.pids(name):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        await delete_namespace(servers.amqp_url, namespace)


async def healthy(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_killed_service_comes_back_while_the_others_serve_and_ctrl_c_exits_zero(
    runner: RunnerProcess,
) -> None:
    async with aiohttp.ClientSession() as session:
        for name in SERVICES:
            url = runner.url(name)

            async def ready(url: str = url) -> bool:
                return await healthy(session, url)

            await eventually(ready, timeout=30, what=f"{name} ready")
        [first_pid] = runner.pids("sandbox_gateway")
        [receiver_pid] = runner.pids("webhook_receiver")

        os.kill(first_pid, signal.SIGKILL)

        # The receiver answers at every look while the sandbox is down and until it is back.
        answers: list[bool] = []

        async def sandbox_back() -> bool:
            answers.append(await healthy(session, runner.url("webhook_receiver")))
            return len(runner.pids("sandbox_gateway")) == 2 and await healthy(session, runner.url("sandbox_gateway"))

        await eventually(sandbox_back, timeout=30, interval=0.2, what="the sandbox restarted and ready")
        assert answers and all(answers), answers
        assert runner.pids("webhook_receiver") == [receiver_pid]
        assert "sandbox_gateway was killed by signal 9; restarting it in 1 s (restart 1)" in runner.text()
        assert runner.process.poll() is None

    second_pid = runner.pids("sandbox_gateway")[1]
    started = time.monotonic()
    runner.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    code = await asyncio.to_thread(runner.process.wait, 15)
    assert code == 0, runner.text()[-3000:]
    assert time.monotonic() - started < 10
    assert not alive(second_pid) and not alive(receiver_pid)
    assert "every process stopped" in runner.text()
