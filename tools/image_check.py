"""`make image-check`: build the Dockerfile with podman and run a payment through the image.

It starts the ledger and the intake API from the image as the Kubernetes manifests run them (read-only root, uid and
gid 10001, every capability dropped, a tmpfs on /tmp), with host networking, each on a database and broker namespace
of its own; checks `/readyz`, takes a payment through the container's API until the ledger has recorded it, then stops
both with SIGTERM and checks that each exits 0.

Podman reads the `containers.conf` this check writes (runc, cgroupfs, explicit ulimits: what podman needs on machines
like ours). Where the base image cannot be pulled (no registry reachable), a stand-in of the same name is built from
Debian's archive with debootstrap, and the output says so; the Dockerfile is never changed for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from tests.support.infra import delete_namespace, drop_database

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".image-check"
IMAGE = "paystream:dev"  # the tag the local Kubernetes manifests and docker-compose.yml run
API_KEY = "sk_test_image_check"

CONTAINERS_CONF = """\
# Written by tools/image_check.py: crun fails on this kernel's mixed cgroups, so runc with cgroupfs.
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
"""

# Debian release of each python:*-<release> base tag; the stand-in is built from the same release.
_BASE = re.compile(r"^FROM\s+(?:--\S+\s+)?(?P<image>python:[^\s]+-(?P<release>bookworm|trixie))\b", re.MULTILINE)


class CheckFailed(Exception):
    """One line saying which step of the check failed."""


def say(message: str) -> None:
    print(f"image-check: {message}", flush=True)


def podman(*args: str, check: bool = True, capture: bool = True, timeout: float = 900) -> str:
    done = subprocess.run(
        ["podman", *args], capture_output=capture, text=True, timeout=timeout, env=_podman_env(), check=False
    )
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip().splitlines()[-5:] if capture else []
        raise CheckFailed(f"podman {' '.join(args[:2])} failed ({done.returncode}): {' | '.join(detail)}")
    return (done.stdout or "").strip() if capture else ""


def _podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(WORK / "containers.conf")}


def base_image() -> tuple[str, str]:
    """(fully qualified base image, its Debian release), read from the Dockerfile."""
    bases = {(m["image"], m["release"]) for m in _BASE.finditer((ROOT / "Dockerfile").read_text())}
    if len(bases) != 1:
        raise CheckFailed(f"expected one python:<version>-<debian release> base in the Dockerfile, found {bases}")
    image, release = bases.pop()
    return f"docker.io/library/{image}", release


def ensure_base(image: str, release: str) -> None:
    """The base image from its registry, or else a stand-in of the same name built from Debian's archive."""
    if _exists(image):
        standin = podman("image", "inspect", "--format", '{{index .Labels "paystream.standin"}}', image)
        say(f"base {image}: present" + (f" (a stand-in built with {standin})" if standin else ""))
        return
    pulled = subprocess.run(["podman", "pull", "-q", image], capture_output=True, text=True, env=_podman_env())
    if pulled.returncode == 0:
        say(f"base {image}: pulled")
        return
    say(f"base {image} cannot be pulled here ({pulled.stderr.strip().splitlines()[-1:]})")
    say(f"building a stand-in of the same name from Debian's archive (debootstrap {release}); this takes minutes")
    build_standin(image, release)


def _exists(image: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image], env=_podman_env(), check=False).returncode == 0


def build_standin(image: str, release: str) -> None:
    """Debian `release` with its python3 where the official image keeps it, and this machine's CA bundle.

    The CA bundle matters where HTTPS goes through an intercepting proxy: pip inside the build must trust what the
    host trusts. The official image needs none of this.
    """
    if shutil.which("debootstrap") is None:
        raise CheckFailed("the base image cannot be pulled and debootstrap is missing (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="paystream-standin-", dir="/var/tmp") as folder:
        rootfs = Path(folder) / "rootfs"
        packages = "python3,python3-venv,python3-pip-whl,python3-setuptools-whl,ca-certificates"
        started = time.monotonic()
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={packages}", release, str(rootfs), _debian_mirror()],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise CheckFailed(f"debootstrap failed: {done.stderr.strip().splitlines()[-3:]}")
        for name in ("python", "python3"):
            (rootfs / "usr/local/bin" / name).symlink_to("/usr/bin/python3")
        host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if host_bundle.exists():
            shutil.copyfile(host_bundle, rootfs / "etc/ssl/certs/ca-certificates.crt")
        (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
        shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [
                "podman",
                "import",
                "--change",
                "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change",
                "ENV LANG=C.UTF-8",
                "--change",
                'CMD ["python3"]',
                "--change",
                f"LABEL paystream.standin=debootstrap-{release}",
                "-",
                image,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            env=_podman_env(),
            check=False,
        )
        tar.wait()
        if imported.returncode != 0:
            raise CheckFailed(f"podman import of the stand-in failed: {imported.stderr.strip()}")
        say(f"stand-in {image} built in {time.monotonic() - started:.0f} s")


def _debian_mirror() -> str:
    """The mirror this machine's apt uses, so the stand-in comes from where packages already come from."""
    for source in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if source.is_file():
            match = re.search(
                r"(?:^URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(https?://\S+/debian)\s", source.read_text(), re.M
            )
            if match:
                return match.group(1)
    return "http://deb.debian.org/debian"


def build_image() -> None:
    started = time.monotonic()
    podman("build", "--network", "host", "--tag", IMAGE, "--file", str(ROOT / "Dockerfile"), str(ROOT))
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE))
    say(f"built {IMAGE} in {time.monotonic() - started:.0f} s: {size / 2**20:.0f} MiB")
    layers = json.loads(podman("image", "inspect", IMAGE))[0]
    say(f"runs as user {layers['Config'].get('User')}, exposes {sorted(layers['Config'].get('ExposedPorts', {}))}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Deployment:
    """Ledger and intake API from the image, on their own database and broker namespace."""

    def __init__(self, database_url: str, amqp_url: str) -> None:
        token = secrets.token_hex(4)
        self.namespace = f"imagecheck{token}"
        parts = urlsplit(database_url)
        self.database_url = urlunsplit(parts._replace(path=f"/paystream_imagecheck_{token}"))
        self.amqp_url = amqp_url
        self.ports = {"ledger": free_port(), "intake_api": free_port()}
        self.containers: dict[str, str] = {}

    def environment(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database_url,
            "AMQP_URL": self.amqp_url,
            "BROKER_NAMESPACE": self.namespace,
            "INTAKE_API_KEYS": f"imagecheck:{API_KEY}",
            "LEDGER_PORT": str(self.ports["ledger"]),
            "INTAKE_PORT": str(self.ports["intake_api"]),
            "HTTP_HOST": "127.0.0.1",
            "LOG_LEVEL": "WARNING",
        }

    def start(self, service: str) -> None:
        env: list[str] = []
        for name, value in self.environment().items():
            env += ["--env", f"{name}={value}"]
        name = f"paystream-imagecheck-{service}-{self.namespace}"
        podman(
            "run",
            "--detach",
            "--name",
            name,
            "--network",
            "host",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--user",
            "10001:10001",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            *env,
            IMAGE,
            "python",
            "-m",
            f"services.{service}",
        )
        self.containers[service] = name
        say(f"started {service} from {IMAGE} (read-only, uid 10001:10001, --cap-drop ALL, port {self.ports[service]})")

    def stop(self, service: str) -> int:
        """SIGTERM, as Kubernetes and compose stop a container; the exit code the service gave."""
        name = self.containers[service]
        started = time.monotonic()
        podman("stop", "--time", "15", name)
        code = int(podman("inspect", "--format", "{{.State.ExitCode}}", name))
        say(f"{service} stopped by SIGTERM in {time.monotonic() - started:.1f} s with exit code {code}")
        return code

    def logs(self, service: str) -> str:
        return podman("logs", "--tail", "30", self.containers[service], check=False)

    def remove(self) -> None:
        for name in self.containers.values():
            podman("rm", "--force", "--ignore", name, check=False)


async def wait_ready(session: aiohttp.ClientSession, service: str, port: int, deadline: float) -> None:
    url = f"http://127.0.0.1:{port}/readyz"
    while True:
        try:
            async with session.get(url) as answer:
                if answer.status == 200:
                    say(f"{service} GET /readyz: 200")
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise CheckFailed(f"{service} never answered {url} with 200")
        await asyncio.sleep(0.5)


async def take_payment(session: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    """POST a payment through the container's API, then read it until the ledger has recorded it."""
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": secrets.token_hex(8)}
    body = {"amount": 1999, "currency": "EUR", "reference": "image-check", "return_url": "https://shop.example/done"}
    async with session.post(f"{base}/v1/payments", json=body, headers={**headers, "Prefer": "wait=0"}) as answer:
        created = await answer.json()
        if answer.status != 201:
            raise CheckFailed(f"POST /v1/payments answered {answer.status}: {created}")
    say(f"POST /v1/payments: 201 {created['id']} {created['status']}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with session.get(f"{base}/v1/payments/{created['id']}/events", headers=headers) as answer:
            events = (await answer.json()).get("data", [])
        if answer.status == 200 and events:
            kinds = ", ".join(f"{event['event_type']} -> {event['to_status']}" for event in events)
            say(f"GET /v1/payments/{created['id']}/events: 200, recorded by the ledger: {kinds}")
            return created
        await asyncio.sleep(0.3)
    raise CheckFailed(f"the ledger in the image never recorded {created['id']}")


async def exercise(deployment: Deployment) -> None:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # The ledger deploys the schema the intake waits for: start it first.
        deployment.start("ledger")
        await wait_ready(session, "ledger", deployment.ports["ledger"], time.monotonic() + 60)
        deployment.start("intake_api")
        await wait_ready(session, "intake_api", deployment.ports["intake_api"], time.monotonic() + 60)
        await take_payment(session, deployment.ports["intake_api"])
    codes = {service: deployment.stop(service) for service in ("intake_api", "ledger")}
    if any(codes.values()):
        raise CheckFailed(f"a service did not exit 0 on SIGTERM: {codes}")


async def clean_up(deployment: Deployment) -> None:
    """Drop the check's database and broker namespace, as the test suite drops its own."""
    await drop_database(deployment.database_url)
    await delete_namespace(deployment.amqp_url, deployment.namespace)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default=os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--amqp-url", default=os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    args = parser.parse_args()
    if shutil.which("podman") is None:
        say("FAILED: podman is not installed (apt-get install podman runc); the image was not checked")
        return 1
    WORK.mkdir(exist_ok=True)
    (WORK / "containers.conf").write_text(CONTAINERS_CONF)
    deployment = Deployment(args.database_url, args.amqp_url)
    try:
        ensure_base(*base_image())
        build_image()
        asyncio.run(exercise(deployment))
    except (CheckFailed, subprocess.TimeoutExpired) as failure:
        say(f"FAILED: {failure}")
        for service in deployment.containers:
            print(f"--- last log lines of {service} ---\n{deployment.logs(service)}", flush=True)
        return 1
    finally:
        deployment.remove()
        asyncio.run(clean_up(deployment))
    say("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
