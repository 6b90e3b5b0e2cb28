"""`python -m tests.paced_cpu [--seconds S]`: what the same work costs this machine when it comes paced, against
back to back.

Two measurements, neither touching Paystream's services:
  python   one process validates and fingerprints 20 payment requests (the intake's own models), in a loop with
           no pause, then with a sleep after each round (every 2 ms and every 20 ms): CPU per round of each.
  aiohttp  the bare aiohttp server of `make bench` (one process), as fast as 32 clients go, then paced at a half,
           a quarter and a tenth of that rate: the server's CPU per request, and each request's p50 and p99.
The work is the same in every row; only its pacing changes. A process that sleeps between pieces of work finds its
caches cold and pays for waking: here, 1.2 to 2.8 times the CPU, the more the longer it slept (docs/benchmarks/
index.md, "Paced work"). That is part of why a payment at `make bench`'s steady rate costs more than one in its
saturating burst, whatever the code. A diagnostic, like `python -m tests.ledger_cpu`; not a test (it asserts
nothing about time).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

from services.intake_api.models import PaymentCreate
from tests.bench import bare_http
from tests.support.client import payment_body

_BODY = orjson.dumps(payment_body())


def python_round() -> None:
    """Twenty payment requests parsed, validated and fingerprinted: pure Python work, no I/O."""
    for _ in range(20):
        PaymentCreate.model_validate_json(_BODY).fingerprint()


def python_cpu_ms(seconds: float, pause: float) -> float:
    """CPU per round over `seconds`, sleeping `pause` after each round (0: none)."""
    python_round()
    rounds, started, deadline = 0, time.process_time(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        python_round()
        rounds += 1
        if pause:
            time.sleep(pause)
    return (time.process_time() - started) * 1000 / rounds


async def main(seconds: float) -> None:
    back_to_back = python_cpu_ms(seconds, 0.0)
    print(f"python: 20 requests validated and fingerprinted, back to back: {back_to_back:.3f} ms CPU a round")
    for pause in (0.002, 0.02):
        slept = python_cpu_ms(seconds, pause)
        print(
            f"  with a {pause * 1000:g} ms sleep after each round: {slept:.3f} ms CPU a round"
            f" ({slept / back_to_back:.1f} x)"
        )
    peak = await bare_http(seconds, 32)
    print(
        f"aiohttp: bare server as fast as 32 clients go: {peak['per_second']:.0f}/s,"
        f" {peak['cpu_ms_per_op']:.3f} ms server CPU a request, p50 {peak['p50_ms']:.1f} p99 {peak['p99_ms']:.1f} ms"
    )
    for share in (0.5, 0.25, 0.1):
        paced = await bare_http(seconds, 32, peak["per_second"] * share)
        print(
            f"  paced at {share:g} of that ({paced['per_second']:.0f}/s): {paced['cpu_ms_per_op']:.3f} ms a request"
            f" ({paced['cpu_ms_per_op'] / peak['cpu_ms_per_op']:.1f} x), p50 {paced['p50_ms']:.1f}"
            f" p99 {paced['p99_ms']:.1f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.paced_cpu")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement (default 5)")
    asyncio.run(main(parser.parse_args().seconds))
