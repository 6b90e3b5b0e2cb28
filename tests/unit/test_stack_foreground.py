"""`make run` exits 0 after a stop honcho handled (issue 13 §3), and passes any other failure on."""

from __future__ import annotations

import honcho.command
import pytest

from tools.stack import run_foreground


@pytest.mark.parametrize(("honcho_exit", "expected"), [(130, 0), (143, 0), (0, 0), (1, 1), (2, 2)])
def test_a_handled_ctrl_c_or_sigterm_is_success_and_other_codes_pass_through(
    monkeypatch: pytest.MonkeyPatch, honcho_exit: int, expected: int
) -> None:
    seen: list[list[str]] = []

    def fake_honcho(argv: list[str]) -> None:
        seen.append(argv)
        raise SystemExit(honcho_exit)

    monkeypatch.setattr(honcho.command, "main", fake_honcho)
    assert run_foreground(".venv/Procfile.run", "/repo") == expected
    assert seen == [["start", "--no-colour", "-f", ".venv/Procfile.run", "-d", "/repo"]]
