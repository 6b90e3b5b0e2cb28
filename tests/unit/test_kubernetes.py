"""deploy/kubernetes (issue 10 §3), checked offline: fresh from its generator, valid against the Kubernetes and CRD
schemas, every variable a setting the services read, every probe a path and port the service serves, no secret
inlined, a grace period longer than the drain."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from functools import cache
from types import ModuleType
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from aiohttp import web
from pydantic import SecretStr

from services.intake_api.settings import IntakeSettings
from shared.config import SERVICES
from shared.runtime import DRAIN_SECONDS
from tests.support.processes import ROOT
from tools.settings_reference import settings_classes, variables

KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"  # the oldest release we support: preStop `sleep` is beta (on) from 1.30
ENVIRONMENTS = ("local", "production")
# Settings holding a credential, or a URL that carries one: only ever from a Secret.
SECRET_SETTINGS = {
    name
    for name, (info, _) in variables().items()
    if "SecretStr" in str(info.annotation) or name in ("DATABASE_URL", "AMQP_URL")
}
SETTINGS_CLASSES = dict(settings_classes())


def _render_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render", KUBERNETES / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("render", module)  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@cache
def documents(environment: str) -> list[dict[str, Any]]:
    docs = []
    for path in sorted((KUBERNETES / environment).glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def of_kind(environment: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in documents(environment) if d["kind"] == kind]


def containers(environment: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for doc in of_kind(environment, "Deployment") + of_kind(environment, "Job"):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            found.append((doc["metadata"]["name"], container))
    return found


def test_the_manifests_are_what_render_py_makes_of_the_service_list_and_the_alert_rules() -> None:
    render = _render_module()
    for environment in ENVIRONMENTS:
        wanted = render.render(environment)
        on_disk = {p.name: p.read_text() for p in (KUBERNETES / environment).glob("*.yaml")}
        assert on_disk == wanted, f"deploy/kubernetes/{environment} is stale: run deploy/kubernetes/render.py"


def test_the_prometheus_rule_holds_exactly_the_alerts_of_deploy_prometheus() -> None:
    source = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    for environment in ENVIRONMENTS:
        (rule,) = of_kind(environment, "PrometheusRule")
        assert rule["spec"]["groups"] == source["groups"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_manifest_validates_against_its_kubernetes_or_crd_schema(environment: str) -> None:
    schemas = {p.stem: json.loads(p.read_text()) for p in (KUBERNETES / "schemas").glob("*.json")}
    for doc in documents(environment):
        group_version = doc["apiVersion"].replace("/", "-")
        crd = schemas.get(f"{group_version}-{doc['kind']}")
        if crd is not None:
            jsonschema.validate(doc, crd)
        else:  # a core kind, or an error: kubernetes-validate knows no such resource
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_each_kustomization_lists_every_manifest_but_the_migration_job(environment: str) -> None:
    kustomization = yaml.safe_load((KUBERNETES / environment / "kustomization.yaml").read_text())
    files = {p.name for p in (KUBERNETES / environment).glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files - {"migrate-job.yaml"}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_variable_a_manifest_sets_is_a_setting_the_services_read(environment: str) -> None:
    settings = set(variables())
    (config,) = of_kind(environment, "ConfigMap")
    assert set(config["data"]) <= settings, set(config["data"]) - settings
    for name, container in containers(environment):
        env = container["env"]
        composed = " ".join(e.get("value", "") for e in env)
        for variable in env:
            # A part only composed into another value ($(VAR) expansion), from a Secret, is no setting itself.
            helper = f"$({variable['name']})" in composed and "secretKeyRef" in variable.get("valueFrom", {})
            assert variable["name"] in settings or helper, f"{name}: {variable['name']} is read by no service"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_no_secret_is_inlined(environment: str) -> None:
    assert not of_kind(environment, "Secret")
    (config,) = of_kind(environment, "ConfigMap")
    assert not set(config["data"]) & SECRET_SETTINGS
    for name, container in containers(environment):
        for variable in container["env"]:
            if variable["name"] in SECRET_SETTINGS:
                value = variable.get("value", "")
                from_secret = "secretKeyRef" in variable.get("valueFrom", {})
                # AMQP_URL is composed from the operator's secret: its credentials are references, not text.
                assert from_secret or re.fullmatch(r"amqp://\$\(\w+\):\$\(\w+\)@[^$]+", value), (name, variable)


def _routes(service: str) -> set[str]:
    module = importlib.import_module(f"services.{service}.app")
    app: web.Application = module.create_app(SETTINGS_CLASSES[service]())  # builds routes; nothing connects yet
    return {r.canonical for r in app.router.resources()}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_probe_names_a_path_and_port_the_service_serves(environment: str) -> None:
    by_name = {s.name.replace("_", "-"): s for s in SERVICES}
    checked = 0
    for doc in of_kind(environment, "Deployment"):
        service = by_name[doc["metadata"]["name"]]  # every Deployment is a service of shared/config.py
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": SETTINGS_CLASSES[service.name].model_fields[service.port_setting].default}
        routes = _routes(service.name)
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            check = container[probe]["httpGet"]
            assert check["path"] in routes and check["port"] in ports, (service.name, probe, check)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert "/metrics" in routes
        checked += 1
    assert checked == len(of_kind(environment, "Deployment")) >= 5


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_service_port_and_scrape_port_leads_to_a_container_port(environment: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(environment, "Deployment")}
    for svc in of_kind(environment, "Service"):
        target = deployments[svc["metadata"]["name"]]
        assert svc["spec"]["selector"] == target["spec"]["template"]["metadata"]["labels"]
        (container,) = target["spec"]["template"]["spec"]["containers"]
        names = {p["name"] for p in container["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= names
    (monitor,) = of_kind(environment, "ServiceMonitor")
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"http"}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_pods_run_as_non_root_read_only_sized_and_outlast_their_drain(environment: str) -> None:
    for doc in of_kind(environment, "Deployment"):
        pod = doc["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
        assert security["allowPrivilegeEscalation"] is False
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] > pre_stop + DRAIN_SECONDS


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_scaling_budgets_and_the_backing_clusters(environment: str) -> None:
    hpa = {d["spec"]["scaleTargetRef"]["name"] for d in of_kind(environment, "HorizontalPodAutoscaler")}
    keda = {d["spec"]["scaleTargetRef"]["name"]: d for d in of_kind(environment, "ScaledObject")}
    assert hpa == {"intake-api", "webhook-receiver"}
    assert set(keda) == {"gateway-worker", "ledger"}
    for name, scaled in keda.items():
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq" and trigger["metadata"]["queueName"].endswith("." + name.replace("-", "_"))
    budgets = {d["metadata"]["name"] for d in of_kind(environment, "PodDisruptionBudget")}
    several = {d["metadata"]["name"] for d in of_kind(environment, "Deployment") if d["spec"].get("replicas", 2) > 1}
    assert several <= budgets
    (rabbit,) = of_kind(environment, "RabbitmqCluster")
    (postgres,) = of_kind(environment, "Cluster")
    assert rabbit["spec"]["replicas"] == 3 and postgres["spec"]["instances"] == 3
    assert postgres["spec"]["postgresql"]["synchronous"]["number"] >= 1
    (job,) = of_kind(environment, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "-m", "tools.stack", "prepare"]


def test_every_service_has_a_deployment_locally_and_every_one_but_the_demo_in_production() -> None:
    local = {d["metadata"]["name"] for d in of_kind("local", "Deployment")}
    production = {d["metadata"]["name"] for d in of_kind("production", "Deployment")}
    names = {s.name.replace("_", "-") for s in SERVICES}
    assert names <= local
    assert names - {"sandbox-gateway", "storefront"} <= production
    assert not production & {"sandbox-gateway", "storefront"}


def test_secret_settings_are_known() -> None:
    assert {"INTAKE_API_KEYS", "DATABASE_URL", "AMQP_URL", "STRIPE_API_KEY"} <= SECRET_SETTINGS
    assert isinstance(IntakeSettings().intake_api_keys[0][1], SecretStr)
