"""Orders skipped for want of capacity, against the real mock chain: while an order stays open it gets
its bid once capacity comes back (Akash's provider never looks at it again); a closed order is
forgotten, and the set of waiting orders is bounded."""

from __future__ import annotations

from pathlib import Path

from provider.bidding.engine import BidEngine
from provider.chain.types import Order, OrderId
from tests.market.conftest import H100_POOL, ChainProcess, make_engine, parties, run, running, wait_until
from tests.market.test_engine_hardening import counter
from tests.market.test_flow import deployment_msg

ONE_NODE = [{**H100_POOL[0], "count": 1}]  # 8 H100s


def test_an_order_skipped_for_capacity_gets_its_bid_when_capacity_frees(
    chain_proc: ChainProcess, tmp_path: Path
) -> None:
    async def go() -> None:
        async with parties(chain_proc.url) as (tenant, prov):
            engine = make_engine(prov, tmp_path / "state", ONE_NODE, recheck_seconds=0.2)  # 8 GPUs
            async with running(engine):
                await tenant.submit("deployment.create", deployment_msg(1, 5_000_000, gpus=8))
                await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=1))
                await tenant.submit("deployment.create", deployment_msg(2, 5_000_000, gpus=8))
                await wait_until(_waiting(engine, 1))
                assert counter(engine.metrics.orders_skipped, reason="insufficient_gpu") == 1
                assert await tenant.bids(owner=tenant.address, dseq=2) == []
                await tenant.submit("deployment.close", {"dseq": 1})  # its 8 GPUs come back
                (bid,) = await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=2, state="open"), timeout=30)  # type: ignore[misc]
                assert bid.id.provider == prov.address
                assert counter(engine.metrics.bids_after_waiting) == 1
                assert counter(engine.metrics.orders_waiting) == 0
                assert engine.holds.count() == 1  # dseq 2 holds the node now, dseq 1's hold is gone

    run(go())


def test_a_waiting_order_that_closes_is_forgotten_and_never_bid_on(chain_proc: ChainProcess, tmp_path: Path) -> None:
    async def go() -> None:
        async with parties(chain_proc.url) as (tenant, prov):
            engine = make_engine(prov, tmp_path / "state", ONE_NODE, recheck_seconds=0.2)
            async with running(engine):
                await tenant.submit("deployment.create", deployment_msg(1, 5_000_000, gpus=8))
                await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=1))
                await tenant.submit("deployment.create", deployment_msg(2, 5_000_000, gpus=8))

                await wait_until(_waiting(engine, 1))
                await tenant.submit("deployment.close", {"dseq": 2})  # the tenant gives up first
                await wait_until(_waiting(engine, 0))
                await tenant.submit("deployment.close", {"dseq": 1})  # capacity comes back afterwards
                await wait_until(_no_holds(engine))
                await tenant.submit("deployment.create", deployment_msg(3, 5_000_000, gpus=1))
                await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=3))  # later than any recheck
                assert await tenant.bids(owner=tenant.address, dseq=2) == []
                assert counter(engine.metrics.bids_after_waiting) == 0

    run(go())


def _waiting(engine: BidEngine, n: int) -> object:
    async def check() -> bool:
        return counter(engine.metrics.orders_waiting) == n

    return check


def _no_holds(engine: BidEngine) -> object:
    async def check() -> bool:
        return engine.holds.count() == 0

    return check


def test_waiting_orders_are_bounded_oldest_forgotten_first(tmp_path: Path) -> None:
    class NoChain:
        address = "gp1provider"

    engine = make_engine(NoChain(), tmp_path / "state", max_waiting_orders=3)  # type: ignore[arg-type]
    orders = [Order(OrderId("gp1tenant", dseq, 1, 1), "open", {}, 1) for dseq in range(1, 6)]
    for order in orders:
        engine._wait_for_capacity(order)
    assert list(engine._waiting) == [o.id for o in orders[2:]]
    assert counter(engine.metrics.orders_waiting) == 3
    engine._release(orders[3].id, "order_closed")
    assert list(engine._waiting) == [orders[2].id, orders[4].id]
