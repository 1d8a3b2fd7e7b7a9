"""The bid engine against the real mock chain: holds and bids stay in step, holds expire in blocks,
a won lease without capacity is refused on chain, an unreachable chain never releases a hold, a hostile
order or price script cannot freeze or leak anything, concurrency and the low-water cursor, a reset chain."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

from provider.bidding.engine import BidEngine
from provider.bidding.pricing import NoPrice, Quote, ScriptPricing
from provider.chain.client import ChainClient
from provider.chain.keys import Key
from provider.chain.port import ChainError
from provider.chain.types import BidId, Coin, Event, Order, OrderId
from provider.money import Dec
from sdl.spec import GroupSpec
from tests.market.conftest import (
    ChainProcess,
    free_port,
    funded,
    make_engine,
    parties,
    run,
    running,
    wait_until,
)
from tests.market.test_flow import deployment_msg


def counter(metric: Any, **labels: str) -> float:
    value: float = (metric.labels(**labels) if labels else metric)._value.get()
    return value


async def order_of(tenant: ChainClient, dseq: int) -> Order:
    (order,) = await tenant.orders(state=None, owner=tenant.address, dseq=dseq)
    return order


def test_a_closed_bid_on_chain_releases_the_hold(chain_proc: ChainProcess, tmp_path: Path) -> None:
    """`bid_exists` for a bid that is closed (or lost) must not keep capacity held for nothing."""

    async def go() -> None:
        async with parties(chain_proc.url) as (tenant, prov):
            engine = make_engine(prov, tmp_path / "state")
            async with running(engine):
                await tenant.submit("deployment.create", deployment_msg(1, 5_000_000))
                await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=1))
            order = await order_of(tenant, 1)
            await prov.close_bid(order.id, "operator")  # our bid closes while the engine is not looking
            engine._hold(order, "")  # a stale hold, as a restart from an old snapshot would have
            assert engine.holds.count() == 1
            assert await engine.consider(order) == "bid_not_open"
            assert engine.holds.count() == 0

    run(go())


class FlakyChain:
    """The real chain client, except that the first create_bid reaches the chain but its answer is lost."""

    def __init__(self, real: ChainClient) -> None:
        self.real = real
        self.bids_sent = 0
        self.lose_next_answer = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    @property
    def address(self) -> str:
        return self.real.address

    async def create_bid(self, order: OrderId, price: Coin, deposit: Coin) -> None:
        self.bids_sent += 1
        await self.real.create_bid(order, price, deposit)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise ChainError("unreachable", "connection reset after sending")


def test_an_unreachable_chain_keeps_the_hold_and_reconciles(chain_proc: ChainProcess, tmp_path: Path) -> None:
    async def go() -> None:
        async with parties(chain_proc.url) as (tenant, prov):
            flaky = FlakyChain(prov)
            engine = make_engine(flaky, tmp_path / "state", retry_delays=(0.1,))  # type: ignore[arg-type]
            async with running(engine):
                await tenant.submit("deployment.create", deployment_msg(1, 5_000_000))
                await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=1))

                async def retried() -> bool:
                    return (
                        counter(engine.metrics.events_retried) >= 1
                        and counter(engine.metrics.orders_skipped, reason="already_bid") >= 1
                    )

                await wait_until(retried)
                assert engine.holds.count() == 1  # kept through the lost answer: the bid exists
                assert flaky.bids_sent == 1  # reconciled with the chain's answer, not bid again
            (bid,) = await tenant.bids(owner=tenant.address, dseq=1)
            assert bid.state == "open"

    run(go())


def test_an_unanswered_hold_expires_in_blocks_and_closes_our_bid(tmp_path: Path) -> None:
    cp = ChainProcess(tmp_path / "c.sqlite", free_port(), block_interval=0.1, bid_timeout_blocks=10_000)
    cp.start()

    async def go() -> None:
        async with parties(cp.url) as (tenant, prov):
            engine = make_engine(prov, tmp_path / "state", hold_blocks=8)
            async with running(engine):
                await tenant.submit("deployment.create", deployment_msg(1, 5_000_000))
                (bid,) = await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=1))  # type: ignore[misc]
                created = bid.created_height
                closed = await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=1, state="closed"), timeout=60)
                assert engine.holds.count() == 0
                assert counter(engine.metrics.holds_expired) == 1
                assert (await tenant.status()).height >= created + 8  # counted in blocks
            assert len(closed) == 1  # type: ignore[arg-type]

    try:
        run(go())
    finally:
        cp.stop()


def test_a_won_lease_without_capacity_is_closed_on_chain(chain_proc: ChainProcess, tmp_path: Path) -> None:
    async def go() -> None:
        async with parties(chain_proc.url) as (tenant, prov):
            pool = [{"name": "h100", "model": "h100", "ram": "80Gi", "interface": "sxm", "gpus": 8, "cpu": 192,
                     "memory_gib": 2048, "count": 1}]  # fmt: skip
            engine = make_engine(prov, tmp_path / "state", pool=pool)
            async with running(engine):
                await tenant.submit("deployment.create", deployment_msg(1, 5_000_000, gpus=8))
                (bid,) = await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=1))  # type: ignore[misc]
                # the hold is lost (e.g. expired while the tenant waited) and the node is sold to someone else
                engine.holds.release(str(bid.id.order))
                other = engine.holds.reserve("someone/9/1/1", [*engine_units(bid.id.order, 8)])
                assert not hasattr(other, "reason"), other
                await tenant.submit("lease.create", {"bid": {**bid.id.order.to_json(), "provider": bid.id.provider}})
                (lease,) = await wait_until(  # type: ignore[misc]
                    lambda: tenant.leases(owner=tenant.address, dseq=1, state="closed"), timeout=30
                )
                assert lease.closed_reason == "insufficient_capacity"
                assert counter(engine.metrics.leases_refused, reason="insufficient_gpu") == 1

    run(go())


def engine_units(order: OrderId, gpus: int) -> list[Any]:
    from provider.domain import GpuRequirement, Resources, UnitDemand

    return [UnitDemand(1, 1, Resources(1000, 1024**3, 0, gpus), (GpuRequirement("h100"),))]


def test_exceptions_and_junk_from_pricing_release_the_hold(chain_proc: ChainProcess, tmp_path: Path) -> None:
    price_script = tmp_path / "price.sh"
    price_script.write_text("#!/usr/bin/env bash\ncat >/dev/null\necho 1e30\n")
    price_script.chmod(price_script.stat().st_mode | stat.S_IEXEC)

    class Exploding:
        concurrency = 4

        async def price(self, group: GroupSpec, gpu_models: Any, owner: str) -> Quote | NoPrice:
            raise RuntimeError("a bug in a pricing plug-in")

    async def go() -> None:
        async with parties(chain_proc.url) as (tenant, prov):
            await tenant.submit("deployment.create", deployment_msg(1, 5_000_000))
            order = await order_of(tenant, 1)
            for pricing, reason in (
                (ScriptPricing(str(price_script)), "pricing_failed"),
                (Exploding(), "internal_error"),
            ):
                engine = make_engine(prov, tmp_path / "state", pricing=pricing)  # type: ignore[arg-type]
                await engine.register()
                assert await engine.consider(order) == reason
                assert engine.holds.count() == 0
                assert counter(engine.metrics.orders_skipped, reason=reason) == 1
            assert await tenant.bids(owner=tenant.address, dseq=1) == []

    run(go())


def test_a_hostile_order_is_refused_by_the_chain_and_the_policy(chain_proc: ChainProcess, tmp_path: Path) -> None:
    async def go() -> None:
        async with parties(chain_proc.url) as (tenant, prov):
            msg = deployment_msg(1, 5_000_000, gpus=0)
            msg["groups"][0]["resources"][0]["count"] = 10_000_000  # total cpu and memory far above the chain's limits
            try:
                await tenant.submit("deployment.create", msg)
                raise AssertionError("the chain accepted a group above its limits")
            except ChainError as e:
                assert e.code == "invalid_group" and "above the chain's limit" in str(e)
            engine = make_engine(prov, tmp_path / "state")
            await engine.register()
            hostile = Order(OrderId(tenant.address, 1, 1, 1), "open", msg["groups"][0], 1)
            assert await engine.consider(hostile) == "invalid_order"
            assert engine.holds.count() == 0

    run(go())


def test_price_scripts_run_concurrently_up_to_the_limit(chain_proc: ChainProcess, tmp_path: Path) -> None:
    log = tmp_path / "log"
    script = tmp_path / "price.sh"
    script.write_text(
        f"#!/usr/bin/env bash\ncat >/dev/null\necho start >> {log}\nsleep 0.5\necho end >> {log}\necho 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)

    async def go() -> None:
        async with parties(chain_proc.url) as (tenant, prov):
            engine = make_engine(prov, tmp_path / "state", pricing=ScriptPricing(str(script), concurrency=3))
            async with running(engine):
                for dseq in range(1, 7):
                    await tenant.submit("deployment.create", deployment_msg(dseq, 5_000_000, gpus=0))

                async def all_bid() -> bool:
                    return len(await tenant.bids(owner=tenant.address)) == 6

                await wait_until(all_bid, timeout=60)
            running_now = peak = 0
            for line in log.read_text().split():
                running_now += 1 if line == "start" else -1
                peak = max(peak, running_now)
            assert peak == 3  # orders were evaluated concurrently, never more than the script's limit

    run(go())


def test_the_cursor_never_passes_an_unfinished_event(tmp_path: Path) -> None:
    """A slow event holds the durable cursor back even when later events finish first."""

    async def go() -> None:
        chain = ChainClient("http://127.0.0.1:9", Key.generate("provider"))
        engine = make_engine(chain, tmp_path / "state")
        gate = asyncio.Event()
        handled: list[str] = []

        async def handle(event: Event) -> None:
            if event.index == 0:
                await gate.wait()
            handled.append(event.cursor)

        engine.handle = handle  # type: ignore[method-assign]
        engine._done_cursor = "4:9"
        events = [
            Event(5, i, "order_created", {"order": {"owner": "o", "dseq": i, "gseq": 1, "oseq": 1}}) for i in range(3)
        ]
        for e in events:
            engine._dispatch(e)
        await wait_until(lambda: _async(len(handled) == 2))
        assert engine._done_cursor == "4:9"  # 5:1 and 5:2 are done, but 5:0 is not
        gate.set()
        await wait_until(lambda: _async(engine._done_cursor == "5:2"))
        await engine._flush_cursor()
        saved = json.loads((tmp_path / "state" / "chain-cursor").read_text())
        assert saved["cursor"] == "5:2"
        await chain.aclose()

    run(go())


async def _async(value: bool) -> bool:
    return value


def test_a_reset_chain_is_detected_and_answered_with_a_catch_up(tmp_path: Path) -> None:
    port = free_port()
    first = ChainProcess(tmp_path / "a.sqlite", port, block_interval=0.02)
    first.start()
    key = Key.generate("provider")
    state = tmp_path / "state"

    async def bid_once(cp: ChainProcess, dseq: int, blocks_first: int) -> BidEngine:
        tenant = await funded(cp.url, Key.generate("tenant"))
        prov = await funded(cp.url, key)
        engine = make_engine(prov, state)
        if blocks_first:  # make the first chain taller than the fresh one will be
            await wait_until(lambda: _taller(tenant, blocks_first), timeout=60)
        async with running(engine):
            await tenant.submit("deployment.create", deployment_msg(dseq, 5_000_000, gpus=0))
            await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=dseq), timeout=30)
        for c in (tenant, prov):
            await c.aclose()
        return engine

    try:
        run(bid_once(first, 1, blocks_first=200))
        saved = json.loads((state / "chain-cursor").read_text())
        assert saved["chain_id"] and saved["genesis"] and saved["cursor"]
    finally:
        first.stop()
    second = ChainProcess(tmp_path / "b.sqlite", port, block_interval=0.2)  # a reset: same URL, new history
    second.start()
    try:
        engine = run(bid_once(second, 1, blocks_first=0))
        assert counter(engine.metrics.chain_resets) == 1  # type: ignore[attr-defined]
        saved2 = json.loads((state / "chain-cursor").read_text())
        assert saved2["genesis"] != saved["genesis"]
    finally:
        second.stop()


async def _taller(chain: ChainClient, height: int) -> bool:
    return (await chain.status()).height > height


def test_per_order_memory_is_pruned_when_orders_close(chain_proc: ChainProcess, tmp_path: Path) -> None:
    async def go() -> None:
        async with parties(chain_proc.url) as (tenant, prov):
            engine = make_engine(prov, tmp_path / "state")
            async with running(engine):
                for dseq in (1, 2, 3):
                    await tenant.submit("deployment.create", deployment_msg(dseq, 5_000_000, gpus=0))

                async def three_bids() -> bool:
                    return len(await tenant.bids(owner=tenant.address)) == 3

                await wait_until(three_bids)
                assert engine._orders
                for dseq in (1, 2, 3):
                    await tenant.submit("deployment.close", {"dseq": dseq})

                async def pruned() -> bool:
                    return not engine._orders and engine.holds.count() == 0

                await wait_until(pruned)

    run(go())


def test_lease_identity_types_round_trip() -> None:
    bid = BidId(OrderId("gp1a", 1, 2, 3), "gp1p")
    assert BidId.parse(str(bid)) == bid and Coin("uact", Dec.parse("1.5")).to_json() == {
        "denom": "uact",
        "amount": "1.5",
    }


def test_a_refusal_is_not_retried_forever(chain_proc: ChainProcess, tmp_path: Path) -> None:
    """A 4xx from the chain is an answer: the event is counted as refused and skipped, not retried."""

    class Refusing(FlakyChain):
        async def lease(self, lease_id: BidId) -> Any:
            raise ChainError("not_found", "no such lease", 404)

    async def go() -> None:
        prov = await funded(chain_proc.url, Key.generate("provider"))
        engine = make_engine(Refusing(prov), tmp_path / "state", retry_delays=(0.1,))  # type: ignore[arg-type]
        await engine.register()
        won = Event(
            5, 0, "lease_created", {"lease": {"owner": "gp1t", "dseq": 1, "gseq": 1, "oseq": 1, "provider": engine.me}}
        )
        await asyncio.wait_for(engine._run_event(won), 30)
        assert counter(engine.metrics.events_failed, reason="refused") == 1
        assert counter(engine.metrics.events_retried) == 0
        await prov.aclose()

    run(go())
