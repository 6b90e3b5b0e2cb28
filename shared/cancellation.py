"""Telling a real cancellation from a channel's loss.

aiormq fails the pending futures of a channel or connection it closes with CancelledError (its default close
reason), though nothing cancelled the task awaiting them: a publish whose confirm was pending when the node
went away raises CancelledError in a task that is not being cancelled. Let through, such a stray
CancelledError ends whatever loop awaited it, as a shutdown would (a batch consumer that stops taking
batches keeps its prefetched messages unacknowledged for as long as the process lives), so it is turned into
the broker error it is; a loop that meets one anyway is restarted by its supervisor (shared/supervisor.py).
"""

from __future__ import annotations

import asyncio


class ChannelLost(ConnectionError):
    """The broker channel closed under an operation (a publish, its confirm, an ack): its outcome is unknown."""


def being_cancelled() -> bool:
    """Whether the current task has been asked to stop (task.cancel(), a timeout expiring, a shutdown)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0
