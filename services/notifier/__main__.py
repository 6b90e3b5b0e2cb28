"""`python -m services.notifier`: delivers payment outcomes to merchants' webhook endpoints."""

from services.notifier.app import create_app
from services.notifier.settings import NotifierSettings
from shared.runtime import run_service


def main() -> None:
    run_service("notifier", NotifierSettings, create_app)


if __name__ == "__main__":
    main()
