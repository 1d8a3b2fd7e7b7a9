"""The bid engine when the feed cannot tell everything, against the real mock chain: heights passed over
(a pruned node) are made good from the chain's state (an order made in the gap is bid on, a lease won in
it is handed over, a lease closed in it is closed here), never by spinning; and the GPU models published
on chain follow the cluster (a model added is published, a node NotReady keeps its model)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from provider.chain.client import ChainClient
from provider.chain.types import BidId, FeedGap, FeedPage
from provider.domain import NodeGpuFacts, NodeView, Resources
from provider.inventory.static import StaticInventory
from tests.market.conftest import ChainProcess, make_engine, parties, run, running, wait_until
from tests.market.test_engine_hardening import counter
from tests.market.test_flow import deployment_msg

GIB = 1024**3


class PrunedFeed:
    """The real chain client, except that while ``pruned`` is set the feed reads nothing: once it is
    cleared, the next page passes over everything that happened meanwhile, as a node that pruned those
    heights answers, with a gap."""

    def __init__(self, real: ChainClient) -> None:
        self.real = real
        self.state = "live"  # live | pruned (reads nothing) | gap (the next page passes over, then live)
        self.passed_over = 0  # events the gap hid
        self.pages_with_gaps = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    @property
    def address(self) -> str:
        return self.real.address

    async def events(self, after: str = "", limit: int = 500, wait: float = 0) -> FeedPage:
        if self.state == "pruned":
            await asyncio.sleep(min(wait, 0.2))
            return FeedPage((), after, (await self.real.status()).height)
        if self.state == "live":
            return await self.real.events(after=after, limit=limit, wait=wait)
        cursor, first, height = after, 0, 0
        while True:
            page = await self.real.events(after=cursor, limit=limit, wait=0)
            if not page.events:
                break
            first = first or page.events[0].height
            cursor, height = page.cursor, page.height
            self.passed_over += len(page.events)
        self.state = "live"
        self.pages_with_gaps += 1
        return FeedPage((), cursor, height, FeedGap(first, max(first, height), "pruned"))


def test_what_a_gap_hid_is_found_from_the_chain(chain_proc: ChainProcess, tmp_path: Path) -> None:
    async def go() -> None:
        async with parties(chain_proc.url) as (tenant, prov):
            feed = PrunedFeed(prov)
            won: list[BidId] = []
            closed: list[BidId] = []
            engine = make_engine(feed, tmp_path / "state", gap_rescan_seconds=0.5)  # type: ignore[arg-type]

            async def on_won(bid: BidId, order: object) -> None:
                won.append(bid)

            async def on_closed(bid: BidId) -> None:
                closed.append(bid)

            engine.on_lease_won, engine.on_lease_closed = on_won, on_closed
            async with running(engine):
                # a lease won while the feed works, then a gap in which it closes, an order is made and a
                # second lease is won
                await tenant.submit("deployment.create", deployment_msg(1, 5_000_000))
                (bid1,) = await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=1))  # type: ignore[misc]
                await tenant.submit("deployment.create", deployment_msg(2, 5_000_000))
                (bid2,) = await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=2))  # type: ignore[misc]
                await tenant.submit("lease.create", {"bid": {**bid1.id.order.to_json(), "provider": prov.address}})
                await wait_until(lambda: _true(won))
                assert won == [bid1.id]

                feed.state = "pruned"
                await tenant.submit("lease.close", {"lease": {**bid1.id.order.to_json(), "provider": prov.address}})
                await tenant.submit("deployment.create", deployment_msg(3, 5_000_000))
                await tenant.submit("lease.create", {"bid": {**bid2.id.order.to_json(), "provider": prov.address}})
                feed.state = "gap"

                (bid3,) = await wait_until(lambda: tenant.bids(owner=tenant.address, dseq=3))  # type: ignore[misc]
                assert bid3.id.provider == prov.address
                await wait_until(lambda: _true(len(won) == 2 and closed))
                assert won == [bid1.id, bid2.id] and closed == [bid1.id]
                assert feed.passed_over > 0 and feed.pages_with_gaps == 1
                m = engine.metrics
                assert counter(m.feed_gaps, reason="pruned") == 1
                await wait_until(lambda: _true(counter(m.feed_rescans) == 1))
                await asyncio.sleep(1.5)  # a gap once reconciled is not reconciled again
                assert counter(m.feed_rescans) == 1
                assert [b.id.order.dseq for b in await prov.bids(provider=prov.address)].count(3) == 1

    run(go())


async def _true(value: object) -> object:
    return value


def test_published_gpu_models_follow_the_cluster(chain_proc: ChainProcess, tmp_path: Path) -> None:
    async def go() -> None:
        async with parties(chain_proc.url) as (_, prov):
            engine = make_engine(prov, tmp_path / "state", register_debounce_seconds=0.3, recheck_seconds=0.1)
            inventory = engine.inventory
            assert isinstance(inventory, StaticInventory)

            async def models() -> set[str]:
                info = await prov.provider(prov.address)
                assert info is not None
                return {k.split("/")[5] for k in info.attributes if k.startswith("capabilities/gpu/")}

            async with running(engine):
                assert await models() == {"h100"}
                # the h100 nodes go NotReady (a restart) and an a100 node joins: a100 is published, h100 kept
                inventory.nodes = [replace(n, ready=False) for n in inventory.nodes] + [
                    NodeView("a100-0", Resources(64_000, 512 * GIB, 2000 * GIB, 8), NodeGpuFacts("a100", "80Gi", "sxm", physical_gpus=8))
                ]  # fmt: skip
                await wait_until(lambda: _true(engine.metrics.capability_updates._value.get() >= 1), timeout=30)
                assert await models() == {"h100", "a100"}
                # the h100 nodes are removed from the cluster: their model goes after the debounce
                inventory.nodes = inventory.nodes[-1:]
                await wait_until(lambda: _true(engine.metrics.capability_updates._value.get() >= 2), timeout=30)
                assert await models() == {"a100"}

    run(go())
