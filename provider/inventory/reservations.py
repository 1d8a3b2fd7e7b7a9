"""Reservations: hold capacity for open bids so that concurrent orders never overcommit the cluster.

``reserve(order_id, units)`` places every replica of every resource unit on a node (all GPUs of a
replica on one node of one acceptable model; cpu, memory and ephemeral storage too; persistent storage
against the capacity of its class), and holds it until the bid is lost, closed or its hold expires.
Expiry is counted in chain heights (blocks), from the ``height`` callable, never in wall-clock time.

Once the lease is won, ``allocate`` ties the hold to the lease and it no longer expires. The hold then
shrinks by one replica for each of the lease's pods that is bound to a node (those pods are counted by
the cluster inventory from then on) and is dropped only when every replica is bound: a lease with one
pod placed and three Pending still holds the three, so nothing a live lease will take is sold again,
and nothing is counted twice (the double count Akash's provider has after a manifest update).

Fitting is linear in the number of nodes, never in the replica counts: a unit's replicas are placed
in bulk (as many per node as fit, tightest node first) over the nodes of the accepted GPU models,
found through an index by model. Thread-safe: one lock, no I/O while holding it.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from provider.domain import GPU_RESOURCE, MAX_VOLUMES_PER_UNIT, PodView, Resources, UnitDemand
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
DEFAULT_HOLD_BLOCKS = 55  # the chain's bid timeout (50 blocks) plus a margin


@dataclass(frozen=True, slots=True)
class Placement:
    """``count`` replicas of one unit on one node, each needing ``resources``."""

    node: str
    unit_id: int
    resources: Resources
    count: int = 1
    gpu: tuple[str, str, str] = ("", "", "")  # (model, ram class, interface) of the node's GPUs, when used

    @property
    def total(self) -> Resources:
        return self.resources.scaled(self.count)


@dataclass(frozen=True, slots=True)
class Reservation:
    order_id: str
    placements: tuple[Placement, ...]
    persistent: tuple[tuple[str, int], ...]
    expires_at: int  # chain height at which an unanswered hold lapses
    lease_id: str = ""  # set by allocate(): the lease's bound pods replace the hold replica by replica
    bound: tuple[tuple[str, int], ...] = ()  # (node, pods of the lease bound there), counted by the inventory

    @property
    def replicas(self) -> int:
        return sum(p.count for p in self.placements)

    def outstanding(self) -> tuple[Placement, ...]:
        """The placements still held: each bound pod takes one replica off its own node's placement
        first; pods the scheduler put elsewhere take replicas off the largest placements."""
        on_node = dict(self.bound)
        counts = []
        for p in self.placements:
            take = min(p.count, on_node.get(p.node, 0))
            on_node[p.node] = on_node.get(p.node, 0) - take
            counts.append(p.count - take)
        elsewhere = sum(on_node.values())
        for i in sorted(range(len(counts)), key=lambda i: (-self.placements[i].resources.gpus, i)):
            take = min(elsewhere, counts[i])
            counts[i] -= take
            elsewhere -= take
        return tuple(replace(p, count=c) for p, c in zip(self.placements, counts, strict=True) if c)

    def per_node(self) -> dict[str, Resources]:
        out: dict[str, Resources] = {}
        for p in self.outstanding():
            out[p.node] = out.get(p.node, Resources()) + p.total
        return out


@dataclass(frozen=True, slots=True)
class NoFit:
    order_id: str
    reason: str  # one of NO_FIT_REASONS
    detail: str


@dataclass(frozen=True, slots=True)
class _Snapshot:
    inventory: Inventory = field(default_factory=lambda: Inventory(()))
    bound: Mapping[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)  # lease -> (node, bound pods)
    leases_with_pods: frozenset[str] = frozenset()
    free: Mapping[str, Resources] = field(default_factory=dict)  # per node, before holds
    nodes: Mapping[str, NodeInventory] = field(default_factory=dict)
    by_gpu: Mapping[tuple[str, str, str], tuple[str, ...]] = field(default_factory=dict)  # sellable GPU nodes

    @classmethod
    def of(cls, inventory: Inventory, pods: Iterable[PodView]) -> _Snapshot:
        bound: dict[str, dict[str, int]] = {}
        leases: set[str] = set()
        for p in pods:
            if p.lease:
                leases.add(p.lease)
                if p.node:
                    per_node = bound.setdefault(p.lease, {})
                    per_node[p.node] = per_node.get(p.node, 0) + 1
        by_gpu: dict[tuple[str, str, str], list[str]] = {}
        for n in inventory.nodes:
            if n.model and n.gpus_total and not n.unsellable:
                by_gpu.setdefault((n.model, n.ram_class, n.interface), []).append(n.name)
        return cls(
            inventory,
            {lease: tuple(sorted(nodes.items())) for lease, nodes in bound.items()},
            frozenset(leases),
            {n.name: n.free for n in inventory.nodes},
            {n.name: n for n in inventory.nodes},
            {k: tuple(v) for k, v in by_gpu.items()},
        )


class Reservations:
    """Holds capacity per order. ``refresh`` feeds it the latest cluster snapshot."""

    def __init__(
        self,
        storage_capacity: Mapping[str, int] | None = None,
        hold_blocks: int = DEFAULT_HOLD_BLOCKS,
        height: Callable[[], int] = lambda: 0,
    ) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, Reservation] = {}
        self._snapshot = _Snapshot()
        self._held_by_node: dict[str, Resources] = {}  # every outstanding hold, summed per node (exact)
        self._free = _FreeIndex(_Snapshot(), {})  # snapshot free minus those sums, indexed
        self._storage_capacity = dict(storage_capacity or {})
        self._storage_used: dict[str, int] = {}
        self.hold_blocks = hold_blocks
        self.height = height
        self._freed = 0  # bumped whenever capacity may have come back (see ``freed``)

    @property
    def freed(self) -> int:
        """A counter that moves whenever capacity may have come back: a hold given back or expired, or a
        snapshot whose free capacity or used storage differs from the last. Equal values: nothing freed."""
        with self._lock:
            return self._freed

    # -- cluster state ---------------------------------------------------------------------------
    def refresh(
        self, inventory: Inventory, pods: Iterable[PodView] = (), storage_used: Mapping[str, int] | None = None
    ) -> None:
        """Take a new snapshot (computed without reservations). A won lease's hold shrinks by its bound
        pods and is dropped once all of its replicas are bound: from then on the pods are what counts."""
        snapshot = _Snapshot.of(inventory, pods)
        with self._lock:
            if snapshot.free != self._snapshot.free:
                self._freed += 1
            self._snapshot = snapshot
            if storage_used is not None and storage_used != self._storage_used:
                self._storage_used = dict(storage_used)
                self._freed += 1
            for order_id, r in list(self._held.items()):
                if r.lease_id:
                    bound = snapshot.bound.get(r.lease_id, ())
                    if _pods(bound) >= r.replicas:
                        del self._held[order_id]
                    elif bound != r.bound:
                        self._held[order_id] = replace(r, bound=bound)
            self._expire_locked()
            self._recount_locked()

    def _recount_locked(self) -> None:
        """Rebuild the per-node hold sums and the free index from the snapshot (after a refresh)."""
        held: dict[str, Resources] = {}
        for r in self._held.values():
            for node, res in r.per_node().items():
                held[node] = held.get(node, Resources()) + res
        self._held_by_node = held
        self._free = _FreeIndex(self._snapshot, {n: self._free_on(n) for n in self._snapshot.free})

    def _free_on(self, node: str) -> Resources:
        return (self._snapshot.free[node] - self._held_by_node.get(node, Resources())).clamped()

    def _take_locked(self, r: Reservation, sign: int) -> None:
        """Add (sign 1) or give back (sign -1) a hold: the node's free capacity is recomputed from the
        snapshot and the exact sum of holds, so giving back never frees more than the snapshot has."""
        for node, res in r.per_node().items():
            self._held_by_node[node] = self._held_by_node.get(node, Resources()) + res.scaled(sign)
            if node in self._free.free:
                self._free.set(node, self._free_on(node))

    def reserved_by_node(self) -> dict[str, Resources]:
        with self._lock:
            return {n: res for n, res in self._held_by_node.items() if res != Resources()}

    def _expire_locked(self) -> list[str]:
        now = self.height()
        gone = [o for o, r in self._held.items() if not r.lease_id and r.expires_at <= now]
        for o in gone:
            self._take_locked(self._held.pop(o), -1)
        if gone:
            self._freed += 1
        return gone

    # -- operations ------------------------------------------------------------------------------
    def reserve(
        self, order_id: str, units: Iterable[UnitDemand], hold_blocks: int | None = None
    ) -> Reservation | NoFit:
        demands = tuple(units)
        with self._lock:
            self._expire_locked()
            if order_id in self._held:
                return NoFit(order_id, "duplicate_order", f"order {order_id} already holds a reservation")
            outcome = _fit(order_id, demands, self._snapshot, self._free)
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
                self.height() + (hold_blocks if hold_blocks is not None else self.hold_blocks),
            )
            self._held[order_id] = reservation
            self._take_locked(reservation, 1)
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
            r = self._held.pop(order_id, None)
            if r is None:
                return False
            self._take_locked(r, -1)
            self._freed += 1
            return True

    def allocate(self, order_id: str, lease_id: str) -> bool:
        """The lease was won: the hold no longer expires; it shrinks as the lease's pods are bound.
        False when there is no hold for the order (it expired, or was never made)."""
        with self._lock:
            r = self._held.get(order_id)
            if r is None:
                return False
            bound = self._snapshot.bound.get(lease_id, ())
            self._take_locked(r, -1)
            if _pods(bound) >= r.replicas:
                del self._held[order_id]
            else:
                r = replace(r, lease_id=lease_id, bound=bound)
                self._held[order_id] = r
                self._take_locked(r, 1)
            return True

    def lease_has_pods(self, lease_id: str) -> bool:
        with self._lock:
            return lease_id in self._snapshot.leases_with_pods

    def leases_running(self) -> frozenset[str]:
        """The leases (by id) that have pods in the cluster in the last snapshot."""
        with self._lock:
            return self._snapshot.leases_with_pods

    def expire(self) -> list[str]:
        """Drop unanswered holds whose height has passed; returns their order ids."""
        with self._lock:
            return self._expire_locked()

    def get(self, order_id: str) -> Reservation | None:
        with self._lock:
            return self._held.get(order_id)

    def holds(self) -> tuple[Reservation, ...]:
        with self._lock:
            return tuple(self._held.values())

    def count(self) -> int:
        with self._lock:
            return len(self._held)


def _pods(bound: tuple[tuple[str, int], ...]) -> int:
    return sum(n for _, n in bound)


def _sum_persistent(demands: tuple[UnitDemand, ...]) -> tuple[tuple[str, int], ...]:
    acc: dict[str, int] = {}
    for d in demands:
        for cls, size in d.persistent:
            acc[cls] = acc.get(cls, 0) + size * d.count
    return tuple(sorted(acc.items()))


def _fits_times(need: Resources, free: Resources) -> int:
    """How many replicas of ``need`` fit in ``free`` (a large number when nothing is needed)."""
    most = 1 << 62
    for n, f in (
        (need.gpus, free.gpus),
        (need.cpu_millis, free.cpu_millis),
        (need.memory_bytes, free.memory_bytes),
        (need.ephemeral_bytes, free.ephemeral_bytes),
    ):
        if n > 0:
            most = min(most, f // n)
            if most <= 0:
                return 0
    return most


_ALL = ("", "", "")  # the index over every node (cpu-only replicas)
_Entry = tuple[int, int, int, str]  # (free cpu, free memory, free ephemeral, node name): best fit first


class _FreeIndex:
    """Free capacity per node, indexed by GPU kind and free GPUs, each bucket sorted by (cpu, memory,
    ephemeral, name): the tightest node that fits is found without a scan over all nodes."""

    def __init__(self, snapshot: _Snapshot, free: Mapping[str, Resources]) -> None:
        self.free: dict[str, Resources] = dict(free)
        self.kind: dict[str, tuple[str, str, str]] = {}
        for kind, names in snapshot.by_gpu.items():
            for name in names:
                self.kind[name] = kind
        self.levels: dict[tuple[str, str, str], dict[int, list[_Entry]]] = {}
        for name, res in self.free.items():
            for kind in self._kinds(name):
                self.levels.setdefault(kind, {}).setdefault(res.gpus, []).append(_entry(name, res))
        for by_level in self.levels.values():
            for bucket in by_level.values():
                bucket.sort()

    def _kinds(self, name: str) -> tuple[tuple[str, str, str], ...]:
        kind = self.kind.get(name)
        return (_ALL, kind) if kind is not None else (_ALL,)

    def set(self, name: str, res: Resources) -> None:
        old = self.free[name]
        self.free[name] = res
        for kind in self._kinds(name):
            by_level = self.levels[kind]
            bucket = by_level[old.gpus]
            entry = _entry(name, old)
            i = bisect.bisect_left(bucket, entry)
            if i < len(bucket) and bucket[i] == entry:
                del bucket[i]
            bisect.insort(by_level.setdefault(res.gpus, []), _entry(name, res))

    def kinds_for(self, demand: UnitDemand) -> list[tuple[str, str, str]]:
        if not demand.per_replica.gpus:
            return [_ALL]
        return [k for k in self.levels if k != _ALL and any(o.matches(*k) for o in demand.gpu_options)]

    def candidates(self, kinds: list[tuple[str, str, str]], need: Resources) -> Iterator[str]:
        """Node names in best-fit order (fewest GPUs left, then cpu, memory): only buckets with enough
        free GPUs, each entered past the nodes with too little cpu."""
        levels = sorted({lvl for k in kinds for lvl in self.levels.get(k, {}) if lvl >= need.gpus})
        floor = (need.cpu_millis, -1, -1, "")
        for level in levels:
            runs = []
            for k in kinds:
                bucket = self.levels.get(k, {}).get(level)
                if bucket:
                    runs.append(itertools.islice(bucket, bisect.bisect_left(bucket, floor), None))
            for entry in heapq.merge(*runs) if len(runs) > 1 else (runs[0] if runs else ()):
                yield entry[3]


def _entry(name: str, res: Resources) -> _Entry:
    return (res.cpu_millis, res.memory_bytes, res.ephemeral_bytes, name)


def _eligible(demand: UnitDemand, snapshot: _Snapshot, index: _FreeIndex) -> tuple[str, ...]:
    """Every node a replica of ``demand`` may go to (for explaining a shortage; fitting uses the index)."""
    if not demand.per_replica.gpus:
        return tuple(snapshot.free)
    return tuple(sorted(n for kind in index.kinds_for(demand) for n in snapshot.by_gpu.get(kind, ())))


def _fit(
    order_id: str, demands: tuple[UnitDemand, ...], snapshot: _Snapshot, index: _FreeIndex
) -> tuple[Placement, ...] | NoFit:
    free: dict[str, Resources] = {}  # only the nodes this order touches are copied
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
        if demand.count <= 0:
            continue
        need = demand.per_replica
        kinds = index.kinds_for(demand)
        if need.gpus and not kinds:
            wanted = ", ".join(o.describe() for o in demand.gpu_options) or "an NVIDIA GPU"
            return NoFit(order_id, "gpu_model_unavailable", f"no sellable node has {wanted}")
        left_to_place = demand.count
        for name in index.candidates(kinds, need):  # tightest node first, as many replicas as fit there
            f = free[name] if name in free else index.free[name]
            take = min(_fits_times(need, f), left_to_place)
            if not take:
                continue
            free[name] = f - need.scaled(take)
            node = snapshot.nodes.get(name)
            gpu = (node.model, node.ram_class, node.interface) if need.gpus and node is not None else ("", "", "")
            placements.append(Placement(name, demand.unit_id, need, take, gpu))
            left_to_place -= take
            if not left_to_place:
                break
        if left_to_place:
            eligible = _eligible(demand, snapshot, index)
            pool = {n: free[n] if n in free else index.free[n] for n in eligible}
            return NoFit(order_id, *_shortage(need, demand, eligible, pool))
    return tuple(placements)


def _shortage(
    need: Resources, demand: UnitDemand, pool: tuple[str, ...], free: Mapping[str, Resources]
) -> tuple[str, str]:
    best = max((free[n] for n in pool), key=lambda r: (r.gpus, r.cpu_millis), default=Resources())
    if demand.count > 1 and any(_fits_times(need, free[n]) for n in pool):
        return (
            "insufficient_gpu" if need.gpus else "insufficient_cpu",
            f"unit {demand.unit_id}: {demand.count} replicas do not all fit; fewer replicas would",
        )
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
