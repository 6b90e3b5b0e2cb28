"""Writes deploy/kubernetes/{local,production}/: the manifests a platform team applies, from one description.

    .venv/bin/python deploy/kubernetes/render.py          # rewrite the manifests
    .venv/bin/python deploy/kubernetes/render.py --check  # exit 1 if a checked-in manifest is stale

Plain manifests, generated, rather than a kustomize base and overlays: the two environments differ in a dozen
values (replicas, sizes, provider, the demo services), which are easier to read side by side in WORKLOADS below
than as patches, and a generated file can be validated as it will be applied (tests/unit/test_kubernetes.py),
with no kustomize binary. Each directory still has a kustomization.yaml, so `kubectl apply -k` works and a
team can lay its own overlay over either. The service list comes from shared/config.py (SERVICES) and the
alert rules from deploy/prometheus/alerts.yml: neither is written twice.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.config import SERVICES_BY_NAME  # noqa: E402
from tools.settings_reference import settings_classes  # noqa: E402

HERE = Path(__file__).resolve().parent
ENVIRONMENTS = ("local", "production")
NAMESPACE = "paystream"
PART_OF = "paystream"
# The names the operators give what they create: CloudNativePG's `<cluster>-app` secret holds `uri`;
# the RabbitMQ Cluster Operator's `<cluster>-default-user` holds `username` and `password`.
DATABASE_CLUSTER = "paystream-db"
BROKER_CLUSTER = "paystream-rabbitmq"
DATABASE_SECRET = f"{DATABASE_CLUSTER}-app"
BROKER_SECRET = f"{BROKER_CLUSTER}-default-user"
PRE_STOP_SECONDS = 5  # the endpoints controller takes a pod out of its Services before it is told to stop
GRACE_SECONDS = 30  # > PRE_STOP_SECONDS + DRAIN_SECONDS: SIGKILL never cuts a drain short
IMAGE = {"local": "paystream:dev", "production": "ghcr.io/your-org/paystream:0.1.0"}


@dataclass(frozen=True)
class Size:
    """Requests and limits, from `make bench`: ~10 ms CPU per payment across the services, peak RSS ≤ 150 MiB."""

    cpu_request: str
    cpu_limit: str
    memory_request: str = "128Mi"
    memory_limit: str = "256Mi"


@dataclass(frozen=True)
class Workload:
    """One service as a Deployment: what it needs and how it scales, per environment."""

    service: str
    replicas: dict[str, int]  # environment → replicas (the autoscaler's minimum where it scales)
    max_replicas: dict[str, int] = field(default_factory=lambda: {"local": 3, "production": 12})
    port: int | None = None  # None: the default of its port setting (shared/config.py)
    database: bool = False
    broker: bool = False
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)  # env var → (Secret, key)
    env: dict[str, dict[str, str]] = field(default_factory=dict)  # environment → extra plain variables
    scale_on: str | None = None  # "cpu" (HPA) or "queue" (KEDA, on the consumer group's queue)
    size: Size = Size("100m", "500m")
    environments: tuple[str, ...] = ENVIRONMENTS


INTAKE_KEYS = {"INTAKE_API_KEYS": ("paystream-intake", "api-keys")}
WORKLOADS = (
    Workload(
        "intake_api",
        {"local": 2, "production": 3},
        database=True,
        broker=True,
        secrets=INTAKE_KEYS,
        scale_on="cpu",
        size=Size("250m", "1"),
    ),
    Workload(
        "gateway_worker",
        {"local": 2, "production": 2},
        broker=True,
        secrets={"STRIPE_API_KEY": ("paystream-stripe", "api-key")},
        env={"local": {}, "production": {}},
        scale_on="queue",
    ),
    Workload(
        "webhook_receiver",
        {"local": 2, "production": 2},
        broker=True,
        secrets={
            "SANDBOX_WEBHOOK_SECRET": ("paystream-webhooks", "sandbox"),
            "STRIPE_WEBHOOK_SECRET": ("paystream-webhooks", "stripe"),
        },
        scale_on="cpu",
    ),
    Workload(
        "ledger",
        {"local": 2, "production": 2},
        database=True,
        broker=True,
        scale_on="queue",
        size=Size("250m", "1"),
    ),
    Workload("notifier", {"local": 2, "production": 2}, database=True, broker=True),
    # The merchant's dashboard: a client of the intake API only (no database, no broker).
    Workload(
        "console",
        {"local": 1, "production": 2},
        secrets={"CONSOLE_SESSION_KEY": ("paystream-console", "session-key")},
        env={"local": {"CONSOLE_PUBLIC_URL": "http://localhost:8070"}, "production": {}},
    ),
    # The demo: a provider stand-in and a shop, for a local cluster only.
    Workload(
        "sandbox_gateway",
        {"local": 1},
        secrets={"SANDBOX_WEBHOOK_SECRET": ("paystream-webhooks", "sandbox")},
        env={"local": {"SANDBOX_HOST": "0.0.0.0", "SANDBOX_PUBLIC_URL": "http://localhost:8090"}},
        environments=("local",),
    ),
    Workload(
        "storefront",
        {"local": 2},
        secrets={"STOREFRONT_API_KEY": ("paystream-storefront", "api-key")},
        env={"local": {"STOREFRONT_PUBLIC_URL": "http://localhost:8000"}},
        environments=("local",),
    ),
)
CONFIG = {  # environment → the ConfigMap every service reads (envFrom)
    "local": {
        "BROKER_NAMESPACE": "paystream",
        "PAYMENT_PROVIDER": "sandbox",
        "SANDBOX_URL": "http://sandbox-gateway:8090",
        "SANDBOX_WEBHOOK_URL": "http://webhook-receiver:8081/webhooks/sandbox",
        "INTAKE_URL": "http://intake-api:8080",
        "HTTP_HOST": "0.0.0.0",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
    },
    "production": {
        "BROKER_NAMESPACE": "paystream",
        "PAYMENT_PROVIDER": "stripe",
        "HTTP_HOST": "0.0.0.0",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
    },
}
BROKER_SIZE = {"local": ("250m", "1", "512Mi", "1Gi", "2Gi"), "production": ("1", "2", "2Gi", "2Gi", "50Gi")}
DATABASE_SIZE = {"local": ("250m", "1", "256Mi", "1Gi", "2Gi"), "production": ("1", "2", "2Gi", "4Gi", "100Gi")}


def dns_name(service: str) -> str:
    return service.replace("_", "-")


def port_of(workload: Workload) -> int:
    if workload.port is not None:
        return workload.port
    settings = dict(settings_classes())[workload.service]
    return int(settings.model_fields[SERVICES_BY_NAME[workload.service].port_setting].default)


def labels(workload: Workload) -> dict[str, str]:
    return {"app.kubernetes.io/name": dns_name(workload.service), "app.kubernetes.io/part-of": PART_OF}


def _env(workload: Workload, environment: str) -> list[dict[str, Any]]:
    def secret(name: str, key: str) -> dict[str, Any]:
        return {"valueFrom": {"secretKeyRef": {"name": name, "key": key}}}

    env: list[dict[str, Any]] = []
    if workload.database:
        env.append({"name": "DATABASE_URL", **secret(DATABASE_SECRET, "uri")})
    if workload.broker:
        # The operator's secret holds the parts; Kubernetes composes AMQP_URL from them ($(VAR) expansion).
        env.append({"name": "RABBITMQ_USERNAME", **secret(BROKER_SECRET, "username")})
        env.append({"name": "RABBITMQ_PASSWORD", **secret(BROKER_SECRET, "password")})
        env.append(
            {
                "name": "AMQP_URL",
                "value": f"amqp://$(RABBITMQ_USERNAME):$(RABBITMQ_PASSWORD)@{BROKER_CLUSTER}.{NAMESPACE}.svc:5672/",
            }
        )
    for variable, (name, key) in workload.secrets.items():
        if variable.startswith("STRIPE_") and CONFIG[environment]["PAYMENT_PROVIDER"] != "stripe":
            continue
        env.append({"name": variable, **secret(name, key)})
    for variable, value in workload.env.get(environment, {}).items():
        env.append({"name": variable, "value": value})
    return env


def deployment(workload: Workload, environment: str) -> dict[str, Any]:
    name = dns_name(workload.service)
    probe = {"httpGet": {"port": "http"}, "periodSeconds": 10, "timeoutSeconds": 3}
    container = {
        "name": name,
        "image": IMAGE[environment],
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", f"services.{workload.service}"],
        "ports": [{"name": "http", "containerPort": port_of(workload), "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": "paystream-config"}}],
        "env": _env(workload, environment),
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "http"}, "failureThreshold": 2},
        "livenessProbe": {
            **probe,
            "httpGet": {"path": "/healthz", "port": "http"},
            "initialDelaySeconds": 10,
            "failureThreshold": 6,
        },
        "startupProbe": {**probe, "httpGet": {"path": "/healthz", "port": "http"}, "failureThreshold": 30},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "resources": _resources(
            workload.size.cpu_request, workload.size.cpu_limit, workload.size.memory_request, workload.size.memory_limit
        ),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    spec: dict[str, Any] = {
        "selector": {"matchLabels": labels(workload)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {"labels": labels(workload)},
            "spec": {
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": GRACE_SECONDS,
                "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 1,
                        "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": labels(workload)},
                    }
                ],
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    }
    if workload.scale_on is None:  # an autoscaler owns the count of the others
        spec = {"replicas": workload.replicas[environment], **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, workload), "spec": spec}


def _meta(name: str, workload: Workload | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if workload is not None:
        meta["labels"] = labels(workload)
    return meta


def service(workload: Workload) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(dns_name(workload.service), workload),
        "spec": {
            "selector": labels(workload),
            "ports": [{"name": "http", "port": port_of(workload), "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(workload: Workload) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(dns_name(workload.service), workload),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(workload)}},
    }


def autoscaler(workload: Workload, environment: str) -> dict[str, Any]:
    name = dns_name(workload.service)
    low, high = workload.replicas[environment], workload.max_replicas[environment]
    if workload.scale_on == "cpu":
        return {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": _meta(name, workload),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": low,
                "maxReplicas": high,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                    }
                ],
            },
        }
    # KEDA: scale on the depth of the consumer group's queue (shared/broker.py names it <namespace>.<group>).
    queue = f"{CONFIG[environment]['BROKER_NAMESPACE']}.{workload.service}"
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(name, workload),
        "spec": {
            "scaleTargetRef": {"name": name},
            "minReplicaCount": low,
            "maxReplicaCount": high,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "triggers": [
                {
                    "type": "rabbitmq",
                    "metadata": {
                        "protocol": "amqp",
                        "host": f"amqp://{BROKER_CLUSTER}.{NAMESPACE}.svc:5672/",
                        "queueName": queue,
                        "mode": "QueueLength",
                        "value": "200",  # ~1 s of a replica's work at the rates make bench measures
                    },
                    "authenticationRef": {"name": "paystream-rabbitmq"},
                }
            ],
        },
    }


def trigger_authentication() -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "paystream-rabbitmq"},
        "spec": {
            "secretTargetRef": [
                {"parameter": "username", "name": BROKER_SECRET, "key": "username"},
                {"parameter": "password", "name": BROKER_SECRET, "key": "password"},
            ]
        },
    }


def config_map(environment: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "paystream-config"},
        "data": dict(CONFIG[environment]),
    }


def _resources(cpu: str, cpu_limit: str, memory: str, memory_limit: str) -> dict[str, Any]:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}}


def rabbitmq_cluster(environment: str) -> dict[str, Any]:
    *size, storage = BROKER_SIZE[environment]
    return {
        "apiVersion": "rabbitmq.com/v1beta1",
        "kind": "RabbitmqCluster",
        "metadata": {"name": BROKER_CLUSTER},
        "spec": {
            "replicas": 3,  # quorum queues keep a majority (2 of 3) through the loss of any one node
            "resources": _resources(*size),
            "persistence": {"storage": storage},
            "rabbitmq": {
                "additionalConfig": "cluster_partition_handling = pause_minority\n"
                "quorum_queue.initial_cluster_size = 3\n"
            },
        },
    }


def postgres_cluster(environment: str) -> dict[str, Any]:
    *size, storage = DATABASE_SIZE[environment]
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": DATABASE_CLUSTER},
        "spec": {
            "instances": 3,
            "primaryUpdateStrategy": "unsupervised",
            "postgresql": {
                "parameters": {"max_connections": "300"},
                # A commit is acknowledged once a standby has it too: a primary's loss loses no accepted payment.
                "synchronous": {"method": "any", "number": 1},
            },
            # The owner may create roles: the migration job makes each service's own role (paystream_<service>,
            # with the owner's password) and hands it its schema (docs/explanation/ownership.md).
            "bootstrap": {
                "initdb": {
                    "database": "paystream",
                    "owner": "paystream",
                    "postInitApplicationSQL": ["ALTER ROLE paystream CREATEROLE"],
                }
            },
            "storage": {"size": storage},
            "resources": _resources(*size),
            "monitoring": {"enablePodMonitor": True},
        },
    }


def migration_job(environment: str) -> dict[str, Any]:
    migrate = Workload("intake_api", dict.fromkeys(ENVIRONMENTS, 1), database=True, broker=True)
    template = deployment(migrate, environment)["spec"]["template"]
    container = template["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe", "lifecycle", "ports"):
        container.pop(probe)
    container.update(name="migrate", command=["python", "-m", "tools.stack", "prepare"])
    template["spec"].pop("topologySpreadConstraints")
    template["spec"]["restartPolicy"] = "Never"
    template["metadata"] = {"labels": {"app.kubernetes.io/name": "migrate", "app.kubernetes.io/part-of": PART_OF}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "paystream-migrate",
            # Argo CD and Helm-style hooks run it before the rollout; with kubectl, apply it first (README).
            "annotations": {
                "argocd.argoproj.io/hook": "PreSync",
                "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation",
            },
        },
        "spec": {"backoffLimit": 6, "ttlSecondsAfterFinished": 86400, "template": template},
    }


def service_monitor() -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "paystream", "labels": {"app.kubernetes.io/part-of": PART_OF}},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/part-of": PART_OF}},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }


def prometheus_rule() -> dict[str, Any]:
    """The alert rules of deploy/prometheus/alerts.yml, as they are, in a PrometheusRule."""
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "paystream", "labels": {"app.kubernetes.io/part-of": PART_OF}},
        "spec": {"groups": rules["groups"]},
    }


def namespace() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}


HEADER = (
    "# Generated by deploy/kubernetes/render.py from shared/config.py and deploy/prometheus/alerts.yml: do not edit.\n"
)


def _documents(*docs: dict[str, Any]) -> str:
    return HEADER + "".join("---\n" + yaml.safe_dump(d, sort_keys=False, width=120) for d in docs)


def render(environment: str) -> dict[str, str]:
    """The files of `environment`'s directory: name → text."""
    files = {
        "namespace.yaml": _documents(namespace()),
        "config.yaml": _documents(config_map(environment)),
        "rabbitmq.yaml": _documents(rabbitmq_cluster(environment), trigger_authentication()),
        "postgres.yaml": _documents(postgres_cluster(environment)),
        "monitoring.yaml": _documents(service_monitor(), prometheus_rule()),
        "migrate-job.yaml": _documents(migration_job(environment)),
    }
    for workload in WORKLOADS:
        if environment not in workload.environments:
            continue
        docs = [deployment(workload, environment), service(workload)]
        if max(workload.replicas[environment], workload.max_replicas[environment] if workload.scale_on else 0) > 1:
            docs.append(disruption_budget(workload))
        if workload.scale_on is not None:
            docs.append(autoscaler(workload, environment))
        files[f"{dns_name(workload.service)}.yaml"] = _documents(*docs)
    resources = [name for name in files if name != "migrate-job.yaml"]  # a Job is applied before, not with
    files["kustomization.yaml"] = HEADER + yaml.safe_dump(
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "namespace": NAMESPACE,
            "resources": resources,
        },
        sort_keys=False,
    )
    return files


def main() -> None:
    parser = argparse.ArgumentParser(prog="deploy/kubernetes/render.py")
    parser.add_argument("--check", action="store_true", help="exit 1 if a checked-in manifest is stale")
    args = parser.parse_args()
    stale = []
    for environment in ENVIRONMENTS:
        directory = HERE / environment
        directory.mkdir(exist_ok=True)
        wanted = render(environment)
        for name, text in wanted.items():
            path = directory / name
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
                if not args.check:
                    path.write_text(text)
        for path in directory.glob("*.yaml"):
            if path.name not in wanted:
                stale.append(str(path.relative_to(ROOT)))
                if not args.check:
                    path.unlink()
    if args.check and stale:
        sys.stderr.write("stale manifests (run deploy/kubernetes/render.py): " + ", ".join(stale) + "\n")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
