"""A three-node RabbitMQ cluster on this machine, from Debian's rabbitmq-server, for the scale-out tests.

Each node has its own name, AMQP and distribution ports and data and log folders under one temporary
directory, and all share one Erlang cookie; nodes 2 and 3 join node 1 with `rabbitmqctl join_cluster`.
The machine's default node (5672, rabbit@localhost) is never touched: every command names its node.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.processes import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")  # the scripts themselves, not Debian's su-to-rabbitmq wrappers
STARTUP_TIMEOUT = 180.0  # a node rejoining a cluster under load on 2 shared cores can take minutes


class ClusterUnavailable(RuntimeError):
    """rabbitmq-server is not installed or a node would not start: the cluster tests cannot run."""


@dataclass
class RabbitNode:
    """One node of the test cluster and how to reach and control it."""

    name: str  # e.g. rabbit-psc1a2b-1@localhost
    amqp_port: int
    dist_port: int
    base: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ctl(self, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        """`rabbitmqctl -n <this node> args...`; its output."""
        return _run(["rabbitmqctl", "-n", self.name, *args], self.env, timeout=timeout, check=check)

    def start(self) -> None:
        log = (self.base / "server.out").open("ab")
        self.process = subprocess.Popen(
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # our own process group: stopped by pid, never by name
        )

    def wait_booted(self, timeout: float = STARTUP_TIMEOUT) -> None:
        # `await_startup` returns once the node has booted (or fails fast if it is not running at all).
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise ClusterUnavailable(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.ctl("await_startup", "--timeout", "30", timeout=40)
                return
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise ClusterUnavailable(f"{self.name} did not start:\n{self.log_tail()}") from None
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop the whole node (Erlang VM included), gracefully, as an operator or a node failure would."""
        if not self.running:
            return
        self.ctl("stop", timeout=60, check=False)
        self._reap()

    def _reap(self) -> None:
        assert self.process is not None
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in [*sorted((self.base / "log").glob("*.log")), self.base / "server.out"]:
            if path.exists():
                text += f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return text


@dataclass
class RabbitCluster:
    """Three nodes that form one cluster; `amqp_urls(order)` lists them for AMQP_URL in any order."""

    nodes: list[RabbitNode]
    root: Path
    started_in_seconds: float = 0.0
    events: list[str] = field(default_factory=list)

    def amqp_url(self, *order: int) -> str:
        """AMQP_URL naming the nodes in `order` (indexes), comma-separated (docs/reference/configuration.md)."""
        return ",".join(self.nodes[i].amqp_url for i in (order or range(len(self.nodes))))

    def list_queues(self, node: int = 0) -> list[tuple[str, str, str, str]]:
        """(name, type, members, durable) of every queue, as `rabbitmqctl list_queues name type members durable`
        prints them."""
        out = self.nodes[node].ctl("list_queues", "name", "type", "members", "durable", "--no-table-headers", "--quiet")
        rows = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) >= 4:
                rows.append((parts[0], parts[1], parts[2], parts[3]))
        return rows

    def running_nodes(self, node: int = 0) -> list[str]:
        """The names of the nodes running, as node `node` sees them (from the Erlang list it prints)."""
        listed = self.nodes[node].ctl("eval", "lists:sort(rabbit_nodes:all_running()).", timeout=30)
        return re.findall(r"'([^']+)'", listed)


def _run(command: list[str], env: dict[str, str], *, timeout: float, check: bool = True) -> str:
    result = subprocess.run(
        [str(RABBITMQ_BIN / command[0]), *command[1:]], env=env, capture_output=True, timeout=timeout, text=True
    )
    if check and result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
    return result.stdout


def _node_environment(root: Path, node: str, amqp_port: int, dist_port: int, base: Path) -> dict[str, str]:
    (base / "log").mkdir(parents=True)
    (base / "mnesia").mkdir()
    config = base / "rabbitmq.conf"
    config.write_text(
        "\n".join(
            [
                f"listeners.tcp.default = 127.0.0.1:{amqp_port}",
                "loopback_users = none",
                # A test machine's disk is small and shared; the default 50 MB limit is what we keep free.
                "disk_free_limit.absolute = 50MB",
                "log.console = false",
                "log.file.level = info",
                "",
            ]
        )
    )
    plugins = base / "enabled_plugins"
    plugins.write_text("[].\n")  # no management plugin: faster boot, and its port would collide
    env_file = base / "rabbitmq-env.conf"
    env_file.write_text("")  # never read /etc/rabbitmq/rabbitmq-env.conf, which names the default node
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),  # where the shared .erlang.cookie is
        "LANG": "C.UTF-8",
        "RABBITMQ_CONF_ENV_FILE": str(env_file),
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CONFIG_FILE": str(config.with_suffix("")),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_PID_FILE": str(base / "rabbit.pid"),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    return env


def _free_dist_port() -> int:
    # The distribution port is used by the node and by rabbitmqctl as port+20000: keep both in range.
    while True:
        port = free_port()
        if port + 20000 < 65536:
            return port


@contextmanager
def rabbit_cluster(root: Path, size: int = 3) -> Iterator[RabbitCluster]:
    """Start `size` nodes under `root`, join them into one cluster, yield it; stop and remove them after."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        raise ClusterUnavailable("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    started = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    cookie = root / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(20))
    cookie.chmod(0o400)
    tag = secrets.token_hex(3)
    nodes = []
    for index in range(1, size + 1):
        name = f"rabbit-psc{tag}-{index}@localhost"
        amqp_port, dist_port = free_port(), _free_dist_port()
        base = root / f"node{index}"
        nodes.append(
            RabbitNode(name, amqp_port, dist_port, base, _node_environment(root, name, amqp_port, dist_port, base))
        )
    cluster = RabbitCluster(nodes, root)
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_booted()
        for node in nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", nodes[0].name)
            node.ctl("start_app")
        for node in nodes:
            node.ctl("await_startup", "--timeout", "60", timeout=70)
        cluster.started_in_seconds = time.monotonic() - started
        yield cluster
    finally:
        for node in nodes:
            try:
                node.stop()
            except (subprocess.SubprocessError, OSError):
                node.kill()
        for node in nodes:
            node.kill()
        shutil.rmtree(root, ignore_errors=True)
