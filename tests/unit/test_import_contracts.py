"""The import contracts `make lint` runs (pyproject.toml, [tool.importlinter]) cover every service there is."""

from __future__ import annotations

import tomllib

from shared.config import SERVICE_NAMES
from tests.support.processes import ROOT


def test_the_independence_contract_names_every_service() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (independence,) = [c for c in config["contracts"] if c["type"] == "independence"]
    assert sorted(independence["modules"]) == sorted(f"services.{name}" for name in SERVICE_NAMES)
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    assert layers["layers"] == ["tools", "services", "shared"]
