"""AMQP_URL naming several cluster nodes (docs/reference/configuration.md): parsing, and the node each connection
attempt goes to."""

from __future__ import annotations

import pytest
from yarl import URL

from services.ledger.settings import LedgerSettings
from shared.broker import FailoverConnection, _node_urls
from shared.config import split_amqp_urls

A, B, C = (f"amqp://guest:s3cret@node-{n}:5672/" for n in "abc")


def test_one_url_is_one_node() -> None:
    assert split_amqp_urls(A) == (A,)


def test_comma_separated_urls_are_nodes_in_the_order_given() -> None:
    assert split_amqp_urls(f"{A}, {B} ,{C}") == (A, B, C)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (f"{A},,{B}", "entry 2 of 3 is not an amqp"),
        (f"{A},", "entry 2 of 2"),
        (f"{A},http://node-b/", "entry 2 of 2"),
        ("amqp:///", "the value is not an amqp"),
        (f"{A},{A}", "the same node twice"),
    ],
)
def test_a_bad_list_is_refused_naming_the_entry_but_never_its_password(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        split_amqp_urls(value)
    assert "s3cret" not in str(raised.value)


def test_the_settings_accept_a_list_of_nodes() -> None:
    settings = LedgerSettings(_env_file=None, amqp_url=f"{A},{B}")  # type: ignore[call-arg]
    assert split_amqp_urls(settings.amqp_url.get_secret_value()) == (A, B)


def test_each_node_carries_the_connection_name_unless_its_url_names_one() -> None:
    nodes = _node_urls(f"{A},{B}?name=mine", "ledger")
    assert [n.query["name"] for n in nodes] == ["ledger", "mine"]
    assert [n.host for n in nodes] == ["node-a", "node-b"]


async def test_each_connection_attempt_goes_to_the_next_node_round_the_list() -> None:
    connection = FailoverConnection([URL(A), URL(B), URL(C)])
    # aio-pika's Connection.connect reads `url` once per attempt: that is the sequence of nodes tried.
    tried = [connection.url.host for _ in range(4)]
    assert tried == ["node-a", "node-b", "node-c", "node-a"]
    assert connection.current_url.host == "node-a"
    # Naming the connection (logs, repr) does not move it, and never shows the password.
    assert str(connection) == str(connection) == "amqp://guest:******@node-a:5672/"


async def test_the_connection_parameters_come_from_the_first_node() -> None:
    connection = FailoverConnection([URL(A + "?reconnect_interval=0.5"), URL(B)])
    assert connection.reconnect_interval == 0.5
    assert connection.url.host == "node-a"
