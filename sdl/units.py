"""Quantities as Akash reads them: cpu units, byte sizes, GPU counts, coin amounts, durations.

Each parser returns the value or raises ``UnitError`` with a message a tenant can act on. The
arithmetic follows the reference parser exactly (float64 multiplication then truncation), so the
numbers that reach the chain are the same.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

K, KI = 1000, 1024
UNIT_SUFFIXES: dict[str, int] = {
    "k": K,
    "Ki": KI,
    "M": K**2,
    "Mi": KI**2,
    "G": K**3,
    "Gi": KI**3,
    "T": K**4,
    "Ti": KI**4,
    "P": K**5,
    "Pi": KI**5,
    "E": K**6,
    "Ei": KI**6,
}
BINARY_SUFFIXES: dict[str, int] = {k: v for k, v in UNIT_SUFFIXES.items() if k.endswith("i")}

_GO_FLOAT = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_GO_FLOAT_SPECIAL = re.compile(r"^(?:[+-]?(?:inf|infinity)|nan)$", re.IGNORECASE)
_GO_UINT = re.compile(r"^[0-9]+$")
_DENOM = re.compile(r"^[a-zA-Z][a-zA-Z0-9/:._-]{2,127}$")
# Go's float64 -> uint64 conversion of NaN, infinities and out-of-range values on amd64.
_GO_OUT_OF_RANGE = 0x8000000000000000


class UnitError(ValueError):
    """A quantity that Akash would not accept; the message says what to write instead."""


def go_parse_float(text: str) -> float:
    """strconv.ParseFloat(text, 64): decimal or special values, no spaces."""
    if _GO_FLOAT_SPECIAL.match(text):
        return float(text.lower().replace("infinity", "inf"))
    if not _GO_FLOAT.match(text):
        raise UnitError(f"{text!r} is not a number")
    value = float(text)
    if math.isinf(value) and "inf" not in text.lower():
        raise UnitError(f"{text!r} is out of range")
    return value


def go_uint64(value: float) -> int:
    """uint64(value) for a non-negative float64, as Go computes it on amd64."""
    if math.isnan(value) or math.isinf(value) or value >= 2.0**64:
        return _GO_OUT_OF_RANGE
    if value >= 2.0**63:
        return _GO_OUT_OF_RANGE if value >= 2.0**64 else int(value)
    return int(value)


def go_parse_uint(text: str, bits: int) -> int:
    """strconv.ParseUint(text, 10, bits)."""
    if not _GO_UINT.match(text) or not text.isascii():
        raise UnitError(f"{text!r} is not a whole number")
    value = int(text)
    if value >= 2**bits:
        raise UnitError(f"{text!r} is too large (at most {2**bits - 1})")
    return value


def parse_cpu(text: str) -> int:
    """CPU units in millicores: ``"500m"`` -> 500, ``0.5`` / ``"0.5"`` -> 500, ``2`` -> 2000."""
    if text.endswith("m"):
        try:
            return go_parse_uint(text[:-1], 32)
        except UnitError:
            raise UnitError(
                f"{text!r} is not a cpu quantity; write whole millicores such as 500m, or cores such as 0.5"
            ) from None
    try:
        value = go_parse_float(text) * 1000
    except UnitError:
        raise UnitError(
            f"{text!r} is not a cpu quantity; write cores such as 0.5 or 2, or millicores such as 500m"
        ) from None
    if value < 0:
        raise UnitError(f"{text!r} is negative; cpu units must be positive")
    as_int = go_uint64(value) if not math.isnan(value) else 0
    if as_int >= 2**63:
        return 0
    return as_int & 0xFFFFFFFF  # uint32(float64) truncates on amd64


def parse_bytes(text: str, *, binary_only: bool = False) -> int:
    """A byte quantity: plain number, or a number with k/Ki/M/Mi/G/Gi/T/Ti/P/Pi/E/Ei."""
    suffixes = BINARY_SUFFIXES if binary_only else UNIT_SUFFIXES
    for suffix, multiplier in suffixes.items():
        if text.endswith(suffix):
            number = text[: -len(suffix)]
            try:
                value = go_parse_float(number) * multiplier
            except UnitError:
                raise UnitError(_size_hint(text, binary_only)) from None
            if value < 0:
                raise UnitError(f"{text!r} is negative; sizes must be positive")
            return go_uint64(value)
    try:
        value = go_parse_float(text)
    except UnitError:
        raise UnitError(_size_hint(text, binary_only)) from None
    if value < 0:
        raise UnitError(f"{text!r} is negative; sizes must be positive")
    return go_uint64(value)


def _size_hint(text: str, binary_only: bool) -> str:
    match = re.match(r"^\s*([0-9.]+)\s*([a-zA-Z]+)\s*$", text)
    if binary_only:
        if match:
            number, unit = match.groups()
            letter = unit[0].upper()
            return f"{text!r} is not a GPU memory size; write {number}{letter}i (binary units only: Ki Mi Gi Ti Pi Ei)"
        return f"{text!r} is not a GPU memory size; write a number with a binary unit, such as 80Gi"
    if match:
        number, unit = match.groups()
        letter = unit[0].upper() if unit[0].lower() != "k" else "k"
        if letter in "kMGTPE":
            power = "kMGTPE".index(letter) + 1
            binary = ("K" if letter == "k" else letter) + "i"
            return (
                f"{text!r} is not a size; write {number}{letter} (10^{3 * power}) or {number}{binary} (2^{10 * power})"
            )
    return f"{text!r} is not a size; write a number of bytes, optionally with k, M, G, T, P, E (10^n) or Ki, Mi, Gi, Ti, Pi, Ei (2^n)"


def format_binary(value: int, suffix: str = "Gi") -> str:
    """memoryQuantity.StringWithSuffix: whole units, truncated (``85899345920`` -> ``80Gi``)."""
    return f"{value // BINARY_SUFFIXES[suffix]}{suffix}"


def parse_gpu_units(text: str) -> int:
    try:
        return go_parse_uint(text, 64)
    except UnitError:
        raise UnitError(f"{text!r} is not a GPU count; write a whole number such as 1") from None


_DEC_PRECISION = 18
_DEC_MAX_BITS = 316


def parse_dec(text: str) -> Decimal:
    """cosmos-sdk LegacyNewDecFromStr: up to 18 decimals, optional leading minus."""
    body = text
    negative = body.startswith("-")
    if negative:
        body = body[1:]
    if not body:
        raise UnitError("amount is empty; write a decimal such as 100 or 0.5")
    parts = body.split(".")
    if len(parts) > 2:
        raise UnitError(f"{text!r} is not a decimal amount")
    whole = parts[0]
    decimals = parts[1] if len(parts) == 2 else ""
    if len(parts) == 2 and (not decimals or not whole):
        raise UnitError(f"{text!r} is not a decimal amount; write digits on both sides of the point")
    if len(decimals) > _DEC_PRECISION:
        raise UnitError(f"{text!r} has more than {_DEC_PRECISION} decimal places")
    combined = whole + decimals + "0" * (_DEC_PRECISION - len(decimals))
    if not re.fullmatch(r"[+-]?[0-9]+", combined):
        raise UnitError(f"{text!r} is not a decimal amount")
    scaled = int(combined)
    if scaled.bit_length() > _DEC_MAX_BITS:
        raise UnitError(f"{text!r} is out of range")
    if negative:
        scaled = -scaled
    return Decimal(scaled).scaleb(-_DEC_PRECISION)


def format_dec(value: Decimal) -> str:
    """LegacyDec.String(): always 18 decimals (``150`` -> ``150.000000000000000000``)."""
    scaled = int(value.scaleb(_DEC_PRECISION))
    sign = "-" if scaled < 0 else ""
    digits = str(abs(scaled)).rjust(_DEC_PRECISION + 1, "0")
    return f"{sign}{digits[:-_DEC_PRECISION]}.{digits[-_DEC_PRECISION:]}"


def valid_denom(denom: str) -> bool:
    return bool(_DENOM.match(denom))


_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> int:
    """time.ParseDuration, in nanoseconds (``"1h30m"``, ``"90s"``, ``"0"``)."""
    body = text
    sign = 1
    if body[:1] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if body == "0":
        return 0
    if not body:
        raise UnitError(f"{text!r} is not a duration; write for example 30m, 1h or 1h30m")
    total = Decimal(0)
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if not match or match.group(1) in ("", "."):
            raise UnitError(f"{text!r} is not a duration; write for example 30m, 1h or 1h30m")
        total += Decimal(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    nanos = int(total)
    if nanos > 2**63 - 1:
        raise UnitError(f"{text!r} is too long a duration")
    return sign * nanos
