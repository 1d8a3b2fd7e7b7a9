"""Every object the builder emits for every valid SDL of the corpus is accepted by the pinned API server
(server-side apply, dry run): schema, defaults and validation of the real control plane, not ours."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import sdl
from provider.chain.types import LeaseId, OrderId
from provider.deploy.builder import DeploySettings, LeaseRef, build_objects
from provider.deploy.deployer import path_of
from provider.deploy.naming import FIELD_MANAGER
from provider.domain import NodeGpuFacts
from provider.errors import KubeError
from provider.kube import Kube
from sdl.manifest import manifest_from_json
from tests.conftest import CORPUS

pytestmark = pytest.mark.cluster

SETTINGS = DeploySettings(
    ingress_domain="ingress.example.test",
    ingress_class="traefik",
    storage_classes={"beta1": "standard", "beta2": "standard", "beta3": "fast", "default": "standard"},
    dns_cidrs=("10.250.0.1/32",),
    ingress_cidrs=("10.250.0.1/32",),
)
# what a mixed fleet reports, so GPU selectors take every path (agent labels and GFD products)
OBSERVED = [
    NodeGpuFacts("h100", "80Gi", "sxm", physical_gpus=8),
    NodeGpuFacts("a100", "40Gi", "pcie", physical_gpus=8),
    NodeGpuFacts("rtx4090", "24Gi", "pcie", physical_gpus=4),
]


def _corpus() -> list[tuple[Path, sdl.Deployment]]:
    out = []
    for p in sorted(CORPUS.rglob("*.y*ml")):
        try:
            out.append((p, sdl.parse(p.read_bytes(), source=str(p))))
        except Exception:
            continue
    return out


def test_every_object_for_every_corpus_sdl_passes_a_server_side_dry_run(kubeconfig: Path, namespace: str) -> None:
    kube = Kube(str(kubeconfig))
    corpus = _corpus()
    assert len(corpus) > 300
    kinds: Counter[str] = Counter()
    refused: list[str] = []
    for i, (path, deployment) in enumerate(corpus):
        lease = LeaseId(OrderId("gp1" + "a" * 40, i + 1, 1, 1), "gp1" + "b" * 40)
        ref = LeaseRef(lease, "gpu-devnet-1", "0123456789abcdef")
        for group in manifest_from_json(deployment.manifest_json()):
            for obj in build_objects(ref, group, SETTINGS, OBSERVED):
                placed: dict[str, Any] = obj
                if obj["kind"] != "Namespace":  # into one real namespace: a dry run creates nothing
                    placed = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
                try:
                    kube.apply(path_of(placed), placed, FIELD_MANAGER, dry_run=True)
                except KubeError as e:
                    refused.append(f"{path.relative_to(CORPUS)} {obj['kind']}/{obj['metadata']['name']}: {e}")
                kinds[obj["kind"]] += 1
    assert refused == [], "\n".join(refused[:20])
    # the run covered every kind the builder can emit
    assert {"Namespace", "NetworkPolicy", "Secret", "Service", "Deployment", "StatefulSet", "Ingress"} <= set(kinds)
