"""`python -m services.webhook_receiver`: verifies provider webhooks and publishes their status changes."""

from services.webhook_receiver.app import create_app
from shared.runtime import run_service


def main() -> None:
    run_service("webhook_receiver", create_app)


if __name__ == "__main__":
    main()
