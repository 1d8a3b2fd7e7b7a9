"""The pure builder: deterministic objects, hardened pods, secrets only in Secrets, and GPU selectors
that match exactly the nodes with the requested GPUs (one model in two RAM classes and both interfaces)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import sdl
from provider.chain.types import LeaseId, OrderId
from provider.deploy import naming
from provider.deploy.builder import DeploySettings, LeaseRef, build_objects, gpu_node_terms
from provider.deploy.naming import lease_of, namespace_for
from provider.kube import gpu_facts
from sdl import spec as s

LEASE = LeaseId(OrderId("gp1" + "a" * 40, 101, 1, 1), "gp1" + "b" * 40)
REF = LeaseRef(LEASE, "gpu-provider-mock", "f" * 32)
EXAMPLE = Path(__file__).resolve().parents[2] / "sdl/examples/llm-inference.yaml"


def _group(text: bytes) -> s.ManifestGroup:
    return sdl.parse(text).manifest[0]


def test_namespace_is_akash_s_dns_label_and_labels_round_trip() -> None:
    ns = namespace_for(LEASE)
    assert len(ns) == 45 and ns == ns.lower() and ns.isalnum()
    objs = build_objects(REF, _group(EXAMPLE.read_bytes()), DeploySettings())
    assert lease_of(objs[0]["metadata"]["labels"]) == LEASE


def test_same_input_same_bytes() -> None:
    a = build_objects(REF, _group(EXAMPLE.read_bytes()), DeploySettings(ingress_domain="ingress.example.com"))
    b = build_objects(REF, _group(EXAMPLE.read_bytes()), DeploySettings(ingress_domain="ingress.example.com"))
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_example_objects() -> None:
    objs = build_objects(
        REF,
        _group(EXAMPLE.read_bytes()),
        DeploySettings(ingress_domain="ingress.example.com", storage_classes={"beta3": "fast-nvme"}),
    )
    kinds = [o["kind"] for o in objs]
    assert kinds == ["Namespace", "NetworkPolicy", "Secret", "Service", "StatefulSet", "Ingress"]
    sts = objs[4]
    pod = sts["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["resources"]["limits"] == c["resources"]["requests"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["automountServiceAccountToken"] is False and pod["runtimeClassName"] == "nvidia"
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["securityContext"] == {"privileged": False, "allowPrivilegeEscalation": False}
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"] == "fast-nvme"
    env = {e["name"]: e for e in c["env"]}
    assert env["HF_HOME"]["valueFrom"]["secretKeyRef"]["key"] == "HF_HOME"  # the value lives in the Secret only
    assert env["AKASH_DEPLOYMENT_SEQUENCE"]["value"] == "101"
    hosts = [r["host"] for r in objs[5]["spec"]["rules"]]
    assert len(hosts) == 1 and hosts[0].endswith(".ingress.example.com")
    egress = objs[1]["spec"]["egress"][2]["to"][0]["ipBlock"]
    assert egress["cidr"] == "0.0.0.0/0" and "10.0.0.0/8" in egress["except"]


def _labels_of(model: str, ram: str, interface: str, product: str, agent: bool) -> dict[str, str]:
    labels = {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": product, "nvidia.com/gpu.count": "8"}
    if agent:
        labels |= {
            "gpu-provider.io/gpu.model": model,
            "gpu-provider.io/gpu.ram": ram,
            "gpu-provider.io/gpu.interface": interface,
        }
    return labels


POOL = {  # one model in two RAM classes and both interfaces, labelled by our agent or by GFD only
    "a100-40-sxm-gfd": _labels_of("a100", "40Gi", "sxm", "NVIDIA-A100-SXM4-40GB", False),
    "a100-80-sxm-gfd": _labels_of("a100", "80Gi", "sxm", "NVIDIA-A100-SXM4-80GB", False),
    "a100-80-pcie-gfd": _labels_of("a100", "80Gi", "pcie", "NVIDIA-A100-80GB-PCIe", False),
    "a100-40-pcie-agent": _labels_of("a100", "40Gi", "pcie", "NVIDIA-A100-PCIE-40GB", True),
    "a100-80-sxm-agent": _labels_of("a100", "80Gi", "sxm", "NVIDIA-A100-SXM4-80GB", True),
    "h100-gfd": _labels_of("h100", "80Gi", "sxm", "NVIDIA-H100-80GB-HBM3", False),
    "cpu": {},
}


def _matches(term: dict[str, Any], labels: dict[str, str]) -> bool:
    for e in term["matchExpressions"]:
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@pytest.mark.parametrize(
    "attrs",
    ["model: a100", "model: a100\n                  ram: 80Gi", "model: a100\n                  interface: pcie",
     "model: a100\n                  ram: 40Gi\n                  interface: sxm", "model: h100", ""],
)  # fmt: skip
def test_gpu_selectors_match_exactly_the_nodes_with_such_gpus(attrs: str) -> None:
    wanted = f"\n                - {attrs}" if attrs else " []"
    text = EXAMPLE.read_text().replace(
        "nvidia:\n                - model: h100\n                  ram: 80Gi\n                  interface: sxm",
        f"nvidia:{wanted}",
    )
    resources = _group(text.encode()).services[0].resources
    observed = [gpu_facts(labels) for labels in POOL.values() if labels]
    terms = gpu_node_terms(resources, observed)
    matched = {name for name, labels in POOL.items() if any(_matches(t, labels) for t in terms)}
    (alt,) = {(a.key) for a in resources.gpu_attributes}
    expected = set()
    for name, labels in POOL.items():
        f = gpu_facts(labels)
        parts = alt.split("/")
        extra = dict(zip(parts[4::2], parts[5::2], strict=False))
        if (
            labels
            and (parts[3] == "*" or f.model == parts[3])
            and extra.get("ram", f.ram_class) == f.ram_class
            and extra.get("interface", f.interface) == f.interface
        ):
            expected.add(name)
    assert matched == expected and matched


def test_an_older_chain_identity_stays_on_the_pod_and_claim_templates_only() -> None:
    """An install upgraded from the first-block identity: every object's label moves to the new identity,
    the templates keep the old one (a template change would roll every pod; claim templates are immutable)."""
    old = "A1B2" * 16
    ref = LeaseRef(LEASE, "akashnet-2", "g" + "0" * 40, pod_genesis=old)
    objs = build_objects(ref, _group(EXAMPLE.read_bytes()), DeploySettings())  # a StatefulSet: persistent storage
    (sts,) = [o for o in objs if o["kind"] == "StatefulSet"]
    assert all(o["metadata"]["labels"][naming.GENESIS_LABEL] == ref.genesis for o in objs)
    assert sts["spec"]["template"]["metadata"]["labels"][naming.GENESIS_LABEL] == old[:63]
    for claim in sts["spec"]["volumeClaimTemplates"]:
        assert claim["metadata"]["labels"][naming.GENESIS_LABEL] == old[:63]
    fresh = build_objects(LeaseRef(LEASE, "akashnet-2", ref.genesis), _group(EXAMPLE.read_bytes()), DeploySettings())
    (new_sts,) = [o for o in fresh if o["kind"] == "StatefulSet"]
    assert new_sts["spec"]["template"]["metadata"]["labels"][naming.GENESIS_LABEL] == ref.genesis
