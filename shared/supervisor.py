"""One supervisor for every long-running loop of a process: consumers, relays, sweeps, watchers.

A loop is an async callable meant to run as long as the process. `Supervisor.start(name, loop)` runs it in a
task of its own and:

- lets a real stop through: the task was cancelled (`Task.cancelling()`, shared/cancellation.py), by
  `Supervisor.stop()` or a shutdown;
- restarts a loop that failed, after a backoff (0.5 s, doubling up to 30 s; back to 0.5 s once a run lasted a
  minute), and counts the restart in `paystream_loop_restarts_total{loop}`. A failure is an error the loop
  raised, or a stray CancelledError: aiormq fails the futures of a channel or connection it closes (a missed
  heartbeat, a node going away) with CancelledError in tasks nobody cancelled. Taken for a stop, that ended
  the loop while the process looked alive;
- gives up only when a restart cannot help: the loop returned (it is meant never to), or it raised
  `LoopCannotContinue` or an error `unrecoverable` names (refused credentials, a changed migration). Then
  `failed` is set and the process stops (shared/runtime.py `serving`), so its own supervisor restarts it.

No loop carries its own copy of this: a loop raises, the supervisor decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.cancellation import being_cancelled
from shared.logs import get_logger
from shared.metrics import LOOP_RESTARTS

log = get_logger(__name__)

Loop = Callable[[], Awaitable[object]]


class LoopCannotContinue(Exception):
    """Raised by a loop whose failure no restart mends: the process stops."""


class LoopEnded(RuntimeError):
    """A supervised loop ended for good (it returned, or could not continue): the process must stop."""


@dataclass(frozen=True)
class Backoff:
    """How long the supervisor waits before restarting a failed loop."""

    initial: float = 0.5
    maximum: float = 30.0
    # A run that lasted this long was healthy: the next failure is waited for from `initial` again.
    healthy_after: float = 60.0


class Supervisor:
    """Runs a process's long-running loops and restarts the ones that fail (see the module doc)."""

    def __init__(
        self,
        *,
        backoff: Backoff | None = None,
        unrecoverable: Callable[[BaseException], bool] = lambda _exc: False,
    ) -> None:
        self._backoff = backoff or Backoff()
        self._unrecoverable = unrecoverable
        self._tasks: list[asyncio.Task[None]] = []
        self._failed: asyncio.Future[None] | None = None

    @property
    def failed(self) -> asyncio.Future[None]:
        """Fails (with LoopEnded) when a loop ended for good; never completes otherwise."""
        if self._failed is None:
            self._failed = asyncio.get_running_loop().create_future()
        return self._failed

    @property
    def tasks(self) -> tuple[asyncio.Task[None], ...]:
        """The tasks of the loops started and not yet stopped."""
        return tuple(self._tasks)

    def start(
        self, name: str, loop: Loop, *, backoff: Backoff | None = None, until_done: bool = False
    ) -> asyncio.Task[None]:
        """Run `loop` under supervision until `stop()`; `name` labels its logs and restart metric. `backoff`:
        this loop's own, if it is to come back sooner (or later) than the supervisor's. `until_done`: a task that
        finishes (a registration retried until it is made): its returning is success, not an end."""
        task = asyncio.create_task(self._supervise(name, loop, backoff or self._backoff, until_done), name=name)
        self._tasks.append(task)
        task.add_done_callback(self._ended)
        return task

    def every(
        self, name: str, interval: float, work: Loop, *, timeout: float | None = None, backoff: Backoff | None = None
    ) -> asyncio.Task[None]:
        """Run `work` every `interval` seconds under supervision; a round that fails, or outlasts `timeout`
        seconds (a silent connection), fails the loop, which the supervisor restarts after its backoff."""

        async def periodically() -> None:
            while True:
                async with asyncio.timeout(timeout):
                    await work()
                await asyncio.sleep(interval)

        return self.start(name, periodically, backoff=backoff)

    async def stop(self) -> None:
        """Cancel every loop and wait for them to end (a real stop: nothing is restarted or reported)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, name: str, loop: Loop, backoff: Backoff, until_done: bool) -> None:
        delay = backoff.initial
        while True:
            started = time.monotonic()
            try:
                await loop()
            except asyncio.CancelledError:
                if being_cancelled():
                    raise  # a real stop
                reason = "CancelledError that no stop asked for (a broker channel or connection closed under it)"
            except LoopCannotContinue as exc:
                raise LoopEnded(f"loop {name} cannot continue: {exc}") from exc
            except Exception as exc:
                if self._unrecoverable(exc):
                    raise LoopEnded(f"loop {name} cannot continue: {type(exc).__name__}: {exc}") from exc
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if until_done:
                    return
                raise LoopEnded(f"loop {name} returned, though it is meant to run as long as the process")
            if time.monotonic() - started >= backoff.healthy_after:
                delay = backoff.initial
            LOOP_RESTARTS.labels(name).inc()
            log.warning("loop failed; restarting it", loop=name, reason=reason[:500], restart_in_seconds=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, backoff.maximum)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return  # stopped
        error = task.exception()
        if error is None:
            return  # a task run `until_done`, done
        if not isinstance(error, LoopEnded):  # SystemExit, MemoryError...: nothing to restart from
            error = LoopEnded(f"loop {task.get_name()} ended: {type(error).__name__}: {error}")
        log.error("a loop cannot continue; the service stops", loop=task.get_name(), reason=str(error))
        if not self.failed.done():
            self.failed.set_exception(error)
