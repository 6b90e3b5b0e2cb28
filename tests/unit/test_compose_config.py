"""docker-compose.yml and the monitoring config agree with each other and with docs/reference/commands.md,
docs/reference/configuration.md.

No Docker engine is needed: the files are read as YAML and cross-checked.
"""

from __future__ import annotations

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
def test_each_service_builds_the_project_image_and_runs_its_module(name: str) -> None:
    service = SERVICES[name]
    assert service["build"] == "."
    assert command_of(service) == ["python", "-m", f"services.{name}"]


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_each_service_reads_the_documented_environment(name: str) -> None:
    environment = SERVICES[name]["environment"]
    for variable, value in SHARED_ENVIRONMENT.items():
        assert environment.get(variable) == value, f"{name}: {variable}"
    SETTINGS_CLASSES[name].model_validate({k.lower(): v for k, v in environment.items()})


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_each_service_publishes_its_port_and_probes_its_readiness(name: str) -> None:
    service, port = SERVICES[name], PORTS[name]
    assert f"{port}:{port}" in service["ports"]
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
    assert {"5672:5672", "15672:15672"} <= set(SERVICES["rabbitmq"]["ports"])
    assert SERVICES["postgres"]["image"] == "postgres:16"
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"] == "postgres"
    assert "pg_isready" in SERVICES["postgres"]["healthcheck"]["test"]
    assert SERVICES["jaeger"]["image"].startswith("jaegertracing/all-in-one")
    assert SERVICES["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert {"4317:4317", "4318:4318", "16686:16686"} <= set(SERVICES["jaeger"]["ports"])
    assert SERVICES["prometheus"]["image"].startswith("prom/prometheus")
    assert "9090:9090" in SERVICES["prometheus"]["ports"]
    assert SERVICES["alertmanager"]["image"].startswith("prom/alertmanager")
    assert "9093:9093" in SERVICES["alertmanager"]["ports"]
    assert SERVICES["grafana"]["image"].startswith("grafana/grafana")
    assert "3000:3000" in SERVICES["grafana"]["ports"]
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


def test_dockerfile_installs_the_project_and_runs_as_a_non_root_user() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert "FROM python:3.11-slim" in lines
    assert any(line.startswith("RUN pip install .") for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
