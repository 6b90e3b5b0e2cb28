"""`make bench`'s calibration: this run's raw costs, the floors they set, and the CPU targets at this run's speed."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bench import (
    COMMITS,
    DELIVERED,
    POSTGRES,
    RABBITMQ,
    RAW_HTTP,
    RAW_POSTGRES,
    RAW_RABBITMQ,
    SERVED,
    floor_at_steady_rate,
    floors,
    machine_speed,
    paced_name,
    scaled_targets,
    steady_floor,
    targets,
)


def results(**raw_cpu: float) -> dict[str, Any]:
    phases = {name: {"cpu_ms_per_op": ms} for name, ms in raw_cpu.items()}
    return {
        "phases": phases,
        "counts_per_payment": {DELIVERED: 6.0, COMMITS: 2.5},
        "cpu_ms_per_payment": {
            "intake_api": 0.5,
            "gateway_worker": 0.5,
            "webhook_receiver": 0.4,
            "ledger": 0.7,
            "notifier": 0.6,
            RABBITMQ: 1.2,
            POSTGRES: 1.0,
            "sandbox_gateway": 1.0,
        },
        "intake_alone_cpu_ms_per_post": 0.4,
    }


def test_the_speed_is_this_runs_bare_request_against_the_targets_reference() -> None:
    assert machine_speed(results(**{RAW_HTTP: 0.18})) == pytest.approx(2.0)
    assert machine_speed(results()) is None  # --no-raw: nothing to judge the speed by


def test_floors_are_the_payments_messages_and_commits_at_their_raw_costs() -> None:
    found = floors(results(**{RAW_RABBITMQ: 0.15, RAW_POSTGRES: 0.1}))
    assert found == {RABBITMQ: pytest.approx(0.9), POSTGRES: pytest.approx(0.25)}
    assert floors(results(**{RAW_HTTP: 0.09})) == {}


def test_scaled_targets_multiply_each_cpu_target_by_the_speed() -> None:
    rows = {name.strip(): (met, target) for met, name, _, target in scaled_targets(results(), 2.0)}
    # our side 4.4 <= 4 x 2; path 2.1 <= 2 x 2; notifier 0.6 <= 0.5 x 2; RabbitMQ 1.2 <= 0.8 x 2; PG 1.0 <= 0.7 x 2
    assert all(met for met, _ in rows.values())
    assert rows["RabbitMQ node"][1] == "<= 0.8 x 2.00 = 1.600"
    slower = {name.strip(): met for met, name, _, _ in scaled_targets(results(), 1.0)}
    assert slower == {
        "our side CPU": False,
        "payment path services": False,
        "notifier": False,
        "RabbitMQ node": False,
        "PostgreSQL backends": False,
        "intake CPU per POST (tests.intake_cpu)": False,
    }


def steady(paced_cpu: dict[str, float]) -> dict[str, Any]:
    """A run whose steady phase (200/s) made 4 commits, 2 deliveries and 2 requests a payment, and whose raw
    phases were run again paced at those rates with the given CPU per operation."""
    found = results(**{RAW_RABBITMQ: 0.15, RAW_POSTGRES: 0.1, RAW_HTTP: 0.05})
    found["steady_rate"] = 200.0
    found["steady_counts_per_payment"] = {COMMITS: 4.0, DELIVERED: 2.0, SERVED: 2.0}
    found["steady_cpu_ms_per_payment"] = {"ledger": 4.0, RABBITMQ: 3.0, POSTGRES: 3.0}
    found["paced_raw"] = {}
    for raw_name, ms in paced_cpu.items():
        name = paced_name(raw_name, 400.0)
        found["phases"][name] = {"cpu_ms_per_op": ms, "per_second": 400.0}
        found["paced_raw"][raw_name] = name
    return found


def test_the_steady_floor_is_each_operation_at_its_paced_cost_times_its_count() -> None:
    run = steady({RAW_POSTGRES: 0.2, RAW_RABBITMQ: 0.75, RAW_HTTP: 0.2})
    assert steady_floor(run) == {
        RAW_POSTGRES: pytest.approx(0.8),
        RAW_RABBITMQ: pytest.approx(1.5),
        RAW_HTTP: pytest.approx(0.4),
    }
    lines = floor_at_steady_rate(run)
    # 2.7 ms a payment at 200/s on this machine's cores; a commit paced costs 2 x its saturated cost, a message 5 x.
    assert "2.0 x saturated" in lines[2] and "5.0 x saturated" in lines[3]
    assert lines[-1].startswith("  together 2.700 ms a payment")
    assert steady_floor(results()) == {} and floor_at_steady_rate(results()) == []


def test_the_memory_target_judges_our_services_and_leaves_the_stand_ins_beside() -> None:
    run = steady({})
    run["phases"]["paystream: steady"] = {"p99_ms": 50.0, "p50_ms": 10.0, "errors": 0}
    run["steady_phase"] = "paystream: steady"
    run["phases"]["paystream: completed end to end (autopay), saturating"] = {"per_second": 300.0}
    run["counts_per_payment"] = {}
    run["intake_cpu_ms_per_post"] = 0.3
    run["peak_rss_mib"] = {"ledger": 90.0, "notifier": 151.0, "sandbox_gateway": 400.0}
    rss = {name: (met, measured) for met, name, measured, _ in targets(run) if "RSS" in name}
    assert rss == {"peak RSS, largest of our services": (False, "151.0 MiB")}
    run["peak_rss_mib"]["notifier"] = 120.0
    rss = {name: (met, measured) for met, name, measured, _ in targets(run) if "RSS" in name}
    assert rss == {"peak RSS, largest of our services": (True, "120.0 MiB")}
