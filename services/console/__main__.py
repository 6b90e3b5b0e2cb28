"""`python -m services.console`: the merchant's dashboard alone, on CONSOLE_PORT."""

from __future__ import annotations

from services.console.app import create_app
from services.console.settings import ConsoleSettings
from shared.runtime import run_service


def main() -> None:
    run_service("console", ConsoleSettings, create_app)


if __name__ == "__main__":
    main()
