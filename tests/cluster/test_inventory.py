"""Inventory, reservations and the node agent against the real dev cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from provider.devcluster import NodePlan, parse_pool
from provider.domain import GpuRequirement, Resources, UnitDemand
from provider.inventory.agent import ANNOTATION, Agent
from provider.inventory.cluster import compute
from provider.inventory.nvml import Probe
from provider.inventory.reservations import NoFit, Reservations
from provider.inventory.service import ClusterInventory
from provider.kube import Kube
from tests.cluster.waiting import wait_for
from tests.unit.fake_nvml import H100, FakeNvml

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def kube(kubeconfig: Path) -> Kube:
    return Kube(str(kubeconfig))


def bound_gpu_requests(api: client.ApiClient) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in client.CoreV1Api(api).list_pod_for_all_namespaces().items:
        if p.status.phase in ("Succeeded", "Failed") or not p.spec.node_name:
            continue
        for c in p.spec.containers:
            req = (c.resources.requests or {}) if c.resources else {}
            out[p.spec.node_name] = out.get(p.spec.node_name, 0) + int(req.get("nvidia.com/gpu", 0))
    return out


def test_inventory_equals_the_simulated_pool(kube: Kube, api: client.ApiClient) -> None:
    inv = compute(kube.list_nodes(), kube.list_pods())
    plans = {p.name: p for p in parse_pool("h100:4x8,a100:2x8,rtx4090:2x4,cpu:1")}
    used = bound_gpu_requests(api)
    for name, plan in plans.items():
        node = inv.node(name)
        assert node is not None
        assert node.gpus_total == plan.gpus
        assert node.model == (plan.model or "")
        assert node.gpus_allocated == used.get(name, 0)
        assert node.gpus_free == plan.gpus - used.get(name, 0)
    h100 = inv.node("sim-h100-0")
    assert h100 is not None and (h100.ram_class, h100.interface) == ("80Gi", "sxm")
    totals = {m.model: m.total for m in inv.by_model() if m.model in ("h100", "a100", "rtx4090")}
    assert totals == {"h100": 32, "a100": 16, "rtx4090": 8}


def gpu_pod(name: str, node: str, gpus: int) -> client.V1Pod:
    res = {"nvidia.com/gpu": str(gpus), "cpu": "1", "memory": "1Gi"}
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"gpu-provider.io/lease": f"lease-{name}"}),
        spec=client.V1PodSpec(
            node_name=node,
            containers=[
                client.V1Container(
                    name="c", image="x", resources=client.V1ResourceRequirements(requests=res, limits=res)
                )
            ],
        ),
    )


def test_inventory_follows_pods_within_one_refresh(kube: Kube, api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    service = ClusterInventory(kube, Reservations())
    service.refresh()
    before = service.current.node("sim-a100-1")
    assert before is not None
    core.create_namespaced_pod(namespace, gpu_pod("two", "sim-a100-1", 2))
    service.refresh()
    after = service.current.node("sim-a100-1")
    assert after is not None and after.gpus_allocated == before.gpus_allocated + 2
    assert after.gpus_free == before.gpus_free - 2
    core.delete_namespaced_pod("two", namespace, grace_period_seconds=0)
    wait_for(lambda: not core.list_namespaced_pod(namespace).items)
    service.refresh()
    again = service.current.node("sim-a100-1")
    assert again is not None and again.gpus_free == before.gpus_free


def test_hold_turns_into_the_lease_pods(kube: Kube, api: client.ApiClient, namespace: str) -> None:
    reservations = Reservations()
    service = ClusterInventory(kube, reservations)
    service.refresh()
    free_before = sum(n.gpus_free for n in service.current.nodes if n.model == "rtx4090")
    held = reservations.reserve(
        "order-x", [UnitDemand(1, 1, Resources(1000, 1024**3, 0, 4), (GpuRequirement("rtx4090"),))]
    )
    assert not isinstance(held, NoFit)
    node = held.placements[0].node
    assert sum(n.gpus_free for n in service.current.nodes if n.model == "rtx4090") == free_before - 4
    reservations.allocate("order-x", "lease-won")
    client.CoreV1Api(api).create_namespaced_pod(namespace, gpu_pod("won", node, 4))
    service.refresh()
    assert reservations.get("order-x") is None  # the pods count now
    n = service.current.node(node)
    assert n is not None and n.gpus_reserved == 0 and n.gpus_allocated == 4
    assert sum(x.gpus_free for x in service.current.nodes if x.model == "rtx4090") == free_before - 4


@pytest.fixture
def shared_node(api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(api)
    manifest = NodePlan("sim-h100-timesliced", "h100", 32).manifest(taint=False)
    labels = manifest["metadata"]["labels"]
    labels.update(
        {"nvidia.com/gpu.count": "8", "nvidia.com/gpu.replicas": "4", "nvidia.com/gpu.sharing-strategy": "time-slicing"}
    )
    core.create_node(manifest)
    try:
        yield "sim-h100-timesliced"
    finally:
        core.delete_node("sim-h100-timesliced")


def test_time_sliced_node_is_not_oversold(kube: Kube, shared_node: str) -> None:
    reservations = Reservations()
    service = ClusterInventory(kube, reservations)
    service.refresh()
    node = service.current.node(shared_node)
    assert node is not None
    assert node.gpus_total == 8 and node.gpus_free == 0 and "time-slicing x4" in node.sharing
    free_h100 = sum(n.gpus_free for n in service.current.nodes if n.model == "h100" and n.name != shared_node)
    # ask for more whole H100s than the unshared nodes have: the 32 slices must not fill the gap
    big = UnitDemand(1, free_h100 // 8 + 1, Resources(1000, 1024**3, 0, 8), (GpuRequirement("h100"),))
    outcome = reservations.reserve("order-big", [big])
    assert isinstance(outcome, NoFit)
    assert all(p.node != shared_node for h in reservations.holds() for p in h.placements)


@pytest.fixture
def agent_node(api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(api)
    core.create_node(NodePlan("sim-agent-0", None, 0).manifest(taint=False))
    try:
        yield "sim-agent-0"
    finally:
        core.delete_node("sim-agent-0")


def test_agent_publishes_gpu_facts_only_when_they_change(kube: Kube, api: client.ApiClient, agent_node: str) -> None:
    core = client.CoreV1Api(api)
    lib = FakeNvml.load(H100, gpus=8)
    agent = Agent(Probe(lib=lib), kube, agent_node)
    assert agent.sync() is True
    node = core.read_node(agent_node)
    labels = node.metadata.labels
    assert labels["gpu-provider.io/gpu.model"] == "h100"
    assert labels["gpu-provider.io/gpu.ram"] == "80Gi"
    assert labels["gpu-provider.io/gpu.interface"] == "sxm"
    assert labels["gpu-provider.io/gpu.count"] == "8"
    assert labels["gpu-provider.io/gpu.healthy"] == "8"
    facts = json.loads(node.metadata.annotations[ANNOTATION])
    assert len(facts["gpus"]) == 8 and facts["driver"] == "580.159.04"
    version = node.metadata.resource_version
    assert agent.sync() is False  # nothing changed: no write
    assert core.read_node(agent_node).metadata.resource_version == version
    lib.devices[3]["nvmlDeviceGetTotalEccErrors[1, 0]"] = {"ok": 2}
    assert agent.sync() is True
    assert core.read_node(agent_node).metadata.labels["gpu-provider.io/gpu.healthy"] == "7"
    inv = compute(kube.list_nodes(), kube.list_pods())
    published = inv.node(agent_node)
    assert published is not None and published.model == "h100" and published.healthy_gpus == 7
    assert published.gpus_free == 0 and "device plugin" in published.unsellable  # no nvidia.com/gpu allocatable
