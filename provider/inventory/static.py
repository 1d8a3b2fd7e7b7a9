"""A fixed inventory from configuration, for running the market without a Kubernetes cluster (demos,
benchmarks, market tests). Implements the same port as the cluster inventory."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from provider.domain import NodeGpuFacts, NodeView, PodView, Resources
from provider.inventory.cluster import Inventory, compute
from provider.inventory.reservations import Reservations

if TYPE_CHECKING:
    from provider.config import StaticNode

GIB = 1024**3


def nodes_from_config(raw: Iterable[StaticNode]) -> list[NodeView]:
    """Validated static nodes (``count`` copies of each) -> NodeViews."""
    out: list[NodeView] = []
    for item in raw:
        for c in range(item.count):
            out.append(
                NodeView(
                    f"{item.name}-{c}" if item.count > 1 else item.name,
                    Resources(item.cpu * 1000, item.memory_gib * GIB, 2000 * GIB, item.gpus),
                    NodeGpuFacts(item.model, item.ram, item.interface, physical_gpus=item.gpus),
                )
            )
    return out


class StaticInventory:
    def __init__(self, nodes: list[NodeView], reservations: Reservations) -> None:
        self.nodes = nodes
        self.reservations = reservations
        self.pods: list[PodView] = []

    def refresh(self) -> None:
        self.reservations.refresh(compute(self.nodes, self.pods), self.pods)

    @property
    def current(self) -> Inventory:
        return compute(self.nodes, self.pods, self.reservations.reserved_by_node())
