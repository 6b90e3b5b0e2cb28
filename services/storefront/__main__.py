"""`python -m services.storefront`: the demo shop alone, on STOREFRONT_PORT."""

from __future__ import annotations

from services.storefront.app import create_app
from services.storefront.settings import StorefrontSettings
from shared.runtime import run_service


def main() -> None:
    run_service("storefront", StorefrontSettings, create_app)


if __name__ == "__main__":
    main()
