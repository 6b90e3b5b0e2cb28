"""`make observe` (issue 13, item 7): the compose stack's monitoring config, pointed at the local services, is a
config Prometheus and Alertmanager accept, and it scrapes every service at the port it listens on.

promtool and amtool come from Debian's `prometheus` and `prometheus-alertmanager` packages; without them these
tests fail (they never skip).
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from shared.config import SERVICE_NAMES, SERVICES_BY_NAME
from tools.observe import DEFAULT_RUNBOOK_BASE_URL, RULES, write
from tools.stack import REPLICA_PORT_STEP, Stack

PROGRAMS = {"prometheus": "/usr/bin/prometheus", "prometheus-alertmanager": "/usr/bin/prometheus-alertmanager"}
SLACK_URL = "https://hooks.slack.com/services/T000/B000/not-a-real-one"


def tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which(name)
    if executable is None:
        pytest.fail(f"{name} is not on PATH: apt-get install -y prometheus prometheus-alertmanager")
    return subprocess.run([executable, *args], capture_output=True, text=True, timeout=60)


def generate(directory: Path, replicas: int = 1, settings: Stack | None = None) -> dict[str, Path]:
    files = write(
        directory,
        settings or Stack.of(_env_file=None),
        replicas=replicas,
        runbook_base_url=DEFAULT_RUNBOOK_BASE_URL,
        programs=PROGRAMS,
        slack_webhook_url=SLACK_URL,
    )
    return {path.name: path for path in files} | {"slack_webhook_url": directory / "slack_webhook_url"}


def scrape_targets(prometheus_yml: Path) -> dict[str, list[str]]:
    config = yaml.safe_load(prometheus_yml.read_text())
    return {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }


@pytest.mark.parametrize("replicas", [1, 2])
def test_the_generated_prometheus_config_passes_promtool_and_scrapes_every_service_locally(
    tmp_path: Path, replicas: int
) -> None:
    files = generate(tmp_path, replicas)
    result = tool("promtool", "check", "config", str(files["prometheus.yml"]))
    assert result.returncode == 0, result.stdout + result.stderr
    # Every rule of deploy/prometheus/alerts.yml (nine before capture added AuthorizationsExpiringSoon and refunds
    # RefundsFailing and RefundsStuckPending).
    rules = sum(len(group["rules"]) for group in yaml.safe_load(RULES.read_text())["groups"])
    assert rules == 12 and f"{rules} rules found" in result.stdout, result.stdout

    targets = scrape_targets(files["prometheus.yml"])
    settings = Stack.of(_env_file=None)
    for name in SERVICE_NAMES:
        service = SERVICES_BY_NAME[name]
        port = settings.port(name)
        count = replicas if service.replicated else 1
        assert targets[name] == [f"localhost:{port + REPLICA_PORT_STEP * k}" for k in range(count)], name
    assert targets["prometheus"] == ["localhost:9090"] and targets["alertmanager"] == ["localhost:9093"]
    everything = [t for job in targets.values() for t in job]
    assert all(t.startswith("localhost:") for t in everything), everything


def test_the_ports_follow_the_settings_of_make_run(tmp_path: Path) -> None:
    settings = Stack.of(_env_file=None, intake_port=18080, storefront_port=18000)
    targets = scrape_targets(generate(tmp_path, settings=settings)["prometheus.yml"])
    assert targets["intake_api"] == ["localhost:18080"] and targets["storefront"] == ["localhost:18000"]


def test_the_rules_and_the_runbooks_resolve_to_files_of_this_checkout(tmp_path: Path) -> None:
    config = yaml.safe_load(generate(tmp_path)["prometheus.yml"].read_text())
    assert config["rule_files"] == [str(RULES)]
    base = config["global"]["external_labels"]["runbook_base_url"]
    runbooks = Path(urlsplit(base).path)
    assert base.startswith("file:///") and runbooks.is_dir()
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    for alert in alerts:
        assert (runbooks / f"{alert}.md").is_file(), alert


def test_the_generated_alertmanager_config_passes_amtool_and_keeps_the_slack_url_in_a_private_file(
    tmp_path: Path,
) -> None:
    files = generate(tmp_path)
    result = tool("amtool", "check-config", str(files["alertmanager.yml"]))
    assert result.returncode == 0, result.stdout + result.stderr
    config_text = files["alertmanager.yml"].read_text()
    assert SLACK_URL not in config_text
    assert yaml.safe_load(config_text)["global"]["slack_api_url_file"] == str(files["slack_webhook_url"])
    assert files["slack_webhook_url"].read_text() == SLACK_URL
    assert stat.S_IMODE(files["slack_webhook_url"].stat().st_mode) == 0o600


def test_the_procfile_runs_debians_programs_on_localhost_with_data_in_the_directory(tmp_path: Path) -> None:
    lines = dict(line.split(": ", 1) for line in generate(tmp_path)["Procfile"].read_text().splitlines())
    assert lines["prometheus"].startswith("/usr/bin/prometheus ")
    assert "--web.listen-address=localhost:9090" in lines["prometheus"]
    assert f"--storage.tsdb.path={tmp_path / 'prometheus-data'}" in lines["prometheus"]
    assert lines["alertmanager"].startswith("/usr/bin/prometheus-alertmanager ")
    assert "--web.listen-address=localhost:9093" in lines["alertmanager"]
