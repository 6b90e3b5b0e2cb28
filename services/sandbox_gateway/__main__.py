"""`python -m services.sandbox_gateway`: the sandbox gateway alone, on SANDBOX_PORT."""

from __future__ import annotations

from services.sandbox_gateway.app import create_app
from services.sandbox_gateway.settings import SandboxGatewaySettings
from shared.runtime import run_service


def main() -> None:
    # SANDBOX_HOST, not HTTP_HOST: the sandbox stays on loopback unless it is opened on purpose.
    run_service("sandbox_gateway", SandboxGatewaySettings, create_app, host=lambda s: s.sandbox_host)


if __name__ == "__main__":
    main()
