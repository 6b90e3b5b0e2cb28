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
    floors,
    machine_speed,
    scaled_targets,
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
