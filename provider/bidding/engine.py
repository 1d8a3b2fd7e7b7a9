"""The bid engine: follows the chain feed from a durable cursor and bids on the orders it can serve.

For each order: decide (pure policy) -> reserve capacity -> price -> bid. A lost, closed or timed-out
bid releases its hold; a won lease turns it into an allocation and is handed to the lease lifecycle; a
won lease that cannot be allocated is closed on chain with a reason, never run without capacity.

Events are handled concurrently (up to the pricing port's concurrency), each order's events in feed
order. The durable cursor only moves past events whose handling has finished (a low-water mark), so a
crash never skips one. The cursor file names the chain (chain id + genesis id): a reset or different
chain is detected, reported and answered with a fresh catch-up. Holds are counted in blocks.

Restart-safe: the start-up catch-up scans open orders and our own open bids and leases (re-reserving
what they hold), and before bidding on an order we already hold we ask the chain whether our bid
exists, so nothing is bid twice, leaked or missed. An unreachable chain never releases a hold: the
event is retried and then reconciled with the chain's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from provider.bidding.policy import GpuOffer, ProviderProfile, decide
from provider.bidding.ports import InventoryPort
from provider.bidding.pricing import GpuModels, NoPrice, PricingPort, Quote
from provider.chain.port import ChainError, ChainPort
from provider.chain.types import BidId, Coin, Event, FeedGap, Order, OrderId
from provider.domain import UnitDemand
from provider.errors import ProviderError
from provider.files import write_private
from provider.inventory.cluster import NodeInventory
from provider.inventory.reservations import DEFAULT_HOLD_BLOCKS, NoFit, Reservation
from provider.metrics import BidMetrics
from provider.money import Dec
from sdl.spec import GroupSpec, group_from_json

log = logging.getLogger("provider.bidding")
T = TypeVar("T")

# Bounded reasons for events that could not be handled (a metric label).
EVENT_FAILURES = ("malformed", "refused", "internal")


@dataclass(frozen=True)
class EngineConfig:
    state_dir: Path
    attributes: dict[str, str]
    host_uri: str = "https://provider.invalid:8443"
    deposit: Coin = field(default_factory=lambda: Coin("uakt", Dec.parse(500_000)))
    hold_blocks: int = DEFAULT_HOLD_BLOCKS  # the chain's bid timeout (50 blocks) plus a margin
    inventory_max_age: float = 5.0
    feed_wait: float = 10.0
    storage_classes: frozenset[str] = frozenset({"default", "beta1", "beta2", "beta3"})
    tenant_allow: frozenset[str] | None = None
    tenant_deny: frozenset[str] = frozenset()
    max_in_flight: int = 1000  # events read ahead of the low-water mark before the feed pauses
    retry_delays: tuple[float, ...] = (0.5, 1, 2, 5, 10)  # then the last, until the chain answers
    maintenance: bool = False  # no new bids (leases are still served); also on while <state_dir>/maintenance exists
    recheck_seconds: float = 5.0  # how often orders skipped for capacity are tried again once capacity frees
    max_waiting_orders: int = 1000  # orders remembered for that (the oldest is forgotten first)
    gap_rescan_seconds: float = 30.0  # at most one reconciliation with the chain this often after feed gaps
    register_debounce_seconds: float = 30.0  # a change in the GPU models offered must hold this long to be published


MAINTENANCE_FILE = "maintenance"  # `gpu-provider maintenance on` creates it in the state directory


def waits_for_capacity(reason: str) -> bool:
    """A skip that capacity coming back can undo (the cluster is full now, not the wrong kind of order)."""
    return reason.startswith("insufficient_")


LeaseWon = Callable[[BidId, Order], Awaitable[None]]
LeaseClosed = Callable[[BidId], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SavedCursor:
    chain_id: str
    genesis: str
    cursor: str


class BidEngine:
    def __init__(
        self,
        chain: ChainPort,
        inventory: InventoryPort,
        pricing: PricingPort,
        config: EngineConfig,
        metrics: BidMetrics,
        on_lease_won: LeaseWon | None = None,
        on_lease_closed: LeaseClosed | None = None,
    ) -> None:
        self.chain = chain
        self.me = chain.address
        self.inventory = inventory
        self.holds = inventory.reservations
        self.pricing = pricing
        self.config = config
        self.metrics = metrics
        self.on_lease_won = on_lease_won  # must not block: the lease service queues it
        self.on_lease_closed = on_lease_closed
        self.cursor_file = config.state_dir / "chain-cursor"
        self.maintenance_file = config.state_dir / MAINTENANCE_FILE
        self._maintenance = False
        self.profile = ProviderProfile(self.me, dict(config.attributes))
        self.height = 0  # the latest chain height seen: holds are counted in it
        self._refreshed_at = 0.0
        self._refresh_lock = asyncio.Lock()
        self._orders: dict[OrderId, Order] = {}
        self._chain_id = ""
        self._genesis = ""
        self._slots = asyncio.Semaphore(max(1, pricing.concurrency))
        self._tails: dict[str, asyncio.Task[None]] = {}  # per order: the last event task queued
        self._pending: deque[tuple[Event, asyncio.Task[None]]] = deque()
        self._done_cursor = ""
        self._saved_cursor = ""
        self._stop: asyncio.Event | None = None
        # open orders skipped only for want of capacity: tried again when capacity frees (oldest first)
        self._waiting: dict[OrderId, Order] = {}
        self._rechecks: dict[OrderId, asyncio.Task[None]] = {}
        self._recheck_at = 0.0
        self._recheck_freed = -1
        # capabilities: the GPU models on chain, the ones the cluster has now, and since when it has them
        self._published: frozenset[GpuOffer] | None = None
        self._capabilities: frozenset[GpuOffer] = frozenset()
        self._capabilities_since = 0.0
        # feed gaps: a reconciliation with the chain is owed (for heights from ``_gap_first``; the open
        # orders too when whole heights were lost), not before ``_rescan_at``
        self._gap_first: int | None = None
        self._orders_due = False
        self._rescan_at = 0.0
        self._gap_reasons: set[str] = set()

    # -- durable cursor --------------------------------------------------------------------------
    def load_cursor(self) -> SavedCursor | None:
        try:
            raw = json.loads(self.cursor_file.read_text())
            return SavedCursor(str(raw["chain_id"]), str(raw["genesis"]), str(raw["cursor"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):  # an old or damaged file: start over safely
            log.warning("cursor file unreadable, starting with a catch-up file=%s", self.cursor_file)
            return None

    def save_cursor(self, cursor: str) -> None:
        """Write the cursor durably (blocking: call it off the event loop)."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"chain_id": self._chain_id, "genesis": self._genesis, "cursor": cursor}).encode()
        write_private(self.cursor_file, data)

    async def _flush_cursor(self) -> None:
        cursor = self._done_cursor
        if cursor and cursor != self._saved_cursor:
            await asyncio.to_thread(self.save_cursor, cursor)
            self._saved_cursor = cursor

    # -- start-up --------------------------------------------------------------------------------
    async def refresh_inventory(self, force: bool = False) -> None:
        async with self._refresh_lock:
            if not force and time.monotonic() - self._refreshed_at <= self.config.inventory_max_age:
                return
            try:
                await asyncio.to_thread(self.inventory.refresh)
            except ProviderError:
                self.metrics.inventory_refresh_failures.inc()
                raise
            self._refreshed_at = time.monotonic()
            self.metrics.inventory_last_refresh.set(time.time())
        offers = frozenset(
            GpuOffer(n.model, n.ram_class, n.interface)
            for n in self.inventory.current.nodes
            if n.model and n.gpus_total and not n.unsellable
        )
        if offers != self.profile.gpu_offers:
            self.profile = replace(self.profile, gpu_offers=offers)
        capabilities = gpu_capabilities(self.inventory.current.nodes)
        if capabilities != self._capabilities:
            self._capabilities, self._capabilities_since = capabilities, time.monotonic()

    async def register(self) -> None:
        """Publish our attributes with the capabilities Akash's market checks a bid against: GPU models
        (capabilities/gpu/vendor/nvidia/model/<m>[/ram/<r>[/interface/<i>]]) and persistent storage classes
        (capabilities/storage/<n>/class and /persistent)."""
        await self.refresh_inventory(force=True)
        offers = self._capabilities
        attrs = dict(self.config.attributes)
        for n, storage_class in enumerate(sorted(self.config.storage_classes), start=1):
            attrs[f"capabilities/storage/{n}/class"] = storage_class
            attrs[f"capabilities/storage/{n}/persistent"] = "true"
        for offer in offers:
            base = f"capabilities/gpu/vendor/nvidia/model/{offer.model}"
            attrs[base] = "true"
            attrs[f"{base}/ram/{offer.ram_class}"] = "true"
            if offer.interface:
                attrs[f"{base}/ram/{offer.ram_class}/interface/{offer.interface}"] = "true"
        current = await self.chain.provider(self.me)
        if current is None or current.attributes != attrs or current.host_uri != self.config.host_uri:
            await self.chain.register_provider(attrs, self.config.host_uri)
            if self._published is not None:
                self.metrics.capability_updates.inc()
                log.info(
                    "capabilities published again gpu_models=%s",
                    ",".join(sorted({f"{o.model}/{o.ram_class}/{o.interface}" for o in offers})) or "none",
                )
        self._published = offers
        await self._load_audits()

    async def _republish(self) -> None:
        """Publish the GPU models again once the cluster's set has changed and held still for the debounce
        (a node joining, a model added, a node removed); a node NotReady or cordoned keeps its model."""
        if self._published is None:
            return
        if time.monotonic() - self._refreshed_at > self.config.register_debounce_seconds:
            try:
                await self.refresh_inventory()
            except ProviderError as e:
                log.warning("inventory refresh for the published GPU models failed error=%r", str(e)[:300])
                return
        if self._capabilities == self._published:
            return
        if time.monotonic() - self._capabilities_since < self.config.register_debounce_seconds:
            return
        try:
            await self.register()
        except ProviderError as e:  # tried again after the next page
            log.warning("capabilities not published, will retry error=%r", str(e)[:300])

    async def _load_audits(self) -> None:
        info = await self.chain.provider(self.me)
        self.profile = replace(
            self.profile,
            audited=info.audited if info else {},
            storage_classes=self.config.storage_classes,
            tenant_allow=self.config.tenant_allow,
            tenant_deny=self.config.tenant_deny,
        )

    async def catch_up(self) -> None:
        """Re-hold what our open bids and active leases need, then evaluate every open order."""
        await self.refresh_inventory()  # register() has just refreshed it; only older snapshots are re-read
        ours = {b.id.order for b in await self.chain.bids(provider=self.me, state="open")}
        for lease in await self.chain.leases(provider=self.me, state="active"):
            order = await self.chain.order(lease.id.order)
            if order is not None:
                self._hold(order, str(lease.id))
        await self._catch_up_orders(ours)

    async def _catch_up_orders(self, ours: set[OrderId] | None = None) -> None:
        """Evaluate every open order (at start, and when maintenance mode ends); ``ours`` have our bid."""
        if ours is None:
            ours = {b.id.order for b in await self.chain.bids(provider=self.me, state="open")}
        for order in await self.chain.orders(state="open"):
            if order.id in ours:
                self._hold(order, "")  # our bid is still open: keep its capacity
                continue
            if self.holds.get(str(order.id)) is not None:
                continue
            self._orders[order.id] = order
            await self.consider(order)

    def _hold(self, order: Order, lease_id: str) -> Reservation | NoFit | None:
        """Hold an order's capacity (allocated to ``lease_id`` when given) unless it is held already.
        None when the order's group cannot be read or a hold existed."""
        key = str(order.id)
        if self.holds.get(key) is not None:
            return None
        try:
            group = group_from_json(order.group)
        except (ValueError, ArithmeticError):
            return None
        held = self.holds.reserve(key, UnitDemand.from_group(group), self.config.hold_blocks)
        if isinstance(held, Reservation) and lease_id:
            self.holds.allocate(key, lease_id)
        self.metrics.reservations.set(self.holds.count())
        return held

    async def start(self) -> str:
        """Check which chain this is, register and catch up; returns the cursor to follow from."""
        status = await self.chain.status()
        self.height = status.height
        saved = self.load_cursor()
        self._chain_id, self._genesis = status.chain_id, status.genesis
        cursor = ""
        if saved is not None:
            if saved.chain_id == status.chain_id and status.names(saved.genesis):
                cursor = saved.cursor
                if saved.genesis != status.genesis:  # an older release's name for this chain: saved anew below
                    log.info("cursor moved to the chain's new identity old=%s new=%s", saved.genesis, status.genesis)
            else:
                self.metrics.chain_resets.inc()
                log.warning(
                    "the chain is not the one the cursor belongs to (reset or another chain): starting over "
                    "with a catch-up saved_chain=%s saved_genesis=%s chain=%s genesis=%s",
                    saved.chain_id,
                    saved.genesis,
                    status.chain_id,
                    status.genesis,
                )
        if not cursor:  # the catch-up scan covers history: follow from the current block
            cursor = f"{max(0, status.height - 1)}:{2**31}"
        await self.register()
        await self.catch_up()
        self._done_cursor = cursor
        await asyncio.to_thread(self.save_cursor, cursor)
        self._saved_cursor = cursor
        return cursor

    # -- the loop --------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        self._stop = stop = stop or asyncio.Event()
        cursor = await self._start_until_ready(stop)
        if cursor is None:
            return
        try:
            while not stop.is_set():
                if len(self._pending) >= self.config.max_in_flight:  # back-pressure: let handlers catch up
                    await asyncio.wait({self._pending[0][1]})
                    continue
                try:
                    page = await self._unless_stopped(self.chain.events(after=cursor, wait=self.config.feed_wait))
                    if page is None:  # stopped while the feed long-polled: stop now, not when it answers
                        break
                    self.metrics.feed_last_poll.set(time.time())
                    self.metrics.chain_height.set(page.height)
                except ChainError as e:
                    log.warning("chain feed unavailable error=%r retry_in=2s", str(e))
                    await self._sleep(2)
                    continue
                if page.height < _height_of(cursor):  # the chain went back in time: it was reset
                    log.warning("chain height %d is below our cursor %s: restarting", page.height, cursor)
                    await self._drain()
                    restarted = await self._start_until_ready(stop)
                    if restarted is None:
                        return
                    cursor = restarted
                    continue
                self.height = max(self.height, page.height)
                if page.gap is not None:
                    self._feed_gap(page.gap)
                for event in page.events:
                    self._dispatch(event)
                    cursor = event.cursor
                if not page.events and page.cursor and page.cursor != cursor:
                    cursor = page.cursor
                await self._expire_holds()
                await self._recheck_waiting()
                await self._rescan_after_gap()
                await self._republish()
                await self._flush_cursor()
                if self._maintenance and not self.in_maintenance():  # over: bid on what is open now
                    try:
                        await self._catch_up_orders()
                    except ProviderError as e:
                        self._maintenance = True  # try again after the next page
                        log.warning("catch-up after maintenance failed, retrying error=%r", str(e)[:300])
        finally:
            await self._drain()

    def _feed_gap(self, gap: FeedGap) -> None:
        self.metrics.feed_gaps.labels(reason=gap.reason).inc()
        self.metrics.feed_gap_blocks.labels(reason=gap.reason).inc(gap.last - gap.first + 1)
        # every pruned gap is worth a warning; a node that keeps no block results gaps on every block: once
        report = log.warning if gap.reason == "pruned" or gap.reason not in self._gap_reasons else log.debug
        self._gap_reasons.add(gap.reason)
        report(
            "chain feed gap: events of heights %d..%d may be missing (reason=%s); reconciling with the chain's "
            "open orders, bids and leases (node settings: docs/akash.md)",
            gap.first,
            gap.last,
            gap.reason,
        )
        self._gap_first = gap.first if self._gap_first is None else min(self._gap_first, gap.first)
        self._orders_due = self._orders_due or gap.reason != "block_events_not_kept"  # tx events: orders kept

    async def _rescan_after_gap(self) -> None:
        """After a gap, what its events would have told, read from the chain's state instead: leases of
        ours created in the gap are handed over as their event would have, leases closed meanwhile are
        released, and (when whole heights were lost) every open order is considered. Once the page's own
        events are handled, and at most once per ``gap_rescan_seconds``: a node that keeps nothing costs a
        scan, never a spin."""
        if self._gap_first is None or self._pending or time.monotonic() < self._rescan_at:
            return
        self._rescan_at = time.monotonic() + self.config.gap_rescan_seconds
        since, orders = self._gap_first, self._orders_due
        try:
            await self._reconcile_leases(since)
            if orders:
                await self._catch_up_orders()
        except ProviderError as e:
            log.warning("reconciliation after a feed gap failed, will retry error=%r", str(e)[:300])
            return
        if self._gap_first == since:  # no newer gap meanwhile
            self._gap_first, self._orders_due = None, False
        self.metrics.feed_rescans.inc()

    async def _reconcile_leases(self, since: int) -> None:
        """Leases of ours created from height ``since`` on that nothing here knows are won as their event
        would have won them; leases of ours that the chain says are closed are released and closed here."""
        active = {lease.id: lease for lease in await self.chain.leases(provider=self.me, state="active")}
        for bid, lease in sorted(active.items()):
            held = self.holds.get(str(bid.order))
            known = self.holds.lease_has_pods(str(bid)) if held is None else bool(held.lease_id)
            if not known and lease.created_height >= since:
                await self._won(bid)
        ours = {r.lease_id for r in self.holds.holds() if r.lease_id} | set(self.holds.leases_running())
        for text in sorted(ours):
            try:
                bid = BidId.parse(text)
            except ValueError:
                continue
            if bid.provider != self.me or bid in active:
                continue
            found = await self.chain.lease(bid)  # a list can miss one; only the lease's own answer closes it
            if found is not None and found.state != "active":
                self._release(bid.order, "closed")
                if self.on_lease_closed is not None:
                    await self.on_lease_closed(bid)

    async def _start_until_ready(self, stop: asyncio.Event) -> str | None:
        while not stop.is_set():
            try:
                return await self.start()
            except ProviderError as e:  # chain or cluster not reachable yet: wait for them, say so
                log.warning("cannot start bidding yet, retrying in 2s error=%r", str(e))
                await self._sleep(2)
        return None

    async def _unless_stopped(self, call: Coroutine[Any, Any, T]) -> T | None:
        """``call``'s result, or None (and ``call`` cancelled) when the engine is stopped first."""
        task = asyncio.ensure_future(call)
        if self._stop is None:
            return await task
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None

    async def _sleep(self, seconds: float) -> None:
        if self._stop is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _drain(self, timeout: float = 30.0) -> None:
        """Let in-flight events finish (bounded), then make the cursor durable."""
        tasks = {t for _, t in self._pending} | set(self._rechecks.values())
        if tasks:
            _, not_done = await asyncio.wait(tasks, timeout=timeout)
            for t in not_done:
                t.cancel()
            if not_done:
                await asyncio.wait(not_done)
        self._advance()
        self._pending.clear()
        self._tails.clear()
        await self._flush_cursor()

    def _in_lane(self, key: str, work: Callable[[], Coroutine[Any, Any, None]]) -> asyncio.Task[None]:
        """Run ``work()`` after the lane's last task has ended: one order's events (and rechecks of it) run
        in order, other orders' alongside."""
        previous = self._tails.get(key)

        async def after_previous() -> None:
            if previous is not None:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(previous)
            await work()

        task = asyncio.create_task(after_previous())
        self._tails[key] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._tails.get(key) is t:
                del self._tails[key]

        task.add_done_callback(done)
        return task

    def _dispatch(self, event: Event) -> None:
        task = self._in_lane(_order_key(event), lambda: self._run_event(event))
        self._pending.append((event, task))
        task.add_done_callback(lambda _: self._advance())

    def _advance(self) -> None:
        """Move the low-water mark past every finished event at the head of the queue."""
        while self._pending and self._pending[0][1].done():
            event, _ = self._pending.popleft()
            self._done_cursor = event.cursor
            self.metrics.feed_height.set(event.height)

    async def _run_event(self, event: Event) -> None:
        attempt = 0
        async with self._slots:
            while True:
                try:
                    await self.handle(event)
                    return
                except ProviderError as e:  # chain or cluster went away mid-event: retry this event
                    if isinstance(e, ChainError) and _permanent(e):  # the chain said no: asking again won't help
                        self.metrics.events_failed.labels(reason="refused").inc()
                        log.error(
                            "event skipped: the chain refused event=%s type=%s error=%r",
                            event.cursor,
                            event.type,
                            str(e),
                        )
                        return
                    delay = self.config.retry_delays[min(attempt, len(self.config.retry_delays) - 1)]
                    attempt += 1
                    self.metrics.events_retried.inc()
                    log.warning(
                        "event not handled, will retry event=%s type=%s attempt=%d retry_in=%ss error=%r",
                        event.cursor,
                        event.type,
                        attempt,
                        delay,
                        str(e),
                    )
                    if self._stop is not None and self._stop.is_set():
                        return
                    await self._sleep(delay)
                except (KeyError, ValueError, TypeError, AttributeError, ArithmeticError) as e:
                    self.metrics.events_failed.labels(reason="malformed").inc()
                    log.error(
                        "event skipped: malformed event=%s type=%s error=%r", event.cursor, event.type, str(e)[:300]
                    )
                    return
                except Exception:
                    self.metrics.events_failed.labels(reason="internal").inc()
                    log.exception("event skipped: cannot handle it event=%s type=%s", event.cursor, event.type)
                    return

    async def handle(self, event: Event) -> None:
        data = event.data
        self.height = max(self.height, event.height)
        if event.type == "order_created":
            oid = OrderId(**data["order"])
            spec = data.get("spec")
            order = (
                Order(oid, "open", spec, int(data.get("height", event.height)))
                if isinstance(spec, dict)
                else await self.chain.order(oid)
            )
            if order is not None and order.state == "open":
                self._orders[oid] = order
                await self.consider(order)
        elif event.type in ("bid_closed", "lease_created", "lease_closed"):
            raw = data.get("bid") or data.get("lease") or {}
            oid = OrderId(str(raw["owner"]), int(raw["dseq"]), int(raw["gseq"]), int(raw["oseq"]))
            mine = raw.get("provider") == self.me
            if event.type == "lease_created":
                if mine:
                    await self._won(BidId(oid, self.me))
                else:
                    self._release(oid, "lost")
            elif mine:
                self._release(oid, data.get("state") or data.get("reason", "closed"))
                if event.type == "lease_closed" and self.on_lease_closed is not None:
                    await self.on_lease_closed(BidId(oid, self.me))
        elif event.type == "order_closed":
            self._release(OrderId(**data["order"]), "order_closed")
        elif event.type == "provider_audited" and data.get("provider") == self.me:
            await self._load_audits()

    def _release(self, oid: OrderId, outcome: str) -> None:
        self._orders.pop(oid, None)
        self._forget_waiting(oid)
        if self.holds.release(str(oid)):
            self.metrics.bids_lost.labels(outcome=_bounded(outcome)).inc()
            log.info("reservation released order=%s outcome=%s", oid, outcome)
        self.metrics.reservations.set(self.holds.count())

    async def _expire_holds(self) -> None:
        """Holds unanswered past their height: close our bid on chain (Akash sends MsgCloseBid)."""
        for key in self.holds.expire():
            oid = OrderId.parse(key)
            self._orders.pop(oid, None)
            self.metrics.holds_expired.inc()
            log.info("hold expired, closing our bid order=%s height=%d", key, self.height)
            try:
                await self.chain.close_bid(oid, "hold_expired")
            except ChainError as e:  # already closed or lost on chain; or unreachable: the chain times it out
                log.info("close of expired bid not done order=%s code=%s", key, e.code)
        self.metrics.reservations.set(self.holds.count())

    async def _won(self, bid: BidId) -> None:
        key, lease_id = str(bid.order), str(bid)
        order = self._orders.pop(bid.order, None) or await self.chain.order(bid.order)
        if not self.holds.allocate(key, lease_id) and not self.holds.lease_has_pods(lease_id):
            # no hold (expired, or lost across a restart): hold again now, or refuse the lease
            await self.refresh_inventory(force=True)
            outcome = self._hold(order, lease_id) if order is not None else None
            if not isinstance(outcome, Reservation):
                reason = outcome.reason if isinstance(outcome, NoFit) else "invalid_order"
                lease = await self.chain.lease(bid)
                if lease is None or lease.state != "active":
                    return
                self.metrics.leases_refused.labels(reason=reason).inc()
                log.warning("won lease cannot be allocated, closing it lease=%s reason=%s", lease_id, reason)
                await self.chain.close_bid(bid.order, "insufficient_capacity")
                return
        self.metrics.leases_won.inc()
        self.metrics.reservations.set(self.holds.count())
        log.info("lease won lease=%s", bid)
        if self.on_lease_won is not None and order is not None:
            await self.on_lease_won(bid, order)

    async def consider(self, order: Order) -> str:
        """Decide, reserve, price and bid on one order. Returns the outcome ("bid" or a skip reason)."""
        started = time.perf_counter()
        self.metrics.orders_seen.inc()
        self.metrics.last_order_seen.set(time.time())
        outcome = await self._consider(order)
        if outcome != "bid":
            self.metrics.orders_skipped.labels(reason=outcome).inc()
            if outcome != "already_bid":
                self._orders.pop(order.id, None)
            if waits_for_capacity(outcome):
                self._wait_for_capacity(order)
                return outcome
        else:
            self.metrics.decision_seconds.observe(time.perf_counter() - started)
        self._forget_waiting(order.id)
        return outcome

    # -- orders waiting for capacity ------------------------------------------------------------------
    def _wait_for_capacity(self, order: Order) -> None:
        self._waiting.pop(order.id, None)
        self._waiting[order.id] = order
        while len(self._waiting) > self.config.max_waiting_orders:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            log.info("order no longer waiting for capacity (too many wait) order=%s", oldest)
        self.metrics.orders_waiting.set(len(self._waiting))

    def _forget_waiting(self, oid: OrderId) -> None:
        if self._waiting.pop(oid, None) is not None:
            self.metrics.orders_waiting.set(len(self._waiting))

    async def _recheck_waiting(self) -> None:
        """Try the waiting orders again once capacity may have come back (a hold released or expired, a
        lease's pods gone, a node added): at most every ``recheck_seconds``, and only after a change."""
        if not self._waiting or time.monotonic() < self._recheck_at:
            return
        self._recheck_at = time.monotonic() + self.config.recheck_seconds
        try:
            await self.refresh_inventory()
        except ProviderError as e:
            log.warning("inventory refresh for waiting orders failed error=%r", str(e)[:300])
            return
        freed = self.holds.freed
        if freed == self._recheck_freed:
            return
        self._recheck_freed = freed
        for order in list(self._waiting.values()):
            if order.id not in self._rechecks:
                self._schedule_recheck(order)

    def _schedule_recheck(self, order: Order) -> None:
        task = self._in_lane(str(order.id), lambda: self._recheck(order))  # the lane ``_order_key`` gives its events
        self._rechecks[order.id] = task
        task.add_done_callback(lambda _: self._rechecks.pop(order.id, None))

    async def _recheck(self, order: Order) -> None:
        """One waiting order, in its lane (after its own events) so a close or a loss is seen first."""
        if order.id not in self._waiting:  # closed, lost or forgotten meanwhile
            return
        async with self._slots:
            try:
                outcome = await self._consider(order)
            except ProviderError as e:  # chain or cluster away: it stays waiting for the next change
                log.info("recheck of a waiting order not done order=%s error=%r", order.id, str(e)[:300])
                self._recheck_freed = -1
                return
            except Exception:
                log.exception("recheck of a waiting order failed order=%s", order.id)
                self._forget_waiting(order.id)
                return
        if waits_for_capacity(outcome) or outcome == "maintenance":
            return  # still full (or paused): keep waiting
        self._forget_waiting(order.id)
        if outcome == "bid":
            self._orders[order.id] = order
            self.metrics.bids_after_waiting.inc()
            log.info("order bid on once capacity came back order=%s", order.id)
        else:
            log.info("waiting order skipped order=%s reason=%s", order.id, outcome)

    def in_maintenance(self) -> bool:
        """Maintenance mode: the config says so, or the operator's flag file exists (checked per order)."""
        on = self.config.maintenance or self.maintenance_file.exists()
        if on != self._maintenance:
            log.warning("maintenance mode %s: %s", "on" if on else "off", "no new bids" if on else "bidding again")
            self._maintenance = on
        self.metrics.maintenance.set(1 if on else 0)
        return on

    async def _consider(self, order: Order) -> str:
        if self.in_maintenance():
            log.info("order skipped order=%s reason=maintenance", order.id)
            return "maintenance"
        try:
            group = group_from_json(order.group)
        except (ValueError, ArithmeticError) as e:
            log.info("order skipped order=%s reason=invalid_order detail=%r", order.id, str(e))
            return "invalid_order"
        decision = decide(order.id.owner, group, self.profile)
        if not decision.bid:
            log.info("order skipped order=%s reason=%s detail=%r", order.id, decision.reason, decision.detail)
            return decision.reason
        await self.refresh_inventory()
        key = str(order.id)
        held = self.holds.reserve(key, UnitDemand.from_group(group), self.config.hold_blocks)
        if isinstance(held, NoFit):
            if held.reason != "duplicate_order":
                log.info("order skipped order=%s reason=%s detail=%r", order.id, held.reason, held.detail)
                return held.reason
            existing = self.holds.get(key)
            if existing is None:
                return "already_bid"
            # we hold it already (catch-up, or a retried event): does our bid exist on chain?
            known = await self._reconcile(order)
            if known is not None:
                return known
            held = existing
        try:
            quote = await self._price(order, group, held)
            if isinstance(quote, NoPrice):
                self.holds.release(key)
                log.info("order skipped order=%s reason=%s detail=%r", order.id, quote.reason, quote.detail)
                return quote.reason
        except Exception:  # a bug or a hostile input in pricing: never leak the hold
            self.holds.release(key)
            log.exception("order skipped order=%s reason=internal_error", order.id)
            return "internal_error"
        return await self._bid(order, quote)

    async def _bid(self, order: Order, quote: Quote) -> str:
        key = str(order.id)
        try:
            await self.chain.create_bid(order.id, Coin(quote.denom, quote.amount), self.config.deposit)
        except ChainError as e:
            if e.unreachable:
                raise  # keep the hold; the event is retried and reconciled with the chain's answer
            if e.code == "bid_exists":
                known = await self._reconcile(order)
                if known is not None:
                    return known
                self._release(order.id, "missing")
                return "bid_not_open"
            self.holds.release(key)
            self.metrics.bids_failed.labels(code=_bounded(e.code)).inc()
            log.warning("bid refused order=%s code=%s error=%r", order.id, e.code, str(e))
            return "bid_refused"
        except Exception:
            self.holds.release(key)
            log.exception("order skipped order=%s reason=internal_error", order.id)
            return "internal_error"
        self.metrics.bids_placed.inc()
        self.metrics.last_bid_placed.set(time.time())
        self.metrics.reservations.set(self.holds.count())
        log.info("bid placed order=%s price=%s%s", order.id, quote.amount, quote.denom)
        return "bid"

    async def _reconcile(self, order: Order) -> str | None:
        """Ask the chain for our bid on an order we hold. Alive (open, or active: won) keeps the hold:
        "already_bid"; closed or lost releases it: "bid_not_open"; no bid on chain: None. An unreachable
        chain raises, so the event is retried and nothing is released on no answer."""
        bid = await self.chain.bid(BidId(order.id, self.me))
        if bid is None:
            return None
        if bid.state in ("open", "active"):
            return "already_bid"
        self._release(order.id, bid.state)
        return "bid_not_open"

    async def _price(self, order: Order, group: GroupSpec, held: Reservation) -> Quote | NoPrice:
        gpu_models: GpuModels = {p.unit_id: p.gpu for p in held.placements if p.resources.gpus}
        return await self.pricing.price(group, gpu_models, order.id.owner)


def gpu_capabilities(nodes: Iterable[NodeInventory]) -> frozenset[GpuOffer]:
    """The GPU models to publish on chain: every node's model, whether it sells now or not (a node
    NotReady, cordoned or between device-plugin restarts comes back; bids still check it sells), except
    shared GPUs, which are never sold whole."""
    return frozenset(
        GpuOffer(n.model, n.ram_class, n.interface) for n in nodes if n.model and n.gpus_total and not n.sharing
    )


def _order_key(event: Event) -> str:
    """Events of one order are handled in feed order; others have their own lane."""
    data = event.data
    raw = data.get("order") or data.get("bid") or data.get("lease")
    if isinstance(raw, dict):
        return f"{raw.get('owner')}/{raw.get('dseq')}/{raw.get('gseq')}/{raw.get('oseq')}"
    return f"event:{event.type}"


def _permanent(e: ChainError) -> bool:
    """A refusal (4xx other than a sequence race) rather than a chain that could not answer."""
    return not e.unreachable and 400 <= e.status < 500 and e.code != "bad_sequence"


def _height_of(cursor: str) -> int:
    head = cursor.split(":", 1)[0]
    return int(head) if head.isdigit() else 0


def _bounded(text: object) -> str:
    return str(text)[:32]
