"""Cluster inventory accounting and reservations: fits, reasons, lifecycle, and no overcommit under any
interleaving of reserve / release / allocate / pods appearing."""

from __future__ import annotations

import random
import textwrap
import threading

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import sdl
from provider.domain import GpuRequirement, NodeGpuFacts, NodeView, PodView, Resources, UnitDemand
from provider.inventory.cluster import Inventory, compute
from provider.inventory.reservations import NoFit, Reservation, Reservations

GI = 1024**3


def gpu_node(name: str, model: str = "h100", gpus: int = 8, **facts: object) -> NodeView:
    ram = {"h100": "80Gi", "a100": "80Gi", "rtx4090": "24Gi"}.get(model, "")
    iface = "pcie" if model == "rtx4090" else "sxm"
    base = {"model": model, "ram_class": ram, "interface": iface, "physical_gpus": gpus}
    base.update(facts)
    replicas = int(base.get("replicas", 1))  # type: ignore[call-overload]
    return NodeView(name, Resources(192_000, 2048 * GI, 3500 * GI, gpus * replicas), NodeGpuFacts(**base))  # type: ignore[arg-type]


def pod(node: str, gpus: int = 0, cpu: int = 1000, lease: str = "", name: str = "p") -> PodView:
    return PodView("ns", name, node, Resources(cpu, GI, 0, gpus), lease=lease)


def demand(gpus: int, count: int = 1, model: str = "h100", cpu: int = 1000, unit_id: int = 1) -> UnitDemand:
    options = (GpuRequirement(model),) if gpus else ()
    return UnitDemand(unit_id, count, Resources(cpu, GI, GI, gpus), options)


# -- accounting ------------------------------------------------------------------------------------


def test_allocated_and_free_per_node_and_model() -> None:
    inv = compute([gpu_node("a"), gpu_node("b"), gpu_node("c", "rtx4090", 4)], [pod("a", 3), pod("a", 1), pod("c", 4)])
    a = inv.node("a")
    assert a is not None and (a.gpus_total, a.gpus_allocated, a.gpus_free) == (8, 4, 4)
    summary = {m.model: m for m in inv.by_model()}
    assert (summary["h100"].total, summary["h100"].allocated, summary["h100"].free) == (16, 4, 12)
    assert summary["rtx4090"].free == 0


def test_time_sliced_gpus_are_counted_physically_and_never_sold_whole() -> None:
    node = gpu_node("ts", gpus=8, replicas=4, sharing="time-slicing")
    assert node.allocatable.gpus == 32
    n = compute([node], [pod("ts", 5)]).nodes[0]
    assert n.gpus_total == 8 and n.gpus_allocated == 2 and n.gpus_free == 0
    assert "time-slicing x4" in n.sharing and "shared" in n.unsellable


def test_not_ready_and_cordoned_nodes_sell_nothing() -> None:
    down = NodeView("d", Resources(1000, GI, GI, 8), NodeGpuFacts("h100", "80Gi", "sxm", physical_gpus=8), ready=False)
    cordoned = NodeView(
        "c", Resources(1000, GI, GI, 8), NodeGpuFacts("h100", "80Gi", "sxm", physical_gpus=8), schedulable=False
    )
    inv = compute([down, cordoned], [])
    assert [n.gpus_free for n in inv.nodes] == [0, 0]
    assert {n.unsellable for n in inv.nodes} == {"node not Ready", "node cordoned"}


def test_unhealthy_gpus_are_not_sold() -> None:
    n = compute([gpu_node("a", healthy_gpus=6)], [pod("a", 1)]).nodes[0]
    assert n.gpus_free == 5


def test_mig_mixed_resources_are_reported() -> None:
    node = NodeView(
        "m", Resources(1000, GI, GI, 0), NodeGpuFacts("a100", physical_gpus=1), mig={"nvidia.com/mig-1g.10gb": 7}
    )
    p = PodView("ns", "p", "m", Resources(), mig={"nvidia.com/mig-1g.10gb": 2})
    assert compute([node], [p]).nodes[0].mig == {"nvidia.com/mig-1g.10gb": (7, 2)}


# -- reservations ----------------------------------------------------------------------------------


def reservations_on(
    *nodes: NodeView, pods: list[PodView] | None = None, height: list[int] | None = None, **kw: object
) -> Reservations:
    now = height if height is not None else [0]
    r = Reservations(height=lambda: now[0], **kw)  # type: ignore[arg-type]
    r.refresh(compute(nodes, pods or []), pods or [])
    return r


def test_all_gpus_of_a_replica_land_on_one_node() -> None:
    r = reservations_on(gpu_node("a", gpus=4), gpu_node("b", gpus=4))
    assert isinstance(r.reserve("o1", [demand(3)]), Reservation)
    outcome = r.reserve("o2", [demand(3)])
    assert isinstance(outcome, Reservation) and outcome.placements[0].node != r.get("o1").placements[0].node  # type: ignore[union-attr]
    no = r.reserve("o3", [demand(2)])
    assert isinstance(no, NoFit) and no.reason == "insufficient_gpu"


def test_model_ram_and_interface_must_match() -> None:
    r = reservations_on(gpu_node("a", "a100"), gpu_node("b", "rtx4090", 4))
    assert isinstance(r.reserve("o1", [UnitDemand(1, 1, Resources(1, 1, 0, 1), (GpuRequirement("h100"),))]), NoFit)
    pcie = UnitDemand(1, 1, Resources(1, 1, 0, 1), (GpuRequirement("a100", "80Gi", "pcie"),))
    assert r.reserve("o2", [pcie]).reason == "gpu_model_unavailable"  # type: ignore[union-attr]
    wildcard = UnitDemand(1, 1, Resources(1, 1, 0, 4), (GpuRequirement("*"),))
    assert isinstance(r.reserve("o3", [wildcard]), Reservation)


def test_every_replica_of_every_unit_must_fit() -> None:
    r = reservations_on(gpu_node("a"), gpu_node("b"))
    outcome = r.reserve("o", [demand(4, count=3), demand(0, count=2, cpu=500, unit_id=2)])
    assert isinstance(outcome, Reservation) and outcome.replicas == 5
    assert sorted((p.unit_id, p.count) for p in outcome.placements if p.unit_id == 1) in ([(1, 1), (1, 2)],)
    assert isinstance(r.reserve("o2", [demand(4, count=2)]), NoFit)


def test_release_and_expiry_give_capacity_back() -> None:
    height = [100]
    r = reservations_on(gpu_node("a"), height=height, hold_blocks=10)
    assert isinstance(r.reserve("o1", [demand(8)]), Reservation)
    assert isinstance(r.reserve("o2", [demand(1)]), NoFit)
    assert r.release("o1") and not r.release("o1")
    assert isinstance(r.reserve("o2", [demand(8)]), Reservation)
    height[0] = 109
    assert isinstance(r.reserve("o3", [demand(8)]), NoFit)  # one block before the hold lapses
    height[0] = 110  # holds are counted in chain heights, not wall-clock time
    assert r.expire() == ["o2"]
    assert isinstance(r.reserve("o3", [demand(8)]), Reservation)
    assert r.get("o2") is None


def test_a_lease_with_pending_pods_keeps_its_capacity_held() -> None:
    """4 x 8-GPU lease, one pod bound and three Pending: the three stay held, nothing is sold twice."""
    nodes = [gpu_node(f"n{i}") for i in range(5)]
    r = reservations_on(*nodes)
    held = r.reserve("order-1", [demand(8, count=4)])
    assert isinstance(held, Reservation) and r.allocate("order-1", "lease-1")
    pods = [pod(held.placements[0].node, 8, lease="lease-1", name="p0")] + [
        pod("", 8, lease="lease-1", name=f"p{i}") for i in range(1, 4)
    ]
    r.refresh(compute(nodes, pods), pods)
    inv = compute(nodes, pods, r.reserved_by_node())
    assert sum(n.gpus_free for n in inv.nodes) == 8  # 40 - 8 bound - 24 still held
    assert sum(res.gpus for res in r.reserved_by_node().values()) == 24
    assert isinstance(r.reserve("order-2", [demand(8, count=2)]), NoFit)
    bound = [pod(p.node, 8, lease="lease-1", name=f"p{i}") for i, p in enumerate(held.placements)]
    r.refresh(compute(nodes, bound), bound)
    assert r.get("order-1") is None and r.reserved_by_node() == {}  # all bound: the pods count now


def test_fitting_is_linear_in_nodes_not_replicas() -> None:
    """A hostile order of a million cpu-only replicas is answered at once, with aggregated placements."""
    r = reservations_on(*(gpu_node(f"n{i}", gpus=8) for i in range(20)))
    huge = UnitDemand(1, 1_000_000, Resources(10, 1024**2, 0, 0))
    outcome = r.reserve("o1", [huge])
    assert isinstance(outcome, NoFit)
    fits = UnitDemand(1, 5_000, Resources(10, 1024**2, 0, 0))
    held = r.reserve("o2", [fits])
    assert isinstance(held, Reservation) and held.replicas == 5_000 and len(held.placements) <= 20


def test_allocation_is_counted_once_through_a_manifest_update() -> None:
    node = gpu_node("a")
    r = reservations_on(node)
    assert isinstance(r.reserve("order-1", [demand(4)]), Reservation)
    assert r.allocate("order-1", "lease-1")
    assert r.reserved_by_node()["a"].gpus == 4  # won, pods not there yet: still held, never expires
    pods = [pod("a", 4, lease="lease-1")]
    r.refresh(compute([node], pods), pods)
    assert r.reserved_by_node() == {}  # the pods count now, not the hold
    updated = [pod("a", 4, lease="lease-1", name="p2")]  # a manifest update replaced the pod
    r.refresh(compute([node], updated), updated)
    inv = compute([node], updated, r.reserved_by_node())
    assert inv.nodes[0].gpus_free == 4
    assert isinstance(r.reserve("order-2", [demand(4)]), Reservation)
    assert isinstance(r.reserve("order-3", [demand(1)]), NoFit)


def test_persistent_storage_is_held_per_class() -> None:
    r = reservations_on(gpu_node("a"), storage_capacity={"beta3": 100 * GI})
    d = UnitDemand(1, 1, Resources(1000, GI, 0, 0), persistent=(("beta3", 60 * GI),))
    assert isinstance(r.reserve("o1", [d]), Reservation)
    no = r.reserve("o2", [d])
    assert isinstance(no, NoFit) and no.reason == "insufficient_persistent_storage"
    other = UnitDemand(1, 1, Resources(1000, GI, 0, 0), persistent=(("beta1", GI),))
    assert "no persistent storage of class 'beta1'" in r.reserve("o3", [other]).detail  # type: ignore[union-attr]


def test_demand_from_an_sdl_group() -> None:
    text = textwrap.dedent(
        """\
        version: "2.0"
        services:
          web: {image: vllm, expose: [{port: 80, to: [{global: true}]}], params: {storage: {data: {mount: /d}}}}
        profiles:
          compute:
            web:
              resources:
                cpu: {units: 8}
                memory: {size: 64Gi}
                storage: [{size: 20Gi}, {name: data, size: 100Gi, attributes: {persistent: true, class: beta3}}]
                gpu: {units: 2, attributes: {vendor: {nvidia: [{model: h100, ram: 80Gi}, {model: a100}]}}}
          placement:
            dc: {pricing: {web: {denom: uakt, amount: 100}}}
        deployment:
          web: {dc: {profile: web, count: 3}}
        """
    )
    (unit,) = UnitDemand.from_group(sdl.parse(text).groups[0])
    assert unit.count == 3
    assert unit.per_replica == Resources(8000, 64 * GI, 20 * GI, 2)
    assert set(unit.gpu_options) == {GpuRequirement("h100", "80Gi"), GpuRequirement("a100")}
    assert unit.persistent == (("beta3", 100 * GI),)


def test_restart_rebuilds_from_open_bids() -> None:
    node = gpu_node("a")
    before = reservations_on(node)
    before.reserve("o1", [demand(6)])
    after = reservations_on(node)  # a new process: empty
    for held in before.holds():  # the bid engine re-reserves its open bids from the chain
        after.reserve(held.order_id, [demand(6)])
    assert after.reserved_by_node() == before.reserved_by_node()


# -- properties ------------------------------------------------------------------------------------

NODES = [gpu_node("n1", gpus=8), gpu_node("n2", gpus=4), gpu_node("n3", "a100", 8)]


def assert_within_capacity(r: Reservations, pods: list[PodView]) -> None:
    used: dict[str, Resources] = {}
    for p in pods:
        used[p.node] = used.get(p.node, Resources()) + p.requests
    held = r.reserved_by_node()
    for node in NODES:
        total = used.get(node.name, Resources()) + held.get(node.name, Resources())
        assert total.fits_in(node.allocatable), (node.name, total)


class ReservationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.height = [0]
        self.pods: list[PodView] = []
        self.r = Reservations(height=lambda: self.height[0], hold_blocks=5)
        self.sync()
        self.won: dict[str, str] = {}
        self.intended: dict[str, str] = {}

    def sync(self) -> None:
        self.r.refresh(compute(NODES, self.pods), self.pods)

    @rule(
        order=st.integers(0, 4),
        gpus=st.integers(0, 8),
        count=st.integers(1, 3),
        model=st.sampled_from(["h100", "a100", "*"]),
    )
    def reserve(self, order: int, gpus: int, count: int, model: str) -> None:
        self.r.reserve(f"o{order}", [demand(gpus, count, model)])

    @rule(order=st.integers(0, 4))
    def release(self, order: int) -> None:
        """A bid lost or closed (a won lease is released only when it closes)."""
        if f"o{order}" not in self.won:
            self.r.release(f"o{order}")

    @rule(data=st.data())
    def allocate(self, data: st.DataObject) -> None:
        """One of the held orders wins its lease."""
        open_holds = sorted(h.order_id for h in self.r.holds() if not h.lease_id)
        if not open_holds:
            return
        order = data.draw(st.sampled_from(open_holds))
        if self.r.allocate(order, "lease" + order[1:]):
            self.won[order] = "lease" + order[1:]

    @rule(data=st.data(), bound=st.integers(0, 6))
    def pods_appear(self, data: st.DataObject, bound: int) -> None:
        """The deployer creates a won lease's pods: the first ``bound`` are placed where the hold was,
        the others stay Pending (not bound to a node yet)."""
        if not self.won:
            return
        held = self.r.get(data.draw(st.sampled_from(sorted(self.won))))
        if held is None or not held.lease_id or any(p.lease == held.lease_id for p in self.pods):
            return
        i = 0
        for p in held.placements:
            for _ in range(p.count):
                name = f"{held.lease_id}-{i}"
                self.intended[name] = p.node
                node = p.node if i < bound else ""
                self.pods.append(PodView("ns", name, node, p.resources, lease=held.lease_id))
                i += 1
        self.sync()

    @rule(order=st.integers(0, 4))
    def pending_pods_bind(self, order: int) -> None:
        """The scheduler binds a lease's Pending pods (within the affinity the hold chose)."""
        lease = f"lease{order}"
        for i, p in enumerate(self.pods):
            if p.lease == lease and not p.node:
                self.pods[i] = PodView(p.namespace, p.name, self.intended[p.name], p.requests, lease=p.lease)
        self.sync()

    @rule(order=st.integers(0, 4))
    def lease_closes(self, order: int) -> None:
        self.pods = [p for p in self.pods if p.lease != f"lease{order}"]
        if self.won.pop(f"o{order}", None):
            self.r.release(f"o{order}")
        self.sync()

    @rule(blocks=st.integers(0, 8))
    def blocks_pass(self, blocks: int) -> None:
        self.height[0] += blocks
        self.r.expire()

    @invariant()
    def never_overcommits(self) -> None:
        """Bound pods + holds + what Pending lease pods still need never exceed a node, and the GPUs
        sold as free never include a live lease's Pending replicas."""
        assert_within_capacity(self.r, [p for p in self.pods if p.node])
        inv = compute(NODES, self.pods, self.r.reserved_by_node())
        pending_gpus = sum(p.requests.gpus for p in self.pods if not p.node)
        total = sum(n.allocatable.gpus for n in NODES)
        bound_gpus = sum(p.requests.gpus for p in self.pods if p.node)
        assert sum(n.gpus_free for n in inv.nodes) <= total - bound_gpus - pending_gpus

    def teardown(self) -> None:
        for held in self.r.holds():
            self.r.release(held.order_id)
        assert self.r.reserved_by_node() == {}  # nothing leaks
        inv = compute(NODES, self.pods, self.r.reserved_by_node())
        for n in inv.nodes:  # what is free is exactly what the bound pods leave
            used = sum((p.requests.gpus for p in self.pods if p.node == n.name), 0)
            assert n.gpus_free == max(0, n.allocatable.gpus - used), n


TestReservationInterleavings = ReservationMachine.TestCase
TestReservationInterleavings.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_concurrent_threads_never_overcommit() -> None:
    r = Reservations(hold_blocks=3600)
    r.refresh(compute(NODES, []), [])
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(400):
                order = f"o{rnd.randrange(30)}"
                op = rnd.random()
                if op < 0.6:
                    r.reserve(
                        order, [demand(rnd.randrange(0, 9), rnd.randrange(1, 3), rnd.choice(["h100", "a100", "*"]))]
                    )
                elif op < 0.9:
                    r.release(order)
                else:
                    r.allocate(order, "lease-" + order)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def checker() -> None:
        while not stop.is_set():
            try:
                assert_within_capacity(r, [])
            except AssertionError as e:  # pragma: no cover
                errors.append(e)
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    check = threading.Thread(target=checker)
    check.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    check.join()
    assert not errors
    assert_within_capacity(r, [])
    for held in r.holds():
        r.release(held.order_id)
    assert r.reserved_by_node() == {}
    assert Inventory(()) == compute([], [])


def test_releasing_a_hold_on_a_node_that_filled_up_meanwhile_frees_only_what_is_left() -> None:
    """A hold larger than what a later snapshot leaves free: giving it back frees the snapshot's free
    capacity, not the whole hold (which the other pods now use)."""
    node = gpu_node("a")
    r = reservations_on(node)
    assert isinstance(r.reserve("o1", [demand(8)]), Reservation)
    others = [pod("a", 4, name="someone-else")]  # scheduled by someone who does not see our holds
    r.refresh(compute([node], others), others)
    assert r.release("o1")
    assert isinstance(r.reserve("o2", [demand(5)]), NoFit)  # only 4 GPUs are really free
    assert isinstance(r.reserve("o3", [demand(4)]), Reservation)
