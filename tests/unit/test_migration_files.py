"""Each service's migrations are numbered once: two branches adding the same number fail here, not at start."""

from __future__ import annotations

import pytest

from shared.config import SERVICE_NAMES
from shared.db import migration_files


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_no_two_migrations_of_a_service_share_a_number(service: str) -> None:
    migration_files(service)  # raises when two share a number
