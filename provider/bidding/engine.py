"""The bid engine: follows the chain feed from a durable cursor and bids on the orders it can serve.

For each order: decide (pure policy) -> reserve capacity -> price -> bid. A lost, closed or timed-out
bid releases its hold; a won lease turns it into an allocation and is handed to the lease lifecycle.
Restart-safe: the cursor is saved after every handled event, the start-up catch-up scans open orders
and our own open bids and leases (re-reserving what they hold), and the chain refuses a second bid from
us on the same order, so nothing is bid twice, leaked or missed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from provider.bidding.policy import GpuOffer, ProviderProfile, decide
from provider.bidding.pricing import LinearPricing, NoPrice, Quote, ScriptPricing
from provider.chain.client import ChainClient, ChainError
from provider.chain.types import BidId, Coin, Event, Order, OrderId
from provider.errors import ProviderError
from provider.inventory.cluster import Inventory
from provider.inventory.reservations import NoFit, Reservation, Reservations, UnitDemand
from provider.metrics import BidMetrics
from sdl.spec import GroupSpec, group_from_json

log = logging.getLogger("provider.bidding")


class InventoryPort(Protocol):
    reservations: Reservations

    def refresh(self) -> object: ...

    @property
    def current(self) -> Inventory: ...


@dataclass(frozen=True)
class EngineConfig:
    state_dir: Path
    attributes: dict[str, str]
    host_uri: str = "https://provider.invalid:8443"
    deposit: Coin = field(default_factory=lambda: Coin("uakt", Decimal(500_000)))
    bid_hold_seconds: float = 330.0  # the chain's bid timeout (50 blocks ~ 5 min) plus a margin
    inventory_max_age: float = 5.0
    feed_wait: float = 10.0
    storage_classes: frozenset[str] = frozenset({"default", "beta1", "beta2", "beta3"})
    tenant_allow: frozenset[str] | None = None
    tenant_deny: frozenset[str] = frozenset()


LeaseWon = Callable[[BidId, Order], Awaitable[None]]


class BidEngine:
    def __init__(
        self,
        chain: ChainClient,
        inventory: InventoryPort,
        pricing: LinearPricing | ScriptPricing,
        config: EngineConfig,
        metrics: BidMetrics,
        on_lease_won: LeaseWon | None = None,
    ) -> None:
        if chain.key is None:
            raise ValueError("the bid engine needs the provider's signing key")
        self.chain = chain
        self.me = chain.key.address
        self.inventory = inventory
        self.pricing = pricing
        self.config = config
        self.metrics = metrics
        self.on_lease_won = on_lease_won
        self.cursor_file = config.state_dir / "chain-cursor"
        self.profile = ProviderProfile(self.me, dict(config.attributes))
        self._refreshed_at = 0.0
        self._orders: dict[OrderId, Order] = {}

    # -- durable cursor --------------------------------------------------------------------------
    def load_cursor(self) -> str:
        try:
            return self.cursor_file.read_text().strip()
        except FileNotFoundError:
            return ""

    def save_cursor(self, cursor: str) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cursor_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(cursor)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.cursor_file)

    # -- start-up --------------------------------------------------------------------------------
    async def refresh_inventory(self, force: bool = False) -> None:
        if force or time.monotonic() - self._refreshed_at > self.config.inventory_max_age:
            await asyncio.to_thread(self.inventory.refresh)
            self._refreshed_at = time.monotonic()
            offers = frozenset(
                GpuOffer(n.model, n.ram_class, n.interface)
                for n in self.inventory.current.nodes
                if n.model and n.gpus_total and not n.unsellable
            )
            if offers != self.profile.gpu_offers:
                self.profile = replace(self.profile, gpu_offers=offers)

    async def register(self) -> None:
        """Publish our attributes, GPU capabilities included (capabilities/gpu/vendor/nvidia/model/<m>)."""
        await self.refresh_inventory(force=True)
        attrs = dict(self.config.attributes)
        for offer in self.profile.gpu_offers:
            base = f"capabilities/gpu/vendor/nvidia/model/{offer.model}"
            attrs[base] = "true"
            attrs[f"{base}/ram/{offer.ram_class}"] = "true"
            if offer.interface:
                attrs[f"{base}/ram/{offer.ram_class}/interface/{offer.interface}"] = "true"
        current = await self.chain.provider(self.me)
        if current is None or current["attributes"] != attrs or current["host_uri"] != self.config.host_uri:
            await self.chain.submit("provider.create", {"attributes": attrs, "host_uri": self.config.host_uri})
        await self._load_audits()

    async def _load_audits(self) -> None:
        info = await self.chain.provider(self.me)
        audited = info.get("audited", {}) if info else {}
        self.profile = replace(
            self.profile,
            audited=audited,
            storage_classes=self.config.storage_classes,
            tenant_allow=self.config.tenant_allow,
            tenant_deny=self.config.tenant_deny,
        )

    async def catch_up(self) -> None:
        """Re-hold what our open bids and unsettled leases need, then evaluate every open order."""
        await self.refresh_inventory()  # register() has just refreshed it; only older snapshots are re-read
        ours = {b.id.order: b for b in await self.chain.bids(provider=self.me, state="open")}
        for lease in await self.chain.leases(provider=self.me, state="active"):
            order = await self.chain.order(lease.id.order)
            if order is not None:
                self._hold(order, str(lease.id))
        for order in await self.chain.orders(state="open"):
            self._orders[order.id] = order
            if order.id in ours:
                self._hold(order, "")  # our bid is still open: keep its capacity
                continue
            await self.consider(order)

    def _hold(self, order: Order, lease_id: str) -> None:
        key = str(order.id)
        if self.inventory.reservations.get(key) is not None:
            return
        try:
            group = group_from_json(order.group)
        except ValueError:
            return
        held = self.inventory.reservations.reserve(key, UnitDemand.from_group(group), self.config.bid_hold_seconds)
        if isinstance(held, Reservation) and lease_id:
            self.inventory.reservations.allocate(key, lease_id)
        self.metrics.reservations.set(len(self.inventory.reservations.holds()))

    # -- the loop --------------------------------------------------------------------------------
    async def start(self) -> str:
        """Register and catch up; returns the cursor to follow from."""
        cursor = self.load_cursor()
        if not cursor:  # first start: the catch-up scan covers history, follow from the current block
            height = int((await self.chain.status())["height"])
            cursor = f"{max(0, height - 1)}:{2**31}"
        await self.register()
        await self.catch_up()
        return cursor

    async def run(self, stop: asyncio.Event | None = None) -> None:
        while True:
            try:
                cursor = await self.start()
                break
            except ProviderError as e:  # chain or cluster not reachable yet: wait for them, say so
                log.warning("cannot start bidding yet, retrying in 2s error=%r", str(e))
                if stop is not None and stop.is_set():
                    return
                await asyncio.sleep(2)
        while stop is None or not stop.is_set():
            try:
                events, next_cursor = await self.chain.events(after=cursor, wait=self.config.feed_wait)
            except ChainError as e:
                log.warning("chain feed unavailable error=%r retry_in=2s", str(e))
                await asyncio.sleep(2)
                continue
            for event in events:
                try:
                    await self.handle(event)
                except ProviderError as e:  # chain or cluster went away mid-event: retry this event, not the next
                    log.warning("event not handled, will retry event=%s error=%r", event.cursor, str(e))
                    await asyncio.sleep(2)
                    break
                except Exception:  # a malformed event must not stop the engine
                    log.exception("event skipped: cannot handle it event=%s type=%s", event.cursor, event.type)
                cursor = event.cursor
                self.save_cursor(cursor)
                self.metrics.feed_height.set(event.height)
            if not events and next_cursor and next_cursor != cursor:
                cursor = next_cursor

    async def handle(self, event: Event) -> None:
        data = event.data
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
            oid = OrderId(raw["owner"], raw["dseq"], raw["gseq"], raw["oseq"])
            mine = raw.get("provider") == self.me
            if event.type == "lease_created":
                if mine:
                    await self._won(BidId(oid, self.me))
                else:
                    self._release(oid, "lost")
            elif mine:
                self._release(oid, data.get("state") or data.get("reason", "closed"))
        elif event.type == "order_closed":
            self._release(OrderId(**data["order"]), "order_closed")
        elif event.type == "provider_audited" and data.get("provider") == self.me:
            await self._load_audits()

    def _release(self, oid: OrderId, outcome: str) -> None:
        if self.inventory.reservations.release(str(oid)):
            self.metrics.bids_lost.labels(outcome=str(outcome)[:32]).inc()
            log.info("reservation released order=%s outcome=%s", oid, outcome)
        self.metrics.reservations.set(len(self.inventory.reservations.holds()))

    async def _won(self, bid: BidId) -> None:
        self.inventory.reservations.allocate(str(bid.order), str(bid))
        self.metrics.leases_won.inc()
        log.info("lease won lease=%s", bid)
        order = self._orders.get(bid.order) or await self.chain.order(bid.order)
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
        else:
            self.metrics.decision_seconds.observe(time.perf_counter() - started)
        return outcome

    async def _consider(self, order: Order) -> str:
        try:
            group = group_from_json(order.group)
        except ValueError as e:
            log.info("order skipped order=%s reason=invalid_order detail=%r", order.id, str(e))
            return "invalid_order"
        decision = decide(order.id.owner, group, self.profile)
        if not decision.bid:
            log.info("order skipped order=%s reason=%s detail=%r", order.id, decision.reason, decision.detail)
            return decision.reason
        await self.refresh_inventory()
        key = str(order.id)
        held = self.inventory.reservations.reserve(key, UnitDemand.from_group(group), self.config.bid_hold_seconds)
        if isinstance(held, NoFit):
            if held.reason == "duplicate_order":
                return "already_bid"
            log.info("order skipped order=%s reason=%s detail=%r", order.id, held.reason, held.detail)
            return held.reason
        quote = await self._price(order, group, held)
        if isinstance(quote, NoPrice):
            self.inventory.reservations.release(key)
            log.info("order skipped order=%s reason=%s detail=%r", order.id, quote.reason, quote.detail)
            return quote.reason
        try:
            await self.chain.create_bid(order.id, Coin(quote.denom, quote.amount), self.config.deposit)
        except ChainError as e:
            if e.code == "bid_exists":
                return "already_bid"  # keep the hold: our earlier bid is still open
            self.inventory.reservations.release(key)
            self.metrics.bids_failed.labels(code=e.code[:32]).inc()
            log.warning("bid refused order=%s code=%s error=%r", order.id, e.code, str(e))
            return "bid_refused"
        self.metrics.bids_placed.inc()
        self.metrics.last_bid_placed.set(time.time())
        self.metrics.reservations.set(len(self.inventory.reservations.holds()))
        log.info("bid placed order=%s price=%s%s", order.id, quote.amount, quote.denom)
        return "bid"

    async def _price(self, order: Order, group: GroupSpec, held: Reservation) -> Quote | NoPrice:
        nodes = {n.name: n for n in self.inventory.current.nodes}
        models: dict[int, tuple[str, str, str]] = {}
        for p in held.placements:
            n = nodes.get(p.node)
            if n is not None and p.resources.gpus:
                models.setdefault(p.unit_id, (n.model, n.ram_class, n.interface))
        if isinstance(self.pricing, ScriptPricing):
            return await self.pricing.quote(group, models, order.id.owner)
        return self.pricing.quote(group, models)
