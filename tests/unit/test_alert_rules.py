"""The monitoring config is code: Prometheus rules and config, their unit tests, and the Grafana dashboard.

promtool comes from Debian's `prometheus` package; without it these tests fail (they never skip), since an
untested alert is an alert that silently never fires.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401  (registers every Paystream metric in REGISTRY)

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "paystream.json"
RUNBOOKS = ROOT / "docs" / "runbooks"
# The base URL is a deploy-time setting: the external label of prometheus.yml (see test_runbook_links.py).
RUNBOOK_BASE = "{{ $externalLabels.runbook_base_url }}/"

# Words of PromQL that look like metric names but are not.
_PROMQL_KEYWORDS = set("by without on ignoring group_left group_right and or unless bool offset inf nan".split())
# Grafana's interval variables, replaced by a duration so the expression is plain PromQL.
_GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promtool")
    if executable is None:
        pytest.fail(
            "promtool is not on PATH: install Debian's `prometheus` package "
            "(apt-get install -y prometheus) to check and test the alerting rules"
        )
    return subprocess.run([executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def assert_succeeded(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    )


def exported_metric_names() -> set[str]:
    """Every series name a Paystream service can expose, as Prometheus sees it, plus `up`."""
    names = {"up"}
    for family in REGISTRY.collect():
        if not family.name.startswith("paystream_"):
            continue
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def metric_names_in(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, labels or keywords."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)\s*(\()?", expr):
        word, is_call = match.group(1), match.group(2)
        if not is_call and word.lower() not in _PROMQL_KEYWORDS:
            names.add(word)
    return names


def dashboard_prometheus_targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    targets = []
    for panel in panels:
        for target in panel.get("targets", []):
            datasource = target.get("datasource") or panel.get("datasource") or {}
            if datasource.get("type") == "prometheus":
                targets.append((panel["title"], target["expr"]))
    return targets


def alerting_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_alerting_rules_are_valid() -> None:
    assert_succeeded(promtool("check", "rules", str(ALERTS.relative_to(ROOT))))


def test_prometheus_config_is_valid() -> None:
    assert_succeeded(promtool("check", "config", str((PROMETHEUS_DIR / "prometheus.yml").relative_to(ROOT))))


def test_alerting_rules_pass_their_unit_tests() -> None:
    assert_succeeded(promtool("test", "rules", str((PROMETHEUS_DIR / "tests" / "alerts_test.yml").relative_to(ROOT))))


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "tests" / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for name in {rule["alert"] for rule in alerting_rules()}:
        own = [case for case in cases if case["alertname"] == name]
        assert any(case.get("exp_alerts") for case in own), f"no test case where {name} fires"
        assert any(not case.get("exp_alerts") for case in own), f"no test case where {name} stays silent"


def test_every_alert_has_severity_summary_description_and_a_runbook_that_exists() -> None:
    rules = alerting_rules()
    assert rules
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert annotations.get("summary") and annotations.get("description"), name
        assert annotations["runbook_url"] == f"{RUNBOOK_BASE}{name}.md", name
        assert (RUNBOOKS / f"{name}.md").is_file(), f"docs/runbooks/{name}.md is missing"


def test_alerting_rules_select_only_exported_metrics() -> None:
    known = exported_metric_names()
    for rule in alerting_rules():
        selected = metric_names_in(rule["expr"])
        assert selected, f"found no metric in {rule['alert']}: {rule['expr']}"
        assert selected <= known, f"{rule['alert']} selects unknown metrics {sorted(selected - known)}"


def test_dashboard_queries_select_only_exported_metrics() -> None:
    known = exported_metric_names()
    targets = dashboard_prometheus_targets()
    assert targets, "the dashboard has no Prometheus query"
    for title, expr in targets:
        selected = metric_names_in(expr)
        assert selected, f"panel {title!r}: found no metric in {expr}"
        assert selected <= known, f"panel {title!r} selects unknown metrics {sorted(selected - known)}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for index, (_, expr) in enumerate(dashboard_prometheus_targets()):
        for variable, duration in _GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, duration)
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    rule_file = tmp_path / "dashboard_queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert_succeeded(promtool("check", "rules", str(rule_file)))


def test_dashboard_panels_have_unique_ids_and_use_the_provisioned_datasources() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    datasources = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text()
    )["datasources"]
    uids = {source["uid"] for source in datasources}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]


def test_metric_name_parser_sees_through_functions_labels_and_ranges() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{status=~"5..", x="or"}[5m] offset 1h)))'
        " / on (job) group_left sum without (instance) (b_total) > bool 1e3 and up"
    )
    assert metric_names_in(expr) == {"a_bucket", "b_total", "up"}
