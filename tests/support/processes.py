"""Starting Paystream's services as real processes for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

import aiohttp

from shared.config import SERVICE_NAMES, SERVICES

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class ProcessExited(AssertionError):
    """A service process died while we waited for it: no point waiting longer."""


PORT_VARIABLES = {service.name: service.port_variable for service in SERVICES}
ALL_SERVICES = SERVICE_NAMES


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"
) -> T:
    """Await `probe` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = await probe()
        except ProcessExited:
            raise
        except Exception as exc:
            last = exc
            result = None
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def stack_environment(database_url: str, amqp_url: str, namespace: str, **overrides: str) -> dict[str, str]:
    """The environment of one test stack: its own ports, database and namespace; fast retries."""
    ports = {name: free_port() for name in ALL_SERVICES}
    env = {
        "DATABASE_URL": database_url,
        "AMQP_URL": amqp_url,
        "BROKER_NAMESPACE": namespace,
        "HTTP_HOST": "127.0.0.1",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "INTAKE_API_KEYS": "demo:sk_test_demo,other:sk_test_other",
        "SANDBOX_URL": f"http://127.0.0.1:{ports['sandbox_gateway']}",
        "SANDBOX_PUBLIC_URL": f"http://127.0.0.1:{ports['sandbox_gateway']}",
        "SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{ports['webhook_receiver']}/webhooks/sandbox",
        "SANDBOX_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        # The sandbox keeps its intents across restarts, in a folder of this stack's own.
        "SANDBOX_DATA_DIR": tempfile.mkdtemp(prefix="paystream-sandbox-"),
        # /_sandbox/* (fault injection) answers only with this token: see Stack.sandbox_admin_headers.
        "SANDBOX_ADMIN_TOKEN": "sbx_admin_" + secrets.token_hex(12),
        "INTAKE_URL": f"http://127.0.0.1:{ports['intake_api']}",
        "STOREFRONT_PUBLIC_URL": f"http://127.0.0.1:{ports['storefront']}",
        "GATEWAY_RETRY_BASE_SECONDS": "0.2",
        "LEDGER_RETRY_BASE_SECONDS": "0.2",
        "EXPIRY_SWEEP_INTERVAL_SECONDS": "0.5",
        # Merchant webhooks go to receivers on this machine, retried in seconds rather than hours.
        "WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        "WEBHOOK_RETRY_SCHEDULE_SECONDS": "0,0.2,0.5,1,1,2,2,2",
    }
    for name, variable in PORT_VARIABLES.items():
        env[variable] = str(ports[name])
    env.update(overrides)
    return env


class ServiceProcess:
    """One service run as `python -m services.<name>`, its output kept in a log file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.env[PORT_VARIABLES[self.name]])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SANDBOX_", "STRIPE_"))}
        environment.update(self.env)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        async def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise ProcessExited(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            async with aiohttp.ClientSession() as session, session.get(f"{self.url}/readyz") as response:
                return response.status == 200

        try:
            await eventually(ready, timeout=timeout, interval=0.2, what=f"{self.name} /readyz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- {self.name} log ---\n{self.tail()}") from None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.name} did not stop within {timeout}s of SIGTERM") from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Stack:
    """A set of services sharing one environment."""

    def __init__(self, env: dict[str, str], log_dir: Path, services: Iterable[str] = ALL_SERVICES) -> None:
        self.env = env
        self.log_dir = log_dir
        self.services = {name: ServiceProcess(name, env, log_dir) for name in services}

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.env[PORT_VARIABLES[name]]}"

    @property
    def sandbox_admin_headers(self) -> dict[str, str]:
        """What a request to the sandbox's /_sandbox/* endpoints (fault injection) must carry."""
        return {"Authorization": f"Bearer {self.env['SANDBOX_ADMIN_TOKEN']}"}

    async def start(self) -> None:
        for service in self.services.values():
            service.start()
        await asyncio.gather(*(s.wait_ready() for s in self.services.values()))

    def stop(self) -> None:
        for service in self.services.values():
            try:
                service.stop()
            except AssertionError:
                pass

    def logs(self) -> str:
        return "\n".join(s.log_text() for s in self.services.values())
