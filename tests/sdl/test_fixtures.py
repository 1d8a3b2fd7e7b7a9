"""Akash's own SDL fixtures: every EXPECTED.json verdict, and the Go/TS parity outputs byte-for-byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import sdl
from tests.conftest import CORPUS, REPO

FIXTURES = CORPUS / "fixtures"
PARITY_INPUT = FIXTURES / "chain-sdk/testdata/sdl/input"
PARITY_OUTPUT = FIXTURES / "chain-sdk/testdata/sdl/output-fixtures"
DIFFERENCES: dict[str, Any] = yaml.safe_load((REPO / "tests/sdl/data/differences.yaml").read_text())
EXPECTED: dict[str, dict[str, str]] = json.loads((FIXTURES / "EXPECTED.json").read_text())


def _verdict(path: Path, strict: bool) -> str:
    try:
        deployment = sdl.parse(path.read_bytes(), source=str(path), strict=strict)
    except sdl.SdlError as e:
        assert e.problems, "an SdlError always carries at least one problem"
        assert all(p.line >= 1 and p.column >= 1 for p in e.problems), e.problems
        return "invalid"
    return "valid-with-warning" if deployment.warnings else "valid"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_expected_verdict(name: str) -> None:
    path = FIXTURES / name
    expected = EXPECTED[name]["expect"]
    difference = DIFFERENCES["expected_json"].get(name)
    if difference is None:
        got = _verdict(path, strict=False)
        assert got.removesuffix("-with-warning") == expected, f"{name}: expected {expected}, got {got}"
        # strict turns every warning into an error, and changes nothing else
        assert _verdict(path, strict=True) == ("invalid" if got != "valid" else "valid"), name
    else:
        assert difference["reason"].strip()
        assert _verdict(path, strict=False) == difference["default"]
        assert _verdict(path, strict=True) == difference["strict"]


def test_every_difference_names_a_real_expectation() -> None:
    unknown = set(DIFFERENCES["expected_json"]) - set(EXPECTED)
    assert not unknown


PARITY_CASES = sorted(p.parent for p in PARITY_INPUT.glob("v2.*/*/input.yaml"))


def test_parity_cases_exist() -> None:
    assert len(PARITY_CASES) >= 15


@pytest.mark.parametrize("case", PARITY_CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_parity_outputs(case: Path) -> None:
    out = PARITY_OUTPUT / case.parent.name / case.name
    deployment = sdl.parse((case / "input.yaml").read_bytes(), source=str(case))
    assert deployment.manifest_json() == json.loads((out / "manifest.json").read_text())
    assert deployment.groups_json() == json.loads((out / "group-specs.json").read_text())
