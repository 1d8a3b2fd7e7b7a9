"""Benchmark the bid engine.

1. Orders per second evaluated and priced (policy + reserve + price, no chain round trip) against a
   1,000-node inventory.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sdl  # noqa: E402
from provider.bidding.policy import GpuOffer, ProviderProfile, decide  # noqa: E402
from provider.chain.client import ChainClient  # noqa: E402
from provider.chain.keys import Key  # noqa: E402
from provider.inventory.reservations import NoFit, UnitDemand  # noqa: E402
from tests.market.conftest import H100_POOL, ChainProcess, free_port, funded, make_engine, running  # noqa: E402

POOL = [{**H100_POOL[0], "count": 1000}]
EXAMPLE = sdl.parse((REPO / "sdl/examples/llm-inference.yaml").read_bytes())


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def bench_evaluation(tmp: Path, n: int = 2000) -> None:
    engine = make_engine(
        ChainClient("http://127.0.0.1:1", Key.generate("p")), tmp / "eval", pool=POOL, storage_tib=1000
    )
    engine.profile = ProviderProfile(
        engine.me, {"host": "gpu-provider"}, gpu_offers=frozenset({GpuOffer("h100", "80Gi", "sxm")})
    )
    engine.inventory.refresh()
    group = EXAMPLE.groups[0]
    demand = UnitDemand.from_group(group)
    start = time.perf_counter()
    bids = 0
    for i in range(n):
        decision = decide("gp1tenant", group, engine.profile)
        if not decision.bid:
            continue
        held = engine.inventory.reservations.reserve(f"o{i}", demand)
        if isinstance(held, NoFit):
            continue
        quote = engine.pricing.quote(group, {1: ("h100", "80Gi", "sxm")})  # type: ignore[call-arg]
        bids += 1
        engine.inventory.reservations.release(f"o{i}")
        del quote
    elapsed = time.perf_counter() - start
    print(
        f"evaluation (policy + reserve + price) against 1,000 nodes / 8,000 GPUs: {n / elapsed:,.0f} orders/s ({bids} priced)"
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
        bench_evaluation(Path(tmp))
        asyncio.run(bench_latency(Path(tmp)))


if __name__ == "__main__":
    main()
