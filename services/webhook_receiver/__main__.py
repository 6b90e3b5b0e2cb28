"""`python -m services.webhook_receiver`: verifies provider webhooks and publishes their status changes."""

from services.webhook_receiver.app import create_app
from services.webhook_receiver.settings import WebhookReceiverSettings
from shared.runtime import run_service


def main() -> None:
    run_service("webhook_receiver", WebhookReceiverSettings, create_app)


if __name__ == "__main__":
    main()
