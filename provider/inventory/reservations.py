"""Reservations: hold capacity for open bids so that concurrent orders never overcommit the cluster.

``reserve(order_id, group)`` places every replica of every resource unit on a node (all GPUs of a
replica on one node of one acceptable model; cpu, memory and ephemeral storage too; persistent storage
against the capacity of its class), and holds it until the bid is lost, closed or times out. Once the
lease is won, ``allocate`` ties the hold to the lease; as soon as the lease's pods exist, the pods are
counted and the hold is dropped, so nothing is counted twice, manifest updates included (the
double-count Akash's provider has after an update).

Thread-safe: one lock, no I/O while holding it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import sdl
from provider.domain import GPU_RESOURCE, PodView, Resources
from provider.inventory.cluster import Inventory, NodeInventory

# Bounded set of reasons (they become a metric label).
NO_FIT_REASONS = (
    "gpu_model_unavailable",
    "insufficient_gpu",
    "insufficient_cpu",
    "insufficient_memory",
    "insufficient_ephemeral_storage",
    "insufficient_persistent_storage",
    "too_many_volumes",
    "duplicate_order",
)
MAX_VOLUMES_PER_UNIT = 4


@dataclass(frozen=True, slots=True)
class GpuRequirement:
    """One acceptable GPU: model ("*" for any), optional ram class and interface."""

    model: str
    ram: str = ""
    interface: str = ""

    @classmethod
    def from_attribute_key(cls, key: str) -> GpuRequirement | None:
        """``vendor/nvidia/model/h100/ram/80Gi/interface/sxm`` -> requirement; None if not nvidia."""
        parts = key.split("/")
        if len(parts) < 4 or parts[0] != "vendor" or parts[1] != "nvidia" or parts[2] != "model":
            return None
        req = cls(parts[3])
        rest = parts[4:]
        for name, value in zip(rest[::2], rest[1::2], strict=False):
            if name == "ram":
                req = replace(req, ram=value)
            elif name == "interface":
                req = replace(req, interface=value)
        return req

    def matches(self, model: str, ram_class: str, interface: str) -> bool:
        """Does a GPU of this model, ram class and interface satisfy the requirement?"""
        if not model or self.model not in ("*", model):
            return False
        if self.ram and self.ram != ram_class:
            return False
        return not (self.interface and self.interface != interface)

    def accepts(self, node: NodeInventory) -> bool:
        return self.matches(node.model, node.ram_class, node.interface)


@dataclass(frozen=True, slots=True)
class UnitDemand:
    """One resource unit of an order: ``count`` replicas, each needing ``per_replica``."""

    unit_id: int
    count: int
    per_replica: Resources
    gpu_options: tuple[GpuRequirement, ...] = ()
    persistent: tuple[tuple[str, int], ...] = ()  # (storage class, bytes) per replica
    volumes: int = 0

    @classmethod
    def from_group(cls, group: sdl.GroupSpec) -> tuple[UnitDemand, ...]:
        out: list[UnitDemand] = []
        for unit in group.resources:
            r = unit.resources
            ephemeral = sum(v.size for v in r.storage or () if not v.persistent and v.storage_class != "ram")
            ram_disk = sum(v.size for v in r.storage or () if v.storage_class == "ram")
            persistent = tuple((v.storage_class or "default", v.size) for v in r.storage or () if v.persistent)
            options = tuple(
                opt for a in r.gpu_attributes if (opt := GpuRequirement.from_attribute_key(a.key)) is not None
            )
            out.append(
                cls(
                    unit_id=r.id,
                    count=unit.count,
                    per_replica=Resources(r.cpu_millis or 0, (r.memory_bytes or 0) + ram_disk, ephemeral, r.gpu_units),
                    gpu_options=options,
                    persistent=persistent,
                    volumes=len(r.storage or ()),
                )
            )
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Placement:
    node: str
    unit_id: int
    resources: Resources


@dataclass(frozen=True, slots=True)
class Reservation:
    order_id: str
    placements: tuple[Placement, ...]
    persistent: tuple[tuple[str, int], ...]
    expires_at: float
    lease_id: str = ""  # set by allocate(): the pods of this lease replace the hold

    def per_node(self) -> dict[str, Resources]:
        out: dict[str, Resources] = {}
        for p in self.placements:
            out[p.node] = out.get(p.node, Resources()) + p.resources
        return out


@dataclass(frozen=True, slots=True)
class NoFit:
    order_id: str
    reason: str  # one of NO_FIT_REASONS
    detail: str


@dataclass
class _Snapshot:
    inventory: Inventory = field(default_factory=lambda: Inventory(()))
    leases_with_pods: frozenset[str] = frozenset()
    free: dict[str, Resources] = field(default_factory=dict)  # per node, before holds

    @classmethod
    def of(cls, inventory: Inventory, leases: frozenset[str]) -> _Snapshot:
        return cls(inventory, leases, {n.name: n.free for n in inventory.nodes})


class Reservations:
    """Holds capacity per order. ``refresh`` feeds it the latest cluster snapshot."""

    def __init__(
        self,
        storage_capacity: Mapping[str, int] | None = None,
        hold_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, Reservation] = {}
        self._snapshot = _Snapshot()
        self._storage_capacity = dict(storage_capacity or {})
        self._storage_used: dict[str, int] = {}
        self.hold_seconds = hold_seconds
        self.clock = clock

    # -- cluster state ---------------------------------------------------------------------------
    def refresh(
        self, inventory: Inventory, pods: Iterable[PodView] = (), storage_used: Mapping[str, int] | None = None
    ) -> None:
        """Take a new snapshot (computed without reservations). Holds whose lease now has pods are
        dropped: from here on the pods are what counts."""
        leases = frozenset(p.lease for p in pods if p.lease)
        with self._lock:
            self._snapshot = _Snapshot.of(inventory, leases)
            if storage_used is not None:
                self._storage_used = dict(storage_used)
            for order_id, r in list(self._held.items()):
                if r.lease_id and r.lease_id in leases:
                    del self._held[order_id]
            self._expire_locked()

    def reserved_by_node(self) -> dict[str, Resources]:
        with self._lock:
            return self._reserved_locked()

    def _reserved_locked(self) -> dict[str, Resources]:
        out: dict[str, Resources] = {}
        for r in self._held.values():
            for node, res in r.per_node().items():
                out[node] = out.get(node, Resources()) + res
        return out

    def _expire_locked(self) -> list[str]:
        now = self.clock()
        gone = [o for o, r in self._held.items() if not r.lease_id and r.expires_at <= now]
        for o in gone:
            del self._held[o]
        return gone

    # -- operations ------------------------------------------------------------------------------
    def reserve(
        self, order_id: str, units: Iterable[UnitDemand], hold_seconds: float | None = None
    ) -> Reservation | NoFit:
        demands = tuple(units)
        with self._lock:
            self._expire_locked()
            if order_id in self._held:
                return NoFit(order_id, "duplicate_order", f"order {order_id} already holds a reservation")
            free = dict(self._snapshot.free)
            for node, held in self._reserved_locked().items():
                if node in free:
                    free[node] = (free[node] - held).clamped()
            outcome = _fit(order_id, demands, self._snapshot.inventory, free)
            if isinstance(outcome, NoFit):
                return outcome
            persistent = _sum_persistent(demands)
            storage_problem = self._storage_fits_locked(persistent)
            if storage_problem:
                return NoFit(order_id, "insufficient_persistent_storage", storage_problem)
            reservation = Reservation(
                order_id,
                outcome,
                persistent,
                self.clock() + (hold_seconds if hold_seconds is not None else self.hold_seconds),
            )
            self._held[order_id] = reservation
            return reservation

    def _storage_fits_locked(self, wanted: tuple[tuple[str, int], ...]) -> str:
        held: dict[str, int] = {}
        for r in self._held.values():
            for cls, size in r.persistent:
                held[cls] = held.get(cls, 0) + size
        for cls, size in wanted:
            capacity = self._storage_capacity.get(cls)
            if capacity is None:
                return f"no persistent storage of class {cls!r} is offered"
            free = capacity - self._storage_used.get(cls, 0) - held.get(cls, 0)
            if size > free:
                return f"persistent storage class {cls!r}: {size} bytes wanted, {max(free, 0)} free"
        return ""

    def release(self, order_id: str) -> bool:
        """Bid lost, closed or withdrawn: give the capacity back. Idempotent."""
        with self._lock:
            return self._held.pop(order_id, None) is not None

    def allocate(self, order_id: str, lease_id: str) -> bool:
        """The lease was won: the hold no longer expires, and is dropped once the lease's pods exist."""
        with self._lock:
            r = self._held.get(order_id)
            if r is None:
                return False
            if lease_id in self._snapshot.leases_with_pods:
                del self._held[order_id]
            else:
                self._held[order_id] = replace(r, lease_id=lease_id)
            return True

    def expire(self) -> list[str]:
        with self._lock:
            return self._expire_locked()

    def get(self, order_id: str) -> Reservation | None:
        with self._lock:
            return self._held.get(order_id)

    def holds(self) -> tuple[Reservation, ...]:
        with self._lock:
            return tuple(self._held.values())


def _sum_persistent(demands: tuple[UnitDemand, ...]) -> tuple[tuple[str, int], ...]:
    acc: dict[str, int] = {}
    for d in demands:
        for cls, size in d.persistent:
            acc[cls] = acc.get(cls, 0) + size * d.count
    return tuple(sorted(acc.items()))


def _fit(
    order_id: str, demands: tuple[UnitDemand, ...], inventory: Inventory, free: dict[str, Resources]
) -> tuple[Placement, ...] | NoFit:
    nodes = {n.name: n for n in inventory.nodes}
    placements: list[Placement] = []
    # Biggest replicas first: GPUs, then cpu, so large units are not starved by small ones.
    ordered = sorted(
        demands, key=lambda d: (d.per_replica.gpus, d.per_replica.cpu_millis, d.per_replica.memory_bytes), reverse=True
    )
    for demand in ordered:
        if demand.volumes > MAX_VOLUMES_PER_UNIT:
            return NoFit(
                order_id,
                "too_many_volumes",
                f"unit {demand.unit_id} asks for {demand.volumes} volumes; at most {MAX_VOLUMES_PER_UNIT}",
            )
        need = demand.per_replica
        if need.gpus:  # all GPUs of a replica on one node of an accepted model
            eligible = [
                n
                for n, node in nodes.items()
                if not node.unsellable and any(o.accepts(node) for o in demand.gpu_options)
            ]
        else:
            eligible = list(nodes)
        model_seen = bool(eligible)
        for _ in range(demand.count):
            candidates = []
            for name in eligible:
                if need.fits_in(free[name]):
                    left = free[name] - need
                    candidates.append(((left.gpus, left.cpu_millis, left.memory_bytes, name), name))
            if not candidates:
                if need.gpus and not model_seen:
                    wanted = ", ".join(_describe(o) for o in demand.gpu_options) or "an NVIDIA GPU"
                    return NoFit(order_id, "gpu_model_unavailable", f"no sellable node has {wanted}")
                return NoFit(order_id, *_shortage(need, demand, nodes, free))
            _, best = min(candidates)
            free[best] = free[best] - need
            placements.append(Placement(best, demand.unit_id, need))
    return tuple(placements)


def _describe(req: GpuRequirement) -> str:
    text = "any NVIDIA GPU" if req.model == "*" else req.model
    if req.ram:
        text += f" {req.ram}"
    if req.interface:
        text += f" {req.interface}"
    return text


def _shortage(
    need: Resources, demand: UnitDemand, nodes: Mapping[str, NodeInventory], free: Mapping[str, Resources]
) -> tuple[str, str]:
    pool = [n for n in nodes if not need.gpus or any(opt.accepts(nodes[n]) for opt in demand.gpu_options)]
    best = max((free[n] for n in pool), key=lambda r: (r.gpus, r.cpu_millis), default=Resources())
    if need.gpus > max((free[n].gpus for n in pool), default=0):
        return (
            "insufficient_gpu",
            f"unit {demand.unit_id} needs {need.gpus} {GPU_RESOURCE} on one node; at most {best.gpus} free together",
        )
    if need.cpu_millis > max((free[n].cpu_millis for n in pool), default=0):
        return "insufficient_cpu", f"unit {demand.unit_id} needs {need.cpu_millis}m cpu per replica"
    if need.memory_bytes > max((free[n].memory_bytes for n in pool), default=0):
        return "insufficient_memory", f"unit {demand.unit_id} needs {need.memory_bytes} bytes of memory per replica"
    if need.ephemeral_bytes > max((free[n].ephemeral_bytes for n in pool), default=0):
        return (
            "insufficient_ephemeral_storage",
            f"unit {demand.unit_id} needs {need.ephemeral_bytes} bytes of ephemeral storage",
        )
    return "insufficient_gpu", f"unit {demand.unit_id}: no single node has every resource a replica needs"
