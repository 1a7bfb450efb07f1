"""Kubernetes quantities: parsing, rounding and canonical printing as apimachinery's
``resource.Quantity`` (expected strings from its quantity_test.go conventions)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.quantity import Format, Quantity, QuantityError


@pytest.mark.parametrize(("text", "value", "canonical"), [
    ("0", "0", "0"),
    ("1", "1", "1"),
    ("500m", "0.5", "500m"),
    ("1.5", "1.5", "1500m"),
    (".5", "0.5", "500m"),
    ("5.", "5", "5"),
    ("+2k", "2000", "2k"),
    ("-1", "-1", "-1"),
    ("100n", "0.0000001", "100n"),
    ("1u", "0.000001", "1u"),
    ("1e-12", "0.000000001", "1e-9"),  # below 1n rounds up
    ("0.1n", "0.000000001", "1n"),
    ("1k", "1000", "1k"),
    ("1M", "1000000", "1M"),
    ("1G", "1000000000", "1G"),
    ("1T", "1e12", "1T"),
    ("1P", "1e15", "1P"),
    ("1E", "1e18", "1E"),  # exa, not an exponent
    ("1E3", "1000", "1e3"),
    ("2e3", "2000", "2e3"),
    ("1500e-3", "1.5", "1500e-3"),
    ("1Ki", "1024", "1Ki"),
    ("1Mi", "1048576", "1Mi"),
    ("0.5Gi", "536870912", "512Mi"),
    ("1.5Gi", "1610612736", "1536Mi"),
    ("2048Ki", "2097152", "2Mi"),
    ("1Ti", "1099511627776", "1Ti"),
    ("512", "512", "512"),
    ("1000", "1000", "1k"),
    ("1500", "1500", "1500"),
    ("0.5Ki", "512", "512"),  # binary below 1024 prints decimal
])
def test_parse_and_print(text: str, value: str, canonical: str) -> None:
    q = Quantity.parse(text)
    assert q.value == Decimal(value)
    assert str(q) == canonical


@pytest.mark.parametrize("text", [
    "", " ", "abc", "1 ", " 1", "1K", "1Kii", "1e", "1e+", "1.2.3", "--1", "1b", "Mi", "1mi",
    "0x10", "1_000", "9223372036854775808", "1e99", "8Ei",
])
def test_invalid(text: str) -> None:
    with pytest.raises(QuantityError):
        Quantity.parse(text)


@pytest.mark.parametrize(("text", "ceil", "mib"), [
    ("500m", 1, 1), ("1", 1, 1), ("1001m", 2, 1), ("2.0", 2, 1), ("1n", 1, 1),
    ("1Mi", 1048576, 1), ("1048577", 1048577, 2), ("1G", 10**9, 954), ("1Gi", 2**30, 1024),
    ("0", 0, 0),
])
def test_rounding(text: str, ceil: int, mib: int) -> None:
    q = Quantity.parse(text)
    assert q.ceil() == ceil and q.ceil_mib() == mib


def test_sum_keeps_the_first_format() -> None:
    zero = Quantity(Decimal(0), Format.BINARY_SI)
    total = zero + Quantity.parse("1G") + Quantity.parse("1Gi")
    assert total.format is Format.DECIMAL_SI and total.value == 10**9 + 2**30
    total = zero + Quantity.parse("1Gi") + Quantity.parse("1Gi")
    assert str(total) == "2Gi"
    assert str(Quantity.parse("1") + Quantity.parse("2")) == "3"


SUFFIXES = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "m": Decimal("0.001"),
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(SUFFIXES)))
def test_integers_with_suffixes(number: int, suffix: str) -> None:
    q = Quantity.parse(f"{number}{suffix}")
    assert q.value == number * SUFFIXES[suffix]
    assert Quantity.parse(str(q)).value == q.value  # the canonical form reads back


@given(st.decimals(min_value=0, max_value=10**9, places=9, allow_nan=False))
def test_decimal_text_round_trips(value: Decimal) -> None:
    q = Quantity.parse(format(value, "f"))
    assert q.value == value
    assert Quantity.parse(str(q)).value == value
