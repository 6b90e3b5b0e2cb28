"""`python -m services.sandbox_gateway`: the sandbox gateway alone, on SANDBOX_PORT."""

from __future__ import annotations

from services.sandbox_gateway.app import create_app
from shared.runtime import run_service


def main() -> None:
    run_service("sandbox_gateway", create_app, lambda s: s.sandbox_port)


if __name__ == "__main__":
    main()
