"""Schemathesis against the live intake: no 5xx, and every answer as /openapi.json describes it.

Cases are generated from the document the service serves, positive and negative, then sent to the running
service of the shared stack; the stateful run follows the document's links (create, then read, list, cancel).
"""

from __future__ import annotations

import secrets

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.schemas import BaseSchema

from tests.support.processes import Stack

API_KEY = "sk_test_demo"
FUZZ_SETTINGS = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def live_schema(stack: Stack) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{stack.url('intake_api')}/openapi.json", timeout=10)


def _with_credentials(case: schemathesis.Case) -> None:
    """A real key, a fresh Idempotency-Key and no waiting, unless the case's headers are invalid on purpose."""
    creating = case.method.upper() == "POST" and case.path == "/v1/payments"
    if case.meta is None or not case.meta.is_negative_at(ParameterLocation.HEADER):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {API_KEY}"}
        if creating:
            case.headers.update({"Idempotency-Key": secrets.token_hex(12), "Prefer": "wait=0"})
    body = case.body
    if creating and isinstance(body, dict) and not case.meta.is_negative_at(ParameterLocation.BODY):
        # JSON Schema counts 1999.0 as an integer; the API deliberately takes only JSON integers for amounts.
        amount = body.get("amount")
        if isinstance(amount, float) and amount.is_integer():
            body["amount"] = int(amount)


def test_every_operation_answers_as_the_openapi_document_says(live_schema: BaseSchema) -> None:
    cases = st.one_of(
        live_schema.as_strategy(GenerationMode.POSITIVE), live_schema.as_strategy(GenerationMode.NEGATIVE)
    )

    @settings(FUZZ_SETTINGS, max_examples=150)
    @given(case=cases)
    def answers_as_documented(case: schemathesis.Case) -> None:
        _with_credentials(case)
        case.call_and_validate(timeout=15)

    answers_as_documented()


def test_following_the_documents_links_from_a_created_payment_answers_as_documented(live_schema: BaseSchema) -> None:
    class LinkedCalls(live_schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: schemathesis.Case) -> None:
            _with_credentials(case)

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
            return {"timeout": 15}

    LinkedCalls.run(settings=settings(FUZZ_SETTINGS, max_examples=20, stateful_step_count=4))
