"""Exact money: a fixed-point decimal with 18 fractional digits, like Cosmos ``LegacyDec`` / ``DecCoin``.

Stored as one integer (the value times 10^18), so sums, differences and integer multiples are exact and
never depend on a context's precision, and a float never enters. Parsing accepts plain decimal text only
(``12``, ``0.5``, ``-3.000001``): no exponent, no more than 18 fractional digits, no NaN or infinity.
Division goes through exact rationals (``to_fraction`` / ``from_fraction``), rounded once, in an explicit
direction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Literal

PRECISION = 18
ONE: int = 10**PRECISION
_TEXT = re.compile(r"^(-)?(\d+)(?:\.(\d+))?$")
MAX_DIGITS = 80  # far above any supply; bounds the work a hostile amount can cause
Rounding = Literal["floor", "ceiling", "half_up"]


class MoneyError(ValueError):
    """Text or a number that is not an exact amount with at most 18 decimals."""


def _div(num: int, den: int, rounding: Rounding) -> int:
    if den == 0:
        raise MoneyError("division by zero")
    if den < 0:
        num, den = -num, -den
    q, r = divmod(num, den)  # floor division
    if r == 0 or rounding == "floor":
        return q
    if rounding == "ceiling":
        return q + 1
    return q + 1 if 2 * r >= den else q  # half_up (away from zero for positives, like LegacyDec)


@dataclass(frozen=True, slots=True, order=True)
class Dec:
    """An amount with 18 decimals; ``atto`` is the value times 10^18."""

    atto: int = 0

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: object) -> Dec:
        """Exact decimal text (or an int) -> Dec; anything else is a MoneyError that says why."""
        if isinstance(text, bool):
            raise MoneyError(f"{text!r} is not an amount")
        if isinstance(text, int):
            return cls(text * ONE)
        if isinstance(text, Dec):
            return text
        if not isinstance(text, str):
            raise MoneyError(f'{text!r} is not an amount; write it as decimal text such as "12.5"')
        m = _TEXT.match(text.strip())
        if not m or len(text) > MAX_DIGITS:
            raise MoneyError(f"{text[:40]!r} is not a decimal amount (digits with an optional '.', no exponent)")
        sign, whole, frac = m[1], m[2], m[3] or ""
        if len(frac) > PRECISION:
            raise MoneyError(f"{text[:40]!r} has more than {PRECISION} decimals")
        atto = int(whole) * ONE + int(frac.ljust(PRECISION, "0") or "0")
        return cls(-atto if sign else atto)

    @classmethod
    def from_decimal(cls, value: Decimal, rounding: Rounding | None = None) -> Dec:
        """A Decimal -> Dec; exact unless ``rounding`` says how to drop digits past the 18th."""
        if not value.is_finite():
            raise MoneyError(f"{value} is not a finite amount")
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        if len(digits) + max(exponent, 0) > MAX_DIGITS:
            raise MoneyError(f"{value:.3e} is too large to be an amount")
        mantissa = int("".join(map(str, digits)) or "0")
        shift = exponent + PRECISION
        if shift >= 0:
            atto = mantissa * 10**shift
        else:
            if rounding is None and mantissa % 10**-shift:
                raise MoneyError(f"{value} has more than {PRECISION} decimals")
            atto = _div(mantissa, 10**-shift, rounding or "floor")
        return cls(-atto if sign else atto)

    # -- arithmetic ------------------------------------------------------------------------------
    def __add__(self, other: Dec) -> Dec:
        return Dec(self.atto + other.atto)

    def __sub__(self, other: Dec) -> Dec:
        return Dec(self.atto - other.atto)

    def __neg__(self) -> Dec:
        return Dec(-self.atto)

    def __bool__(self) -> bool:
        return self.atto != 0

    def times(self, n: int) -> Dec:
        """Exact integer multiple."""
        return Dec(self.atto * n)

    @classmethod
    def from_fraction(cls, value: Fraction, decimals: int = PRECISION, rounding: Rounding = "ceiling") -> Dec:
        """An exact rational -> Dec, rounded once to ``decimals`` places."""
        step = 10 ** (PRECISION - decimals)
        return cls(_div(value.numerator * ONE, value.denominator * step, rounding) * step)

    def to_fraction(self) -> Fraction:
        return Fraction(self.atto, ONE)

    def to_decimal(self) -> Decimal:
        return Decimal(self.atto).scaleb(-PRECISION)

    # -- text ------------------------------------------------------------------------------------
    def __str__(self) -> str:
        """Shortest exact text: ``12``, ``0.5``, ``-3.000001``."""
        sign = "-" if self.atto < 0 else ""
        whole, frac = divmod(abs(self.atto), ONE)
        if not frac:
            return f"{sign}{whole}"
        return f"{sign}{whole}.{str(frac).rjust(PRECISION, '0').rstrip('0')}"

    def legacy(self) -> str:
        """Cosmos LegacyDec text: always 18 decimals."""
        sign = "-" if self.atto < 0 else ""
        whole, frac = divmod(abs(self.atto), ONE)
        return f"{sign}{whole}.{str(frac).rjust(PRECISION, '0')}"

    def __repr__(self) -> str:
        return f"Dec('{self}')"


ZERO = Dec(0)
