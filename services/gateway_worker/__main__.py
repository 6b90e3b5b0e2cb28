"""`python -m services.gateway_worker`: opens intents at the provider and asks it for the truth."""

from services.gateway_worker.app import create_app
from services.gateway_worker.settings import GatewayWorkerSettings
from shared.runtime import run_service


def main() -> None:
    run_service("gateway_worker", GatewayWorkerSettings, create_app)


if __name__ == "__main__":
    main()
