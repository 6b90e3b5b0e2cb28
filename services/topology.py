"""Every consumer group of Paystream, derived from the services' message registries.

Each service declares all of them at start (docs/reference/commands.md), so a message published before its consumer
first runs waits in that consumer's queue instead of being returned as unroutable. A new consuming service
adds its registry here.
"""

from __future__ import annotations

from services.gateway_worker.handlers import GATEWAY_MESSAGES
from services.ledger.handlers import LEDGER_MESSAGES
from services.notifier.handlers import NOTIFIER_DELIVERIES, NOTIFIER_MESSAGES
from shared.registry import consumer_groups

REGISTRIES = (GATEWAY_MESSAGES, LEDGER_MESSAGES, NOTIFIER_MESSAGES, NOTIFIER_DELIVERIES)
CONSUMER_GROUPS = consumer_groups(REGISTRIES)
