"""Kubernetes resource quantities (``500m``, ``1.5Gi``, ``2e3``), as apimachinery's
``resource.Quantity`` parses, adds, rounds and prints them.

Grammar (``k8s.io/apimachinery/pkg/api/resource``)::

    <quantity>  ::= [+-] <digits> [ "." [<digits>] ] <suffix> | [+-] "." <digits> <suffix>
    <suffix>    ::= Ki | Mi | Gi | Ti | Pi | Ei                 (binary SI, powers of 1024)
                  | n | u | m | "" | k | M | G | T | P | E      (decimal SI)
                  | ( e | E ) [+-] <digits>                    (decimal exponent)

A value is exact (a :class:`~decimal.Decimal`); precision below 1n is rounded up, away from
zero, as apimachinery does. Values of 2^63 or more are refused: apimachinery accepts them but
its integer conversions then overflow, and no pod asks for that much.
"""

from __future__ import annotations

import decimal
import enum
import math
import re
from dataclasses import dataclass
from decimal import Decimal

from runtime.errors import FormatError

_CONTEXT = decimal.Context(prec=80, rounding=decimal.ROUND_UP, traps=[decimal.InvalidOperation])
_NANO = Decimal("1e-9")
_LIMIT = Decimal(2**63)
_MIB = 1024 * 1024

_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12,
                     "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL_NAMES = {exp: suffix for suffix, exp in _DECIMAL_SUFFIXES.items()}
_BINARY_NAMES = {exp: suffix for suffix, exp in _BINARY_SUFFIXES.items()}
_NUMBER = re.compile(r"([+-]?)(\d+(?:\.\d*)?|\.\d+)(.*)", re.ASCII | re.DOTALL)
_EXPONENT = re.compile(r"[eE]([+-]?\d{1,9})", re.ASCII)


class QuantityError(FormatError):
    """A resource quantity cannot be parsed."""


class Format(enum.Enum):
    """How a quantity prints, taken from the suffix it was written with."""

    DECIMAL_SI = "DecimalSI"
    BINARY_SI = "BinarySI"
    DECIMAL_EXPONENT = "DecimalExponent"


@dataclass(frozen=True, slots=True)
class Quantity:
    value: Decimal
    format: Format = Format.DECIMAL_SI

    @classmethod
    def parse(cls, text: str) -> Quantity:
        """Parse ``text``; a :class:`QuantityError` when it is not a quantity."""
        if not isinstance(text, str):
            raise QuantityError(f"quantity {text!r} is not a string")
        match = _NUMBER.fullmatch(text)
        if match is None:
            raise QuantityError(f"quantity {text!r}: quantities must match the regular "
                                "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
        sign, number, suffix = match.groups()
        mantissa = _CONTEXT.create_decimal(sign + number)
        value, fmt = _scale(text, mantissa, suffix)
        if value.is_zero():
            value = Decimal(0)
        elif value.as_tuple().exponent < -9:  # type: ignore[operator]
            value = value.quantize(_NANO, rounding=decimal.ROUND_UP, context=_CONTEXT)
        if abs(value) >= _LIMIT:
            raise QuantityError(f"quantity {text!r} is too large")
        return cls(value, fmt)

    def __add__(self, other: Quantity) -> Quantity:
        """The sum, printed as ``self`` prints, or as ``other`` when ``self`` is zero (as
        apimachinery's ``Quantity.Add``)."""
        fmt = other.format if self.value.is_zero() else self.format
        return Quantity(_CONTEXT.add(self.value, other.value), fmt)

    def ceil(self) -> int:
        """The value rounded up to an integer (apimachinery's ``Value()``)."""
        return math.ceil(self.value)

    def ceil_mib(self) -> int:
        """Whole MiB, rounded up (``volume/helpers.RoundUpToMiB``)."""
        return -(-self.ceil() // _MIB)

    def __str__(self) -> str:
        """The canonical form (apimachinery's ``Quantity.String()``)."""
        if self.value.is_zero():
            return "0"
        if self.format is Format.BINARY_SI and abs(self.value) >= 1024 \
                and self.value == self.value.to_integral_value():
            return _binary_text(int(self.value))
        return _decimal_text(self.value, self.format)


def _scale(text: str, mantissa: Decimal, suffix: str) -> tuple[Decimal, Format]:
    if suffix in _DECIMAL_SUFFIXES:
        return mantissa.scaleb(_DECIMAL_SUFFIXES[suffix], _CONTEXT), Format.DECIMAL_SI
    if suffix in _BINARY_SUFFIXES:
        return _CONTEXT.multiply(mantissa, Decimal(2 ** _BINARY_SUFFIXES[suffix])), \
            Format.BINARY_SI
    exponent = _EXPONENT.fullmatch(suffix)
    if exponent is None:
        raise QuantityError(f"quantity {text!r}: unable to parse quantity's suffix")
    return mantissa.scaleb(int(exponent.group(1)), _CONTEXT), Format.DECIMAL_EXPONENT


def _decimal_text(value: Decimal, fmt: Format) -> str:
    sign, digits, exponent = value.normalize(_CONTEXT).as_tuple()
    assert isinstance(exponent, int)
    mantissa = int("".join(map(str, digits)))
    shift = exponent % 3  # down to a multiple of three, the mantissa stays an integer
    mantissa, exponent = mantissa * 10**shift, exponent - shift
    number = f"{'-' if sign else ''}{mantissa}"
    if exponent == 0:
        return number
    if fmt is not Format.DECIMAL_EXPONENT and exponent in _DECIMAL_NAMES:
        return number + _DECIMAL_NAMES[exponent]
    return f"{number}e{exponent}"


def _binary_text(value: int) -> str:
    exponent = 0
    while value % 1024 == 0 and exponent < 60:
        value //= 1024
        exponent += 10
    return f"{value}{_BINARY_NAMES.get(exponent, '')}"
