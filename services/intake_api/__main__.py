"""`python -m services.intake_api`: the API shops call to take payments."""

from services.intake_api.app import create_app
from services.intake_api.settings import IntakeSettings
from shared.runtime import run_service


def main() -> None:
    run_service("intake_api", IntakeSettings, create_app)


if __name__ == "__main__":
    main()
