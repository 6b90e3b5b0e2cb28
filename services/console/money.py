"""Amounts in a currency's own minor units (ISO 4217 exponents): JPY has none, USD two, KWD three."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# Currencies whose minor unit is not the hundredth (ISO 4217's list); every other has two decimals.
_EXPONENTS = {
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
    "CLF": 4,
    "UYW": 4,
}


class AmountError(ValueError):
    """What a person typed is not an amount of that currency (the message says why, for the form)."""


def exponent(currency: str) -> int:
    """How many decimals the currency's amounts have."""
    return _EXPONENTS.get(currency.upper(), 2)


def major_units(amount: int, currency: str) -> str:
    """`1999, "USD"` → `"19.99"`; `1999, "JPY"` → `"1999"`; `1999, "KWD"` → `"1.999"` (no grouping)."""
    places = exponent(currency)
    value = Decimal(amount).scaleb(-places)
    return f"{value:.{places}f}"


def format_money(amount: int, currency: str) -> str:
    """An amount in minor units as people read it: `1234567, "USD"` → `"12,345.67 USD"`."""
    places = exponent(currency)
    return f"{Decimal(amount).scaleb(-places):,.{places}f} {currency.upper()}"


def minor_units(typed: str, currency: str) -> int:
    """What a person typed in major units (`"5"`, `"5.5"`, `"1,000.25"`) as an integer of minor units.

    Raises AmountError for anything that is not a positive amount with at most the currency's decimals.
    """
    places = exponent(currency)
    text = typed.strip().replace(",", "").replace(" ", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise AmountError("Enter an amount such as " + major_units(10**places * 5, currency) + ".") from None
    if not value.is_finite() or value <= 0:
        raise AmountError("Enter an amount greater than zero.")
    minor = value.scaleb(places)
    if minor != minor.to_integral_value():
        raise AmountError(
            f"{currency.upper()} amounts have {places} decimal places at most."
            if places
            else f"{currency.upper()} amounts have no decimal places."
        )
    if minor > 10**12:
        raise AmountError("That amount is too large.")
    return int(minor)
