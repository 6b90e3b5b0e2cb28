"""The console's vendored htmx is the file of the npm package package-lock.json pins, byte for byte."""

from __future__ import annotations

import json

from tests.support.accessibility import ROOT


def test_the_vendored_htmx_is_the_locked_npm_package_file() -> None:
    installed = ROOT / "node_modules" / "htmx.org"
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert installed.is_dir(), "node_modules is missing: run `npm ci` (make test does)"
    assert (
        json.loads((installed / "package.json").read_text())["version"]
        == lock["packages"]["node_modules/htmx.org"]["version"]
    )
    vendored = ROOT / "services" / "console" / "static" / "vendor" / "htmx.min.js"
    assert vendored.read_bytes() == (installed / "dist" / "htmx.min.js").read_bytes(), "run `make console-assets`"
