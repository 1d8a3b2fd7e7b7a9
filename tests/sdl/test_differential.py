"""Differential test against Akash's reference parser (pkg.akt.dev/go/sdl) over the whole corpus.

tests/sdl/data/oracle.jsonl holds the reference parser's verdict, manifest, group specs and version
hash for every SDL under ../shared/corpus, recorded by hack/sdl-oracle/record.sh (the module proxy
refuses pkg.akt.dev/go here, so the oracle is built from a chain-sdk checkout). Set
GPU_PROVIDER_SDL_ORACLE to a built oracle binary to compare against it live as well.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import sdl
from tests.conftest import CORPUS, REPO

RECORDED = [json.loads(line) for line in (REPO / "tests/sdl/data/oracle.jsonl").read_text().splitlines()]


def _reference() -> list[dict[str, Any]]:
    """The live oracle's answers when GPU_PROVIDER_SDL_ORACLE names one, else the recording."""
    binary = os.environ.get("GPU_PROVIDER_SDL_ORACLE")
    if not binary:
        return RECORDED
    files = [r["file"] for r in RECORDED]
    out = subprocess.run([binary, *files], cwd=CORPUS, capture_output=True, text=True, check=True, timeout=300)
    return [json.loads(line) for line in out.stdout.splitlines()]


REFERENCE = _reference()
DIFFERENCES: dict[str, Any] = yaml.safe_load((REPO / "tests/sdl/data/differences.yaml").read_text())["oracle"]


def _ours(path: Path) -> dict[str, Any]:
    try:
        d = sdl.parse(path.read_bytes(), source=str(path))
    except sdl.SdlError as e:
        return {"valid": False, "error": str(e)}
    return {
        "valid": True,
        "manifest": d.manifest_json(),
        "groups": d.groups_json(),
        "version": d.version.hex(),
    }


def _compare(reference: dict[str, Any]) -> None:
    path = CORPUS / reference["file"]
    ours = _ours(path)
    assert ours["valid"] == reference["valid"], (
        f"verdict differs: reference says {reference.get('error') or 'valid'}; we say {ours.get('error') or 'valid'}"
    )
    if reference["valid"]:
        assert ours["manifest"] == reference["manifest"]
        assert ours["groups"] == reference["groups"]
        assert ours["version"] == reference["version"]


def test_recording_covers_the_corpus() -> None:
    on_disk = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml")}
    assert on_disk == {r["file"] for r in RECORDED}, "re-run hack/sdl-oracle/record.sh: the corpus changed"
    assert sum(r["valid"] for r in RECORDED) > 300


@pytest.mark.parametrize("reference", REFERENCE, ids=lambda r: r["file"])
def test_agrees_with_reference_parser(reference: dict[str, Any]) -> None:
    """Every corpus file: the same verdict and outputs, or a listed difference that still differs."""
    reason = DIFFERENCES.get(reference["file"])
    if reason is None:
        _compare(reference)
    else:
        assert str(reason).strip(), "every listed difference says why"
        assert _ours(CORPUS / reference["file"])["valid"] != reference["valid"], "listed difference is gone"


def test_listed_differences_name_corpus_files() -> None:
    assert set(DIFFERENCES) <= {r["file"] for r in REFERENCE}, "a listed difference names no corpus file"
