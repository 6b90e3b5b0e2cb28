"""`python -m tools.observe`: what `make observe` runs, Prometheus and Alertmanager without Docker.

Debian's `prometheus` and `prometheus-alertmanager` packages run the project's own monitoring config
(deploy/prometheus, deploy/alertmanager) against the services of `make run` on this machine: the compose
stack's scrape targets (`<service>:<port>`) become `localhost:<the port the service listens on>` (every replica
of `make run REPLICAS=N`), the runbook links get their base URL, and the files go to a directory of their own
together with a Procfile that runs both programs in the foreground.
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from shared.config import SERVICES_BY_NAME
from tools.stack import Stack, replica_ports

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RUNBOOKS = ROOT / "docs" / "runbooks"
DEFAULT_RUNBOOK_BASE_URL = RUNBOOKS.as_uri()
PROMETHEUS_PORT, ALERTMANAGER_PORT = 9090, 9093
# Debian's program names (the alertmanager's is prefixed), and the package that ships each.
PROGRAMS = {"prometheus": "prometheus", "prometheus-alertmanager": "prometheus-alertmanager"}


def _targets(job: dict[str, Any]) -> list[str]:
    return [target for static in job.get("static_configs", []) for target in static.get("targets", [])]


def local_prometheus_config(
    compose_config: dict[str, Any],
    stack: Stack,
    *,
    replicas: int = 1,
    runbook_base_url: str = DEFAULT_RUNBOOK_BASE_URL,
    scrape_interval: str | None = None,
) -> dict[str, Any]:
    """The compose stack's Prometheus config, pointed at this machine.

    A job named after a Paystream service scrapes every replica at the port its settings give; Prometheus and
    Alertmanager are on their usual local ports. Rule files become absolute paths, the runbook base a value.
    """
    config = copy.deepcopy(compose_config)
    if scrape_interval is not None:
        config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = scrape_interval
    config["global"]["external_labels"] = {
        **config["global"].get("external_labels", {}),
        "runbook_base_url": runbook_base_url.rstrip("/"),
    }
    config["rule_files"] = [str((PROMETHEUS_CONFIG.parent / path).resolve()) for path in config["rule_files"]]
    for alertmanager in config["alerting"]["alertmanagers"]:
        alertmanager["static_configs"] = [{"targets": [f"localhost:{ALERTMANAGER_PORT}"]}]
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name in SERVICES_BY_NAME:
            ports = replica_ports(stack, name, replicas)
        elif name == "prometheus":
            ports = [PROMETHEUS_PORT]
        elif name == "alertmanager":
            ports = [ALERTMANAGER_PORT]
        else:
            raise ValueError(f"no local address for scrape job {name!r} (targets {_targets(job)})")
        job["static_configs"] = [{"targets": [f"localhost:{port}" for port in ports]}]
    return config


def local_alertmanager_config(compose_config: dict[str, Any], slack_url_file: Path) -> dict[str, Any]:
    """The compose stack's Alertmanager config with the Slack URL read from a file of this machine."""
    config = copy.deepcopy(compose_config)
    config["global"]["slack_api_url_file"] = str(slack_url_file)
    return config


def procfile(directory: Path, programs: dict[str, str]) -> str:
    """Both programs in the foreground, listening on localhost only, their data under `directory`."""
    prometheus = [
        programs["prometheus"],
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'prometheus-data'}",
        f"--web.listen-address=localhost:{PROMETHEUS_PORT}",
        "--web.enable-lifecycle",
    ]
    alertmanager = [
        programs["prometheus-alertmanager"],
        f"--config.file={directory / 'alertmanager.yml'}",
        f"--storage.path={directory / 'alertmanager-data'}",
        f"--web.listen-address=localhost:{ALERTMANAGER_PORT}",
        "--cluster.listen-address=",  # one instance: no gossip port
    ]
    return f"prometheus: {shlex.join(prometheus)}\nalertmanager: {shlex.join(alertmanager)}\n"


def find_programs() -> dict[str, str]:
    """The installed programs, or a clear stop naming the Debian package to install."""
    found = {name: shutil.which(name) for name in PROGRAMS}
    missing = sorted(PROGRAMS[name] for name, path in found.items() if path is None)
    if missing:
        raise SystemExit(
            f"paystream: {', '.join(missing)} not found: install Debian's packages "
            f"(apt-get install -y {' '.join(missing)}), or run the monitoring with `docker compose up`"
        )
    return {name: str(path) for name, path in found.items()}


def write(
    directory: Path,
    stack: Stack,
    *,
    replicas: int,
    runbook_base_url: str,
    programs: dict[str, str],
    slack_webhook_url: str = "",
) -> list[Path]:
    """Write prometheus.yml, alertmanager.yml, the Slack URL file and the Procfile into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    slack_url_file = directory / "slack_webhook_url"
    # A secret: readable by this user only, never printed.
    slack_url_file.touch(mode=0o600, exist_ok=True)
    slack_url_file.chmod(0o600)
    slack_url_file.write_text(slack_webhook_url)
    prometheus = local_prometheus_config(
        yaml.safe_load(PROMETHEUS_CONFIG.read_text()), stack, replicas=replicas, runbook_base_url=runbook_base_url
    )
    alertmanager = local_alertmanager_config(yaml.safe_load(ALERTMANAGER_CONFIG.read_text()), slack_url_file)
    files = {
        directory / "prometheus.yml": yaml.safe_dump(prometheus, sort_keys=False),
        directory / "alertmanager.yml": yaml.safe_dump(alertmanager, sort_keys=False),
        directory / "Procfile": procfile(directory, programs),
    }
    for path, text in files.items():
        path.write_text(text)
    return list(files)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.observe")
    parser.add_argument("--dir", type=Path, default=ROOT / ".observe", help="where the generated files go")
    parser.add_argument("--replicas", type=int, default=1, help="as given to `make run REPLICAS=N`")
    parser.add_argument("--runbook-base-url", default=os.environ.get("RUNBOOK_BASE_URL") or DEFAULT_RUNBOOK_BASE_URL)
    args = parser.parse_args()
    if args.replicas < 1:
        parser.error("--replicas must be 1 or more")
    programs = find_programs()
    stack = Stack.from_environment()
    directory = args.dir.resolve()
    slack = os.environ.get("SLACK_WEBHOOK_URL", "")
    write(
        directory,
        stack,
        replicas=args.replicas,
        runbook_base_url=args.runbook_base_url,
        programs=programs,
        slack_webhook_url=slack,
    )
    if not slack:
        sys.stderr.write("paystream: SLACK_WEBHOOK_URL is not set; Alertmanager's Slack notifications will fail\n")
    print(
        f"paystream: monitoring the local services (config in {directory}):\n"
        f"  Prometheus     http://localhost:{PROMETHEUS_PORT}/targets  (alerts: /alerts)\n"
        f"  Alertmanager   http://localhost:{ALERTMANAGER_PORT}/\n"
        "Ctrl-C stops both."
    )


if __name__ == "__main__":
    main()
