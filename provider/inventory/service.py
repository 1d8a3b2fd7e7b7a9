"""The cluster inventory service: refreshes the snapshot from Kubernetes and feeds the reservations."""

from __future__ import annotations

import time
from dataclasses import dataclass

from provider.domain import NodeView, PodView
from provider.inventory.cluster import Inventory, compute
from provider.inventory.reservations import Reservations
from provider.kube import Kube


@dataclass(frozen=True, slots=True)
class RefreshStats:
    nodes: int
    pods: int
    seconds: float


class ClusterInventory:
    def __init__(self, kube: Kube, reservations: Reservations) -> None:
        self.kube = kube
        self.reservations = reservations
        self._nodes: list[NodeView] = []
        self._pods: list[PodView] = []

    def refresh(self) -> RefreshStats:
        """One refresh (blocking: run it off the event loop)."""
        started = time.monotonic()
        nodes = self.kube.list_nodes()
        pods = self.kube.list_pods()
        snapshot = compute(nodes, pods)
        self.reservations.refresh(snapshot, pods)
        self._nodes, self._pods = nodes, pods
        return RefreshStats(len(nodes), len(pods), time.monotonic() - started)

    @property
    def current(self) -> Inventory:
        """The last snapshot with the reservations held now."""
        return compute(self._nodes, self._pods, self.reservations.reserved_by_node())
