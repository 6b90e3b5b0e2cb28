"""The list of services is written once (shared.config.SERVICES); everything that names them derives from it."""

from __future__ import annotations

from shared.config import SERVICE_NAMES, SERVICES
from tests.support.processes import PORT_VARIABLES, ROOT
from tools.settings_reference import settings_classes
from tools.stack import Stack, procfile, replica_ports


def test_every_service_package_is_listed_once() -> None:
    packages = {p.parent.name for p in (ROOT / "services").glob("*/__main__.py")}
    assert sorted(packages) == sorted(SERVICE_NAMES)
    assert len(set(SERVICE_NAMES)) == len(SERVICE_NAMES)


def test_every_port_variable_is_a_setting_with_its_own_default() -> None:
    classes = dict(settings_classes())
    assert all(s.port_setting in classes[s.name].model_fields for s in SERVICES)
    defaults = [classes[s.name].model_fields[s.port_setting].default for s in SERVICES]
    assert len(set(defaults)) == len(defaults)
    assert PORT_VARIABLES == {s.name: s.port_variable for s in SERVICES}


def test_the_checked_in_procfile_is_the_generated_one_for_one_replica() -> None:
    assert (ROOT / "Procfile").read_text() == procfile(Stack.of(), 1)


def test_replicas_get_ports_a_thousand_apart_and_the_sandbox_stays_single() -> None:
    settings = Stack.of(intake_port=8080, sandbox_port=8090)
    text = procfile(settings, 3)
    assert "intake_api: python -m services.intake_api" in text
    assert "intake_api-2: INTAKE_PORT=9080 python -m services.intake_api" in text
    assert "intake_api-3: INTAKE_PORT=10080 python -m services.intake_api" in text
    assert text.count("services.sandbox_gateway") == 1
    assert replica_ports(settings, "sandbox_gateway", 3) == [8090]
    every_port = [p for s in SERVICES for p in replica_ports(settings, s.name, 3)]
    assert len(set(every_port)) == len(every_port)
