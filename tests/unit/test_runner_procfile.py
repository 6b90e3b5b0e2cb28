"""The Procfile `make run` runs (tools/runner.py reads what tools/stack.py writes): one entry per process, the
replicas' port overrides as their environment. The runner itself runs real services in tests/e2e/test_make_run.py."""

from __future__ import annotations

import pytest

from tools.runner import Entry, parse_procfile
from tools.stack import Stack, procfile


def test_the_procfile_of_two_replicas_reads_back_as_its_processes() -> None:
    entries = parse_procfile(procfile(Stack.of(), replicas=2))

    assert Entry("ledger", {}, ["python", "-m", "services.ledger"]) in entries
    assert Entry("ledger-2", {"LEDGER_PORT": "9082"}, ["python", "-m", "services.ledger"]) in entries
    assert [e.name for e in entries].count("sandbox_gateway") == 1
    assert "sandbox_gateway-2" not in [e.name for e in entries]


def test_comments_and_blank_lines_are_skipped_and_a_bad_line_is_refused() -> None:
    assert parse_procfile("# demo\n\nweb: A=1 B='two words' python -m x --flag\n") == [
        Entry("web", {"A": "1", "B": "two words"}, ["python", "-m", "x", "--flag"])
    ]
    with pytest.raises(ValueError, match="not a Procfile line"):
        parse_procfile("no colon here\n")
