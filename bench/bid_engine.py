"""Benchmark the bid engine.

1. Per-order decision latency (policy + reserve + price, no chain round trip) against a 1,000-node /
   8,000-GPU inventory, p50/p99, with 1 and with 100 replicas per order.
2. Latency from an order appearing in the chain feed to its bid being accepted by the chain, with 100
   open orders, against the real mock chain server on loopback.
Prints figures only.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sdl  # noqa: E402
from provider.bidding.policy import GpuOffer, ProviderProfile, decide  # noqa: E402
from provider.bidding.pricing import Quote  # noqa: E402
from provider.chain.client import ChainClient  # noqa: E402
from provider.chain.keys import Key  # noqa: E402
from provider.domain import UnitDemand  # noqa: E402
from provider.inventory.reservations import NoFit  # noqa: E402
from sdl.spec import group_from_json  # noqa: E402
from tests.market.conftest import H100_POOL, ChainProcess, free_port, funded, make_engine, running  # noqa: E402

POOL = [{**H100_POOL[0], "count": 1000}]
EXAMPLE = sdl.parse((REPO / "sdl/examples/llm-inference.yaml").read_bytes())


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def bench_evaluation(tmp: Path, n: int = 2000, replicas: int = 1) -> None:
    """Per-order decision latency: policy + reserve + price, timed one order at a time (no chain call)."""
    engine = make_engine(
        ChainClient("http://127.0.0.1:1", Key.generate("p")), tmp / f"eval{replicas}", pool=POOL, storage_tib=10**6
    )
    engine.profile = ProviderProfile(
        engine.me, {"host": "gpu-provider"}, gpu_offers=frozenset({GpuOffer("h100", "80Gi", "sxm")})
    )
    engine.inventory.refresh()
    groups = EXAMPLE.groups_json()
    groups[0]["resources"][0]["count"] = replicas
    group = group_from_json(groups[0])
    times: list[float] = []
    held_ids: deque[str] = deque()
    bids = 0
    for i in range(n):
        start = time.perf_counter()
        decision = decide("gp1tenant", group, engine.profile)
        if not decision.bid:
            raise SystemExit(f"policy refused the benchmark order: {decision}")
        held = engine.holds.reserve(f"o{i}", UnitDemand.from_group(group))
        if isinstance(held, NoFit):
            raise SystemExit(f"no fit: {held}")
        quote = await engine.pricing.price(group, {p.unit_id: p.gpu for p in held.placements}, "gp1tenant")
        times.append((time.perf_counter() - start) * 1000)
        bids += isinstance(quote, Quote)
        held_ids.append(f"o{i}")
        if len(held_ids) > 3000 // replicas:  # up to ~3,000 GPUs held by open bids, the oldest released
            engine.holds.release(held_ids.popleft())
    print(
        f"decision (policy + reserve + price), 1,000 nodes / 8,000 GPUs, {replicas} replica(s) per order, "
        f"{n} orders: p50 {pct(times, 0.5):.3f} ms, p99 {pct(times, 0.99):.3f} ms, "
        f"{n / (sum(times) / 1000):,.0f} orders/s ({bids} priced)"
    )


async def bench_latency(tmp: Path, orders: int = 100) -> None:
    cp = ChainProcess(tmp / "chain.sqlite", free_port(), block_interval=1.0)
    cp.start()
    try:
        tenant = await funded(cp.url, Key.generate("tenant"), uact=10**12)
        prov = await funded(cp.url, Key.generate("provider"), uakt=10**12)
        engine = make_engine(prov, tmp / "state", pool=POOL, storage_tib=1000)
        created: dict[str, float] = {}
        answered: dict[str, float] = {}
        original = prov.create_bid

        async def timed_bid(order, price, deposit):  # type: ignore[no-untyped-def]
            result = await original(order, price, deposit)
            answered[str(order)] = time.perf_counter()
            return result

        prov.create_bid = timed_bid  # type: ignore[method-assign]
        async with running(engine):  # returns once the provider is registered
            groups = EXAMPLE.groups_json()
            for dseq in range(1, orders + 1):
                await tenant.submit(
                    "deployment.create",
                    {
                        "dseq": dseq,
                        "groups": groups,
                        "version": EXAMPLE.version.hex(),
                        "deposit": {"denom": "uact", "amount": "5000000"},
                    },
                )
                created[f"{tenant.key.address}/{dseq}/1/1"] = time.perf_counter()  # type: ignore[union-attr]
            deadline = time.monotonic() + 120
            while len(answered) < orders and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            latencies = [(answered[k] - created[k]) * 1000 for k in created if k in answered]
            print(
                f"order in feed -> bid accepted, {orders} open orders: {len(latencies)} bids, "
                f"p50 {statistics.median(latencies):.1f} ms, p99 {pct(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms"
            )
        await tenant.aclose()
        await prov.aclose()
    finally:
        cp.stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(bench_evaluation(Path(tmp)))
        asyncio.run(bench_evaluation(Path(tmp), n=500, replicas=100))
        asyncio.run(bench_latency(Path(tmp)))


if __name__ == "__main__":
    main()
