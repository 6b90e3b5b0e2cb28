"""Stripe's objects as Stripe publishes them, for the fake of Stripe and the tests that hold the adapter to them.

Two sources, both Stripe's own: the example objects of the `stripe/openapi` repository (fixtures3.json, kept in
tests/schemas/ with its licence) give every field an object has; the official `stripe` SDK's types (generated from
the same spec, for the API version the SDK pins) name the fields of nested objects the examples leave out. An
object built here can only set fields Stripe has, so the fake cannot invent one for the adapter to rely on.
"""

from __future__ import annotations

import copy
import json
import typing
from functools import cache
from pathlib import Path
from typing import Any

import stripe
from stripe import StripeObject

FIXTURES = Path(__file__).resolve().parents[1] / "schemas" / "stripe-fixtures3.json"

# Stripe's object names and the SDK's classes for them.
SDK_CLASSES: dict[str, type[StripeObject]] = {
    "checkout.session": stripe.checkout.Session,
    "payment_intent": stripe.PaymentIntent,
    "event": stripe.Event,
    "refund": stripe.Refund,
    "charge": stripe.Charge,
}


@cache
def _fixtures() -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = json.loads(FIXTURES.read_text())["resources"]
    return resources


def published(resource: str) -> dict[str, Any]:
    """Stripe's published example of `resource` (e.g. "checkout.session"), a fresh copy."""
    return copy.deepcopy(_fixtures()[resource])


def sdk_fields(cls: type[StripeObject]) -> set[str]:
    """The fields the SDK's class declares (its type annotations, less class constants)."""
    return {name for cls_ in reversed(cls.__mro__) for name in getattr(cls_, "__annotations__", {})} - {"OBJECT_NAME"}


def shaped(resource: str, **fields: Any) -> dict[str, Any]:
    """Stripe's published `resource` with `fields` set; a field Stripe's object does not have is a KeyError."""
    obj = published(resource)
    unknown = set(fields) - set(obj)
    if unknown:
        raise KeyError(f"Stripe's {resource} has no field {sorted(unknown)}")
    obj.update(fields)
    return obj


def nested(cls: type[StripeObject], **fields: Any) -> dict[str, Any]:
    """A nested object (e.g. a PaymentIntent's `last_payment_error`) with fields the SDK's class declares."""
    unknown = set(fields) - sdk_fields(cls)
    if unknown:
        raise KeyError(f"Stripe's {cls.__qualname__} has no field {sorted(unknown)}")
    return dict(fields)


def sdk_object(obj: dict[str, Any]) -> StripeObject:
    """`obj` as the SDK reads it (the class for its `object`), which is what Stripe's own clients would see."""
    return SDK_CLASSES[obj["object"]].construct_from(obj, "sk_test_shapes")


def _stripe_classes(annotation: Any, owner: type[StripeObject]) -> list[type[StripeObject]]:
    """The StripeObject classes an SDK annotation names (through Optional, Union, ExpandableField, ForwardRef)."""
    found: list[type[StripeObject]] = []
    if isinstance(annotation, typing.ForwardRef):
        name = annotation.__forward_arg__
        annotation = getattr(owner, name, None) or getattr(stripe, name, None)
    if isinstance(annotation, type) and issubclass(annotation, StripeObject):
        found.append(annotation)
    for arg in typing.get_args(annotation):
        found.extend(_stripe_classes(arg, owner))
    return found


def fields_stripe_does_not_send(model: type[Any], cls: type[StripeObject]) -> list[str]:
    """Every field a pydantic `model` reads that Stripe's `cls` does not have, nested models included.

    A field must be declared by the SDK's class and, for an object Stripe publishes an example of, appear in it.
    """
    missing: list[str] = []
    declared = sdk_fields(cls)
    example = _fixtures().get(getattr(cls, "OBJECT_NAME", ""), None)
    # The raw annotations: ForwardRefs stay unresolved here and are looked up by name in _stripe_classes.
    hints = {k: v for c in reversed(cls.__mro__) for k, v in getattr(c, "__annotations__", {}).items()}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key not in declared or (example is not None and key not in example):
            missing.append(f"{cls.__qualname__}.{key}")
            continue
        for inner in _models(info.annotation):
            targets = _stripe_classes(hints.get(key), cls)
            if not targets:
                missing.append(f"{cls.__qualname__}.{key} (no object of Stripe's to read {inner.__name__} from)")
            for target in targets[:1]:
                missing.extend(fields_stripe_does_not_send(inner, target))
    return missing


def _models(annotation: Any) -> list[type[Any]]:
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]
