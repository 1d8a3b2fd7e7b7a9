"""sdl.manifest: a received manifest read back strictly, its version recomputed, and checked against the
order's group spec (Akash's CheckAgainstDeployment), over every valid SDL in the corpus."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import sdl
from sdl.manifest import ManifestError, check_group, manifest_from_json, services_changed, version_of
from tests.conftest import CORPUS


def _valid() -> list[Path]:
    out = []
    for p in sorted(CORPUS.rglob("*.y*ml")):
        try:
            sdl.parse(p.read_bytes(), source=str(p))
        except Exception:
            continue
        out.append(p)
    return out


VALID = _valid()


def test_the_corpus_has_valid_sdls() -> None:
    assert len(VALID) > 300


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_round_trip_keeps_the_version_and_matches_the_order(path: Path) -> None:
    d = sdl.parse(path.read_bytes(), source=str(path))
    manifest = manifest_from_json(json.loads(json.dumps(d.manifest_json())))
    assert version_of(manifest) == d.version.hex()
    for group in manifest:
        spec = next(g for g in d.groups if g.name == group.name)
        assert check_group(group, spec) == []


def _sample() -> tuple[Any, sdl.Deployment]:
    d = sdl.parse((Path(__file__).resolve().parents[2] / "sdl/examples/llm-inference.yaml").read_bytes())
    return d.manifest_json(), d


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m[0]["services"][0].update(extra=1), "unknown field 'extra'"),
        (lambda m: m[0]["services"][0].update(count="1"), "count: must be a whole number"),
        (lambda m: m[0]["services"][0]["resources"]["cpu"]["units"].update(val="-1"), "cpu.units.val"),
        (lambda m: m[0]["services"][0].update(name="Bad_Name"), "is not a service name"),
        (lambda m: m[0]["services"][0]["expose"][0].update(proto="SCTP"), "is not TCP or UDP"),
        (lambda m: m[0]["services"][0].update(env=["1BAD=x"]), "valid variable name"),
        (lambda m: m[0]["services"][0].update(args=["\ud83d"]), "lone UTF-16 surrogate"),
        (lambda m: m[0]["services"][0]["expose"][0].update(**{"global": False}), "no service is exposed globally"),
        (lambda m: m.append(copy.deepcopy(m[0])), "appears twice"),
        (lambda m: m[0].update(services=[]), "1..64 services"),
    ],
)
def test_malformed_manifests_are_refused_with_their_path(mutate: Any, message: str) -> None:
    raw, _ = _sample()
    mutate(raw)
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        manifest_from_json(raw)


@pytest.mark.parametrize("raw", [None, {}, [], "x", 3, [None], [{"name": "a"}]])
def test_not_a_manifest_at_all(raw: Any) -> None:
    with pytest.raises(ManifestError):
        manifest_from_json(raw)


def test_a_manifest_asking_for_more_than_was_ordered_is_refused() -> None:
    raw, d = _sample()
    raw[0]["services"][0]["resources"]["gpu"]["units"]["val"] = "2"
    raw[0]["services"][0]["count"] = 2
    problems = check_group(manifest_from_json(raw)[0], d.groups[0])
    assert any("resources differ" in p for p in problems)
    assert any("2 replica(s) in the manifest, 1 ordered" in p for p in problems)


def test_an_unused_endpoint_is_refused() -> None:
    raw, d = _sample()
    raw[0]["services"][0]["expose"][0]["externalPort"] = 8000  # no longer the port-80 ingress ordered
    problems = check_group(manifest_from_json(raw)[0], d.groups[0])
    assert any("endpoints" in p for p in problems)


def test_an_update_cannot_add_or_remove_services() -> None:
    raw, _ = _sample()
    old = manifest_from_json(raw)[0]
    renamed = copy.deepcopy(raw)
    renamed[0]["services"][0]["name"] = "other"
    assert services_changed(old, manifest_from_json(renamed)[0]) == [
        "service 'other' was added (an update cannot add services)",
        "service 'vllm' was removed (an update cannot remove services)",
    ]
    changed = copy.deepcopy(raw)
    changed[0]["services"][0]["image"] = "vllm/vllm-openai:v0.7.0"
    assert services_changed(old, manifest_from_json(changed)[0]) == []
