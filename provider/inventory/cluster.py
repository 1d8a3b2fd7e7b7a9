"""Cluster inventory: nodes minus the requests of their non-terminated pods, per node and per GPU model.

Pure: ``compute(nodes, pods, reserved)`` from values the kube adapter produced. GPUs are counted
physically: a node whose GPUs are time-sliced or shared through MPS advertises ``count x replicas``
``nvidia.com/gpu``; we count ``count`` and never sell its slices as whole GPUs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from provider.domain import NodeView, PodView, Resources


@dataclass(frozen=True, slots=True)
class NodeInventory:
    name: str
    model: str
    ram_class: str
    interface: str
    product: str
    gpus_total: int  # physical GPUs
    gpus_allocated: int  # held by running pods (physical)
    gpus_reserved: int  # held by open bids
    gpus_free: int  # sellable whole GPUs
    allocatable: Resources
    allocated: Resources
    reserved: Resources
    free: Resources  # what a new replica could still use on this node
    sharing: str = ""  # "time-slicing x4" when GPUs are shared
    unsellable: str = ""  # why this node sells nothing ("" when it does)
    healthy_gpus: int | None = None
    mig: dict[str, tuple[int, int]] = field(default_factory=dict)  # resource -> (allocatable, allocated)


@dataclass(frozen=True, slots=True)
class ModelSummary:
    model: str
    nodes: int
    total: int
    allocated: int
    reserved: int
    free: int


@dataclass(frozen=True, slots=True)
class Inventory:
    nodes: tuple[NodeInventory, ...]

    def node(self, name: str) -> NodeInventory | None:
        return next((n for n in self.nodes if n.name == name), None)

    def by_model(self) -> tuple[ModelSummary, ...]:
        acc: dict[str, list[int]] = {}
        for n in self.nodes:
            if not n.gpus_total:
                continue
            row = acc.setdefault(n.model, [0, 0, 0, 0, 0])
            row[0] += 1
            row[1] += n.gpus_total
            row[2] += n.gpus_allocated
            row[3] += n.gpus_reserved
            row[4] += n.gpus_free
        return tuple(ModelSummary(m, *v) for m, v in sorted(acc.items()))


def pod_usage(pods: Iterable[PodView]) -> dict[str, tuple[Resources, dict[str, int]]]:
    """Requests of bound pods, summed per node."""
    out: dict[str, tuple[Resources, dict[str, int]]] = {}
    for pod in pods:
        if not pod.node:
            continue
        res, mig = out.get(pod.node, (Resources(), {}))
        merged = dict(mig)
        for k, v in pod.mig.items():
            merged[k] = merged.get(k, 0) + v
        out[pod.node] = (res + pod.requests, merged)
    return out


def compute(
    nodes: Iterable[NodeView], pods: Iterable[PodView], reserved: Mapping[str, Resources] | None = None
) -> Inventory:
    reserved = reserved or {}
    usage = pod_usage(pods)
    result: list[NodeInventory] = []
    for node in sorted(nodes, key=lambda n: n.name):
        used, mig_used = usage.get(node.name, (Resources(), {}))
        held = reserved.get(node.name, Resources())
        facts = node.gpu
        replicas = max(1, facts.replicas)
        physical = facts.physical_gpus or node.allocatable.gpus // replicas
        if facts.shared:
            gpus_allocated = min(physical, -(-used.gpus // replicas))
            sharing = f"{facts.sharing or 'shared'} x{replicas}"
        else:
            gpus_allocated = used.gpus
            sharing = ""
        unsellable = ""
        if not node.ready:
            unsellable = "node not Ready"
        elif not node.schedulable:
            unsellable = "node cordoned"
        free = node.allocatable - used - held
        # never sell more than the device plugin advertises (0 when it is not running)
        usable_gpus = min(physical, node.allocatable.gpus // replicas)
        if physical and not node.allocatable.gpus and not unsellable:
            unsellable = "the NVIDIA device plugin advertises no nvidia.com/gpu on this node"
        if facts.healthy_gpus is not None:
            usable_gpus = min(physical, facts.healthy_gpus)
        gpus_free = max(0, usable_gpus - gpus_allocated - held.gpus)
        if facts.shared:
            gpus_free = 0  # a slice of a shared GPU is never sold as a whole one
        if unsellable:
            gpus_free = 0
            free = Resources()
        free = replace(free.clamped(), gpus=gpus_free)
        result.append(
            NodeInventory(
                name=node.name,
                model=facts.model,
                ram_class=facts.ram_class,
                interface=facts.interface,
                product=facts.product,
                gpus_total=physical,
                gpus_allocated=gpus_allocated,
                gpus_reserved=held.gpus,
                gpus_free=gpus_free,
                allocatable=node.allocatable,
                allocated=used,
                reserved=held,
                free=free,
                sharing=sharing,
                unsellable=unsellable or ("GPUs are shared (time-slicing/MPS)" if facts.shared else ""),
                healthy_gpus=facts.healthy_gpus,
                mig={k: (v, mig_used.get(k, 0)) for k, v in sorted(node.mig.items())},
            )
        )
    return Inventory(tuple(result))
