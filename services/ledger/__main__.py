"""`python -m services.ledger`: the single writer of ledger.payment_requests and ledger.payment_logs."""

from services.ledger.app import create_app
from services.ledger.settings import LedgerSettings
from shared.runtime import run_service


def main() -> None:
    run_service("ledger", LedgerSettings, create_app)


if __name__ == "__main__":
    main()
