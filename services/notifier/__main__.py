"""`python -m services.notifier`: delivers payment outcomes to merchants' webhook endpoints."""

from services.notifier.app import create_app
from shared.runtime import run_service


def main() -> None:
    run_service("notifier", create_app, lambda settings: settings.notifier_port)


if __name__ == "__main__":
    main()
