"""Which consumer group receives which message types: the broker's routing, written down as data.

Every service declares all of these groups at start (docs/reference/commands.md), so a message published before
its consumer first runs waits in that consumer's queue instead of being returned as unroutable. That is why the
routing lives here, below the services, and not in their handler modules: a service declares the others' queues
without loading their code. Each consuming service's own message registry (shared/registry.py) must handle
exactly the types listed for its group; tests/unit/test_message_registry.py holds the two together.

A new message type or consumer group is added here and in its service's registry.
"""

from __future__ import annotations

from shared.events import (
    PAYMENT_MESSAGE_TYPES,
    CancelPayment,
    CapturePayment,
    DeliverWebhook,
    ExpirePayment,
    PaymentIntentCreated,
    PaymentIntentFailed,
    PaymentRequested,
    PaymentStatusRecorded,
    ReconcilePayment,
    ReconcileRefund,
    RedeliverEvent,
    RefundRequested,
    RefundStatusRecorded,
)
from shared.topology import ConsumerGroup

# The shared queues, each consumed by the competing processes of one service.
CONSUMER_GROUPS: tuple[ConsumerGroup, ...] = (
    # Opens, closes and looks up payment intents at the provider; asks it for refunds and looks them up.
    ConsumerGroup(
        "gateway_worker",
        (
            PaymentRequested.TYPE,
            CancelPayment.TYPE,
            ExpirePayment.TYPE,
            ReconcilePayment.TYPE,
            CapturePayment.TYPE,
            RefundRequested.TYPE,
            ReconcileRefund.TYPE,
        ),
    ),
    # Records every payment message: its log is the audit trail.
    ConsumerGroup("ledger", tuple(PAYMENT_MESSAGE_TYPES)),
    # Ledger records (of payments and refunds) and merchants' redelivery requests become merchant events and
    # delivery commands.
    ConsumerGroup("notifier", (PaymentStatusRecorded.TYPE, RefundStatusRecorded.TYPE, RedeliverEvent.TYPE)),
    # One message per (event, endpoint) delivery, in a queue of its own: a slow endpoint holds only its own.
    ConsumerGroup("notifier_deliveries", (DeliverWebhook.TYPE,)),
)
CONSUMER_GROUPS_BY_NAME = {group.name: group for group in CONSUMER_GROUPS}

# The services whose every process hears, on a queue of its own, the outcomes of the requests waiting in that
# process (sent to its reply key, never declared up front): (service, message types).
PRIVATE_CONSUMERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("intake_api", (PaymentIntentCreated.TYPE, PaymentIntentFailed.TYPE)),
)
