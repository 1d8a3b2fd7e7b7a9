"""A fixed inventory from configuration, for running the market without a Kubernetes cluster (demos,
benchmarks, market tests). Implements the same port as the cluster inventory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from provider.domain import NodeGpuFacts, NodeView, PodView, Resources
from provider.errors import ConfigError
from provider.inventory.cluster import Inventory, compute
from provider.inventory.reservations import Reservations

GIB = 1024**3


def nodes_from_config(raw: Iterable[Mapping[str, Any]]) -> list[NodeView]:
    """[{name, model, ram, interface, gpus, cpu, memory_gib, count}] -> NodeViews (``count`` copies)."""
    out: list[NodeView] = []
    for i, item in enumerate(raw):
        try:
            name = str(item["name"])
            copies = int(item.get("count", 1))
            gpus = int(item.get("gpus", 0))
            cpu = int(item.get("cpu", 64))
            mem = int(item.get("memory_gib", 512))
            model = str(item.get("model", ""))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"inventory.static[{i}]: {e!r}; write {{name, model, gpus, cpu, memory_gib}}") from None
        for c in range(copies):
            out.append(
                NodeView(
                    f"{name}-{c}" if copies > 1 else name,
                    Resources(cpu * 1000, mem * GIB, 2000 * GIB, gpus),
                    NodeGpuFacts(model, str(item.get("ram", "")), str(item.get("interface", "")), physical_gpus=gpus),
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
