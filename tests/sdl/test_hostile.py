"""Whatever the input, only SdlError escapes, and every problem has a location."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sdl
from tests.conftest import CORPUS

CORPUS_FILES = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml"))
SAMPLE = [p.read_bytes() for p in CORPUS_FILES[:: max(1, len(CORPUS_FILES) // 60)]]


def outcome(data: bytes | str) -> sdl.Deployment | sdl.SdlError:
    try:
        return sdl.parse(data, source="fuzz.yaml")
    except sdl.SdlError as e:
        assert e.problems
        for p in e.problems:
            assert p.line >= 1 and p.column >= 1, p
            assert p.message
        return e


def _mutate(data: bytes, rnd: random.Random) -> bytes:
    lines = data.split(b"\n")
    for _ in range(rnd.randint(1, 4)):
        i = rnd.randrange(len(lines))
        op = rnd.randrange(7)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rnd.randrange(len(lines))])
        elif op == 2 and b":" in lines[i]:
            key, _, _ = lines[i].partition(b":")
            lines[i] = (
                key
                + b": "
                + rnd.choice(
                    [
                        b"-1",
                        b"1e400",
                        b"[]",
                        b"{}",
                        b"~",
                        b"0x10",
                        b"99999999999999999999",
                        b"&a x",
                        b"*a",
                        b"'",
                        b"\xff",
                    ]
                )
            )
        elif op == 3:
            lines[i] = b" " * rnd.randint(0, 6) + lines[i].lstrip()
        elif op == 4:
            pos = rnd.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:pos] + bytes([rnd.randrange(256)]) + lines[i][pos:]
        elif op == 5:
            lines[i] = lines[i].replace(b"Gi", rnd.choice([b"GB", b"gi", b"G", b""]))
        else:
            lines[i] = lines[i].upper()
    return b"\n".join(lines)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(SAMPLE) - 1), st.randoms(use_true_random=False))
def test_mutated_corpus_files(index: int, rnd: random.Random) -> None:
    outcome(_mutate(SAMPLE[index], rnd))


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20))
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "version",
                    "services",
                    "profiles",
                    "deployment",
                    "image",
                    "expose",
                    "compute",
                    "placement",
                    "resources",
                    "cpu",
                    "units",
                    "gpu",
                    "memory",
                    "size",
                    "storage",
                    "count",
                    "profile",
                    "pricing",
                    "x",
                ]
            ),
            children,
            max_size=5,
        ),
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(yaml_values)
def test_random_yaml_structures(value: object) -> None:
    import json

    outcome(json.dumps(value, allow_nan=True))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_binary_junk(data: bytes) -> None:
    outcome(data)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000,
        "a: " * 5000 + "b",
        "- " * 10_000 + "x",
        "version: '2.0'\nservices: " + "{a: " * 3000 + "1" + "}" * 3000,
    ],
    ids=["deep-flow", "deep-block-map", "deep-block-seq", "deep-services"],
)
def test_deep_nesting(text: str) -> None:
    assert isinstance(outcome(text), sdl.SdlError)


def test_alias_bomb() -> None:
    lines = ["version: '2.0'", 'a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("services:\n  web:\n    image: nginx\n    args: *a11")
    result = outcome("\n".join(lines))
    assert isinstance(result, sdl.SdlError)


def test_alias_bomb_inside_a_used_field() -> None:
    lines = ['x: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f"x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    text = "\n".join(lines).replace("x:", "version: '2.0'\ninclude:", 1)
    text += "\nservices:\n  web:\n    image: nginx\n    env: *a8\n"
    assert isinstance(outcome(text), sdl.SdlError)


@pytest.mark.parametrize(
    "value",
    [
        "1e309",
        "-1e309",
        "99999999999999999999999999999",
        ".inf",
        ".nan",
        "0x" + "f" * 40,
        "1" * 5000,
        "-0",
        "1_000",
    ],
)
def test_huge_and_odd_numbers(value: str) -> None:
    base = Path(CORPUS / "fixtures/chain-sdk/testdata/sdl/input/v2.0/simple/input.yaml").read_text()
    for field in ("units: 0.1", "size: 128Mi", "count: 2", "amount: 100", "port: 80"):
        if field in base:
            key = field.split(":")[0]
            outcome(base.replace(field, f"{key}: {value}"))


def test_huge_file_is_refused() -> None:
    result = outcome("#" * (5 * 1024 * 1024))
    assert isinstance(result, sdl.SdlError)
