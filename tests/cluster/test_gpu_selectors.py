"""Every GPU node selector the builder can emit matches exactly the nodes that have such GPUs, and no
others, on a mixed pool: one model (A100) in both RAM classes and both interfaces, each shape once
labelled by our agent and once by GPU Feature Discovery alone, plus an H100 and a CPU node. The API
server evaluates the selectors (each affinity term as its label selector), not our code."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

import pytest

import sdl
from provider.deploy.builder import AGENT_INTERFACE, AGENT_MODEL, AGENT_RAM, GFD_PRESENT, GFD_PRODUCT, gpu_node_terms
from provider.domain import NodeGpuFacts
from provider.kube import Kube
from sdl.manifest import manifest_from_json

pytestmark = pytest.mark.cluster

RUN = f"sel-{uuid.uuid4().hex[:6]}"
TEST_LABEL = "gpu-provider.dev/selector-test"
# (model, ram, interface) -> GFD's product label for it (the NVML name, spaces as '-')
SHAPES = {
    ("a100", "40Gi", "sxm"): "NVIDIA-A100-SXM4-40GB",
    ("a100", "80Gi", "sxm"): "NVIDIA-A100-SXM4-80GB",
    ("a100", "40Gi", "pcie"): "NVIDIA-A100-PCIE-40GB",
    ("a100", "80Gi", "pcie"): "NVIDIA-A100-80GB-PCIe",
    ("h100", "80Gi", "sxm"): "NVIDIA-H100-80GB-HBM3",
}


def _nodes() -> dict[str, tuple[tuple[str, str, str] | None, dict[str, str]]]:
    """name -> (GPU shape or None, labels)."""
    out: dict[str, tuple[tuple[str, str, str] | None, dict[str, str]]] = {}
    for (model, ram, iface), prod in SHAPES.items():
        gfd = {GFD_PRESENT: "true", GFD_PRODUCT: prod}
        base = f"{RUN}-{model}-{ram.lower()}-{iface}"
        out[f"{base}-agent"] = (
            (model, ram, iface),
            {**gfd, AGENT_MODEL: model, AGENT_RAM: ram, AGENT_INTERFACE: iface},
        )
        out[f"{base}-gfd"] = ((model, ram, iface), gfd)
    out[f"{RUN}-cpu"] = (None, {})
    return out


NODES = _nodes()


@pytest.fixture
def mixed_pool(kubeconfig: Path) -> Iterator[Kube]:
    kube = Kube(str(kubeconfig))
    for name, (_, labels) in NODES.items():
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {**labels, TEST_LABEL: RUN}}}
        kube.request("POST", "/api/v1/nodes", node, what=f"creating node {name}")
    try:
        yield kube
    finally:
        for name in NODES:
            kube.request("DELETE", f"/api/v1/nodes/{name}", what=f"deleting node {name}")


def _resources(attrs: dict[str, Any]) -> Any:
    doc = {
        "version": "2.0",
        "services": {"app": {"image": "busybox", "expose": [{"port": 80, "to": [{"global": True}]}]}},
        "profiles": {
            "compute": {
                "app": {
                    "resources": {
                        "cpu": {"units": 1},
                        "memory": {"size": "1Gi"},
                        "storage": {"size": "1Gi"},
                        "gpu": {"units": 1, "attributes": {"vendor": {"nvidia": [attrs] if attrs else None}}},
                    }
                }
            },
            "placement": {"dc": {"pricing": {"app": {"denom": "uact", "amount": 1000}}}},
        },
        "deployment": {"app": {"dc": {"profile": "app", "count": 1}}},
    }
    parsed = sdl.parse(json.dumps(doc).encode())
    return manifest_from_json(parsed.manifest_json())[0].services[0].resources


def _selector(expr: dict[str, Any]) -> str:
    key, op, values = expr["key"], expr["operator"], ",".join(expr.get("values", []))
    return {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": key, "DoesNotExist": f"!{key}"}[
        op
    ]


def _matched(kube: Kube, terms: list[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for term in terms:  # terms are ORed; a term's expressions are ANDed, as a label selector's are
        selector = ",".join([f"{TEST_LABEL}={RUN}", *(_selector(e) for e in term["matchExpressions"])])
        items = kube.request("GET", "/api/v1/nodes", query=[("labelSelector", selector)], what="listing nodes")
        names |= {n["metadata"]["name"] for n in items["items"]}
    return names


def test_every_selector_matches_exactly_the_nodes_with_such_gpus(mixed_pool: Kube) -> None:
    observed = [NodeGpuFacts(m, r, i, product=p, physical_gpus=8) for (m, r, i), p in SHAPES.items()]
    cases = 0
    for model, ram, iface in product(("a100", "h100"), ("", "40Gi", "80Gi"), ("", "sxm", "pcie")):
        attrs: dict[str, Any] = {"model": model}
        if ram:
            attrs["ram"] = ram
        if iface:
            attrs["interface"] = iface
        terms = gpu_node_terms(_resources(attrs), observed)
        expected = {
            name
            for name, (shape, _) in NODES.items()
            if shape is not None
            and shape[0] == model
            and (not ram or shape[1] == ram)
            and (not iface or shape[2] == iface)
        }
        assert _matched(mixed_pool, terms) == expected, (model, ram, iface)
        cases += 1
    # no model named: any GPU node, never the CPU node
    any_gpu = _matched(mixed_pool, gpu_node_terms(_resources({}), observed))
    assert any_gpu == {name for name, (shape, _) in NODES.items() if shape is not None}
    assert cases == 18
