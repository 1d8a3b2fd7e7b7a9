"""The bid engine's ports for capacity: what it needs of the inventory and of the holds on it.

The chain port is ``provider.chain.port.ChainPort`` and the pricing port ``provider.bidding.pricing.
PricingPort``; fakes and other implementations satisfy the same Protocols.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from provider.domain import UnitDemand
from provider.inventory.cluster import Inventory
from provider.inventory.reservations import NoFit, Reservation


class HoldsPort(Protocol):
    """Capacity held for open bids and won leases (``provider.inventory.reservations.Reservations``)."""

    def reserve(
        self, order_id: str, units: Iterable[UnitDemand], hold_blocks: int | None = None
    ) -> Reservation | NoFit: ...

    def release(self, order_id: str) -> bool: ...

    def allocate(self, order_id: str, lease_id: str) -> bool: ...

    def lease_has_pods(self, lease_id: str) -> bool: ...

    def leases_running(self) -> frozenset[str]: ...

    def holds(self) -> tuple[Reservation, ...]: ...

    def expire(self) -> list[str]: ...

    def get(self, order_id: str) -> Reservation | None: ...

    def count(self) -> int: ...

    @property
    def freed(self) -> int:
        """Moves whenever capacity may have come back (orders skipped for capacity are tried again)."""
        ...


class InventoryPort(Protocol):
    """A source of cluster capacity that can be refreshed (blocking: the engine runs it in a thread)."""

    @property
    def reservations(self) -> HoldsPort: ...

    def refresh(self) -> object: ...

    @property
    def current(self) -> Inventory: ...
