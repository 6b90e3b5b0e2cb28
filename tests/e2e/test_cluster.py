"""Paystream scaled out (issue 10): two replicas of every service on a three-node RabbitMQ cluster, paying
hundreds of payments while one broker node is stopped and started again and one replica of each service is
SIGKILLed and restarted. Afterwards nothing is lost, nothing is twice, every queue has three members.

The smaller form runs in `make test`; the full one (500 payments) is `make test-cluster`
(`pytest -m cluster_full`). Each run prints its fault timeline, its counts and the queues as rabbitmqctl lists them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from shared.config import SERVICES
from shared.db import create_pool
from tests.support.client import TERMINAL, payment_body
from tests.support.infra import Servers, create_database, drop_database, unique_name
from tests.support.link_proxy import LinkProxy
from tests.support.processes import ServiceProcess, eventually, free_port, stack_environment
from tests.support.rabbit_cluster import RabbitCluster, rabbit_cluster

# The services that run as replicas here. The storefront and the console are left out: they hold no state and talk
# only HTTP to the intake, so their replicas prove nothing the intake's do not, and the machine has two cores.
REPLICATED = tuple(s.name for s in SERVICES if s.replicated and s.name not in ("storefront", "console"))
REPLICAS = 2
# Card → (status, failure_code) the payment must end in (docs/reference/sandbox.md).
CARDS = {
    "4242424242424242": ("SUCCEEDED", None),
    "4000000000000002": ("FAILED", "card_declined"),
    "4000000000009995": ("FAILED", "insufficient_funds"),
}
API_KEY = "sk_test_demo"


@dataclass
class Timeline:
    """What happened when, in seconds since the load began: printed with the run's counts."""

    started: float = field(default_factory=time.monotonic)
    entries: list[tuple[float, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.entries.append((time.monotonic() - self.started, what))

    def __str__(self) -> str:
        return "\n".join(f"  t+{at:6.1f}s  {what}" for at, what in self.entries)


@dataclass
class Payment:
    index: int
    key: str
    card: str
    payment_id: str | None = None
    answered_by: int | None = None  # the intake replica whose 201 carried the checkout_url
    status: str | None = None


@dataclass
class Load:
    """At least `minimum` payments by `customers` concurrent customers, and on until the faults are all done."""

    minimum: int
    customers: int
    faults_done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class ScaledStack:
    cluster: RabbitCluster
    database_url: str
    namespace: str
    replicas: dict[str, list[ServiceProcess]]
    sandbox: ServiceProcess
    pool: asyncpg.Pool

    def all(self) -> list[ServiceProcess]:
        return [p for group in self.replicas.values() for p in group] + [self.sandbox]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    with rabbit_cluster(tmp_path_factory.mktemp("rabbit") / "nodes") as started:
        print(f"\nthree-node RabbitMQ cluster started and joined in {started.started_in_seconds:.1f} s")
        yield started


@pytest.fixture
async def scaled(
    servers: Servers, cluster: RabbitCluster, tmp_path: Path
) -> AsyncIterator[tuple[ScaledStack, LinkProxy]]:
    """Two replicas of each service, replica r of service i naming the nodes from (i + r) % 3 onwards."""
    database_url = await create_database(servers.database_url, migrations=())
    namespace = unique_name("pscluster")
    base = stack_environment(database_url, cluster.amqp_url(), namespace, LEDGER_RETRY_BASE_SECONDS="0.5")
    receivers = [free_port() for _ in range(REPLICAS)]
    balancer = LinkProxy("127.0.0.1", *receivers)  # the sandbox's webhooks reach either receiver
    await balancer.start()
    base["SANDBOX_WEBHOOK_URL"] = f"http://127.0.0.1:{balancer.port}/webhooks/sandbox"
    replicas: dict[str, list[ServiceProcess]] = {}
    for i, name in enumerate(REPLICATED):
        variable = next(s.port_variable for s in SERVICES if s.name == name)
        for r in range(REPLICAS):
            first = (i + r) % len(cluster.nodes)
            order = [(first + k) % len(cluster.nodes) for k in range(len(cluster.nodes))]
            port = receivers[r] if name == "webhook_receiver" else free_port()
            env = {**base, variable: str(port), "AMQP_URL": cluster.amqp_url(*order)}
            log_dir = tmp_path / f"{name}-{r + 1}"
            log_dir.mkdir()
            replicas.setdefault(name, []).append(ServiceProcess(name, env, log_dir))
    sandbox = ServiceProcess("sandbox_gateway", base, tmp_path)
    stack = None
    try:
        processes = [p for group in replicas.values() for p in group] + [sandbox]
        for process in processes:
            process.start()
        await asyncio.gather(*(p.wait_ready(timeout=90) for p in processes))
        stack = ScaledStack(cluster, database_url, namespace, replicas, sandbox, await create_pool(database_url))
        yield stack, balancer
    finally:
        for process in [p for group in replicas.values() for p in group] + [sandbox]:
            await asyncio.to_thread(process.stop)
        await balancer.stop()
        if stack is not None:
            await asyncio.wait_for(stack.pool.close(), 10)
        await drop_database(database_url)
        for node in cluster.nodes:  # the namespace's queues go with the test; the cluster serves the next one
            if not node.running:
                await asyncio.to_thread(_start_node, cluster, node.name)


def _start_node(cluster: RabbitCluster, name: str) -> None:
    node = next(n for n in cluster.nodes if n.name == name)
    node.start()
    node.wait_booted()


async def _pay_all(
    stack: ScaledStack, load: Load, payments: list[Payment], timeline: Timeline, accepted: Counter[str]
) -> None:
    """Customers pay until at least `load.minimum` payments are made and every fault has been injected."""
    intakes = stack.replicas["intake_api"]
    sandbox = stack.sandbox.url
    cards = list(CARDS)
    run = secrets.token_hex(4)

    def next_payment() -> Payment | None:
        if load.faults_done.is_set() and len(payments) >= load.minimum:
            return None
        index = len(payments)
        payments.append(Payment(index, f"cluster-{run}-{index}", cards[index % len(cards)]))
        return payments[-1]

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:

        async def create(payment: Payment) -> str | None:
            """POST until accepted, alternating replicas as a client behind a load balancer would; the checkout
            URL if the answer carried it."""
            body = payment_body(amount=1000 + payment.index, reference=f"order-{payment.index}")
            headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": payment.key, "Prefer": "wait=3"}
            for attempt in range(400):
                replica = (payment.index + attempt) % len(intakes)
                try:
                    async with http.post(f"{intakes[replica].url}/v1/payments", json=body, headers=headers) as r:
                        if r.status in (200, 201):
                            answer = await r.json()
                            payment.payment_id = answer["id"]
                            accepted["accepted"] += 1
                            if r.status == 201 and answer["checkout_url"]:
                                payment.answered_by = replica
                            return answer["checkout_url"]
                        assert r.status in (409, 503), f"{r.status}: {await r.text()}"
                        accepted[f"retried after {r.status}"] += 1
                except (aiohttp.ClientError, TimeoutError):
                    accepted["retried after a broken connection"] += 1
                await asyncio.sleep(0.25)  # a client's backoff before its retry, not a wait for an outcome
            raise AssertionError(f"payment {payment.index} was never accepted")

        async def checkout_url(payment: Payment) -> str:
            async def ready() -> str | None:
                replica = intakes[secrets.randbelow(len(intakes))]
                url = f"{replica.url}/v1/payments/{payment.payment_id}"
                async with http.get(url, headers={"Authorization": f"Bearer {API_KEY}"}) as r:
                    return (await r.json())["checkout_url"] if r.status == 200 else None

            return await eventually(ready, timeout=120, interval=0.3, what=f"checkout_url of {payment.payment_id}")

        async def pay(url: str, card: str) -> None:
            intent_id = url.rpartition("/pay/")[2]
            async with http.post(f"{sandbox}/v1/intents/{intent_id}/simulate", json={"card_number": card}) as r:
                assert r.status == 200, await r.text()

        async def customer() -> None:
            while (payment := next_payment()) is not None:
                url = await create(payment) or await checkout_url(payment)
                await pay(url, payment.card)
                accepted["paid"] += 1

        await asyncio.gather(*(customer() for _ in range(load.customers)))
    timeline.note(f"load ends: all {len(payments)} payments accepted and paid at the sandbox")


async def _inject_faults(stack: ScaledStack, load: Load, timeline: Timeline, accepted: Counter[str]) -> None:
    """Stop a node, SIGKILL and restart one replica of each service, start the node again, all under load:
    each step waits for more payments to be accepted since the last, so every one falls inside the load."""
    step = max(10, load.minimum // 10)

    async def more_accepted() -> None:
        target = accepted["accepted"] + step

        async def enough() -> bool:
            return accepted["accepted"] >= target

        await eventually(enough, timeout=300, what=f"{step} more payments accepted")

    try:
        node = stack.cluster.nodes[0]
        first_on_it = [p for p in stack.all() if p.env.get("AMQP_URL", "").startswith(node.amqp_url)]
        await more_accepted()
        timeline.note(
            f"stopping broker node {node.name} (first in AMQP_URL of {len(first_on_it)} processes), "
            f"{accepted['accepted']} accepted so far"
        )
        await asyncio.to_thread(node.stop)
        timeline.note(f"broker node {node.name} stopped")

        await more_accepted()
        victims = [group[0] for group in stack.replicas.values()]
        for victim in victims:
            victim.kill()
        timeline.note(f"SIGKILLed replica 1 of {', '.join(v.name for v in victims)}, {accepted['accepted']} accepted")
        for victim in victims:
            victim.start()
        await asyncio.gather(*(v.wait_ready(timeout=120) for v in victims))
        timeline.note("the killed replicas restarted and ready, with the node still down")

        await more_accepted()
        timeline.note(f"starting broker node {node.name} again, {accepted['accepted']} accepted")
        await asyncio.to_thread(_start_node, stack.cluster, node.name)
        running = stack.cluster.running_nodes(1)
        assert node.name in running, f"{node.name} booted but did not rejoin the cluster: running {running}"
        timeline.note(f"broker node {node.name} back: running nodes {', '.join(running)}")
        await more_accepted()  # the load goes on a while on the healed cluster
    finally:
        load.faults_done.set()


async def _run(stack: ScaledStack, load: Load) -> None:
    payments: list[Payment] = []
    timeline = Timeline()
    counts: Counter[str] = Counter()
    timeline.note(
        f"load begins: at least {load.minimum} payments, {load.customers} customers, {len(stack.all())} processes"
    )
    await asyncio.gather(
        _pay_all(stack, load, payments, timeline, counts), _inject_faults(stack, load, timeline, counts)
    )

    ids = [p.payment_id for p in payments if p.payment_id]

    async def all_terminal() -> bool:
        query = "SELECT count(*) FROM ledger.payment_requests WHERE id = ANY($1::text[]) AND status = ANY($2)"
        return int(await stack.pool.fetchval(query, ids, list(TERMINAL))) == len(ids)

    try:
        await eventually(all_terminal, timeout=240, interval=0.5, what="every accepted payment terminal")
    except AssertionError:
        print(f"\nfault timeline ({stack.namespace}):\n{timeline}")
        await _print_stuck(stack, ids)
        raise
    timeline.note("every accepted payment terminal in the ledger")

    rows = {
        r["id"]: r
        for r in await stack.pool.fetch(
            "SELECT id, status, failure_code FROM ledger.payment_requests WHERE id = ANY($1::text[])", ids
        )
    }
    wrong = [
        (p.payment_id, p.card, rows[p.payment_id]["status"], rows[p.payment_id]["failure_code"])
        for p in payments
        if (rows[p.payment_id]["status"], rows[p.payment_id]["failure_code"]) != CARDS[p.card]
    ]
    requests_per_key = await stack.pool.fetch(
        "SELECT merchant_id, idempotency_key, count(*) AS n FROM ledger.payment_requests"
        " GROUP BY 1, 2 HAVING count(*) > 1"
    )
    total_requests = int(await stack.pool.fetchval("SELECT count(*) FROM ledger.payment_requests"))
    events_twice = await stack.pool.fetch(
        "SELECT event_id, count(*) FROM ledger.payment_logs GROUP BY event_id HAVING count(*) > 1"
    )
    unlogged = await stack.pool.fetch(
        """SELECT r.id, r.status FROM ledger.payment_requests r
           WHERE NOT EXISTS (SELECT 1 FROM ledger.payment_logs l WHERE l.payment_request_id = r.id
                             AND l.outcome = 'applied' AND l.to_status = r.status
                             AND l.from_status IS DISTINCT FROM l.to_status)"""
    )
    ours = [row for row in stack.cluster.list_queues(1) if row[0].startswith(stack.namespace + ".")]
    dead_letters = {
        name: int(messages)
        for name, messages in (
            line.split("\t")
            for line in stack.cluster.nodes[1]
            .ctl("list_queues", "name", "messages", "--no-table-headers", "--quiet")
            .splitlines()
            if line.startswith(stack.namespace + ".") and "\t" in line
        )
        if name.endswith(".dlq")
    }
    answered_by = Counter(p.answered_by for p in payments if p.answered_by is not None)
    workers = {
        name: [process.log_text().count(line) for process in stack.replicas[name]]
        for name, line in (("gateway_worker", '"intent created"'), ("ledger", '"event recorded"'))
    }

    terminal_right = len(ids) - len(wrong)
    retries = {k: v for k, v in counts.items() if "retried" in k}
    print(f"\nfault timeline ({stack.namespace}):\n{timeline}")
    print(
        f"counts: accepted {len(ids)}, terminal with the expected status {terminal_right}, "
        f"lost {len(payments) - terminal_right}, duplicated {len(requests_per_key) + (total_requests - len(ids))} "
        f"payments and {len(events_twice)} events; client retries {retries}"
    )
    print(f"Prefer: wait answered with the checkout_url by intake replica: {dict(sorted(answered_by.items()))}")
    print(f"work done per replica (gateway_worker intents, ledger events): {workers}")
    print("rabbitmqctl list_queues name type members durable:")
    for row in sorted(ours):
        print("  " + "\t".join(row))

    assert len(ids) == len(payments) >= load.minimum
    assert not wrong, f"{len(wrong)} payments ended otherwise than their card says, e.g. {wrong[:5]}"
    assert not requests_per_key and total_requests == len(ids), (requests_per_key[:5], total_requests, len(ids))
    assert not events_twice, events_twice[:5]
    assert not unlogged, f"status changes without their log row: {unlogged[:5]}"
    assert dead_letters and not any(dead_letters.values()), dead_letters
    assert sorted(answered_by) == list(range(REPLICAS)), answered_by  # each intake answered its own waits
    assert all(all(done > 0 for done in counts_) for counts_ in workers.values()), workers  # they compete
    durable = [(name, kind, members) for name, kind, members, is_durable in ours if is_durable == "true"]
    assert {name.rpartition(".")[2] for name, _, _ in durable} >= {"dlq", "ledger", "gateway_worker"}
    for name, kind, members in durable:  # an intake's own reply queue is exclusive: it lives and dies with it
        assert kind == "quorum", f"{name} is {kind}: a message waiting there is lost with its node"
        assert members.count("@") == len(stack.cluster.nodes), f"{name} has members {members}"


async def _print_stuck(stack: ScaledStack, ids: list[str]) -> None:
    """What a failed wait needs to be read: the payments not terminal, their log rows, the queues, each log's tail."""
    stuck = await stack.pool.fetch(
        "SELECT id, status, provider_payment_id FROM ledger.payment_requests WHERE id = ANY($1::text[])"
        " AND NOT status = ANY($2)",
        ids,
        list(TERMINAL),
    )
    known = {
        r["id"]
        for r in await stack.pool.fetch("SELECT id FROM ledger.payment_requests WHERE id = ANY($1::text[])", ids)
    }
    print(f"not terminal: {len(stuck)}; not in the ledger at all: {sorted(set(ids) - known)[:10]}")
    for row in stuck[:5]:
        logs = await stack.pool.fetch(
            "SELECT event_type, from_status, to_status, source, outcome, recorded_at FROM ledger.payment_logs"
            " WHERE payment_request_id = $1 ORDER BY id",
            row["id"],
        )
        print(f"  {dict(row)}: {[dict(log) for log in logs]}")
        if row["provider_payment_id"]:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                url = f"{stack.sandbox.url}/v1/intents/{row['provider_payment_id']}/webhooks"
                async with http.get(url) as r:
                    print(f"    sandbox webhook attempts: {r.status} {await r.text()}")
        for process in stack.all():
            hits = [line for line in process.log_text().splitlines() if row["id"] in line]
            if hits:
                print(f"    {process.name} ({process.log_path.parent.name}): {len(hits)} lines, last: {hits[-3:]}")
    for row in (
        stack.cluster.nodes[1]
        .ctl("list_queues", "name", "messages", "messages_unacknowledged", "--no-table-headers", "--quiet")
        .splitlines()
    ):
        if row.startswith(stack.namespace + "."):
            print(f"  queue {row}")


@pytest.mark.timeout(600)
async def test_a_scaled_out_stack_loses_and_doubles_nothing_through_a_broker_node_and_replica_failures(
    scaled: tuple[ScaledStack, LinkProxy],
) -> None:
    await _run(scaled[0], Load(minimum=150, customers=3))


@pytest.mark.cluster_full
@pytest.mark.timeout(1200)
async def test_the_full_run_pays_500_payments_through_the_same_failures(
    scaled: tuple[ScaledStack, LinkProxy],
) -> None:
    await _run(scaled[0], Load(minimum=500, customers=8))
