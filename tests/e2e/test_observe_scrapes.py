"""The Prometheus of `make observe` (Debian's package, the generated config) scrapes every running service
(issue 13, item 7). It runs on a free port against the test stack's ports, scraping every second."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from shared.config import SERVICE_NAMES, SERVICES
from tests.support.processes import ProcessExited, Stack, eventually, free_port
from tools import stack as tools_stack
from tools.observe import PROMETHEUS_CONFIG, local_prometheus_config


async def test_prometheus_with_the_observe_config_finds_every_service_up(stack: Stack, tmp_path: Path) -> None:
    executable = shutil.which("prometheus")
    if executable is None:
        pytest.fail("prometheus is not on PATH: apt-get install -y prometheus")
    ports: dict[str, Any] = {
        s.port_setting: int(stack.env[s.port_variable]) for s in SERVICES if s.port_variable in stack.env
    }
    settings = tools_stack.Stack.of(_env_file=None, **ports)
    config = local_prometheus_config(yaml.safe_load(PROMETHEUS_CONFIG.read_text()), settings, scrape_interval="1s")
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        executable,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as http:

            async def every_service_up() -> dict[str, Any] | None:
                if process.returncode is not None:
                    raise ProcessExited((tmp_path / "prometheus.log").read_text())
                async with http.get(f"http://127.0.0.1:{port}/api/v1/targets") as response:
                    targets = (await response.json())["data"]["activeTargets"]
                health = {t["labels"]["job"]: t["health"] for t in targets}
                return health if all(health.get(name) == "up" for name in SERVICE_NAMES) else None

            health = await eventually(every_service_up, timeout=30, interval=0.5, what="every service scraped up")
        assert set(SERVICE_NAMES) <= set(health)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
        log.close()
