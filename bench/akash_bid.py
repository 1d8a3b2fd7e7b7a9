"""Benchmark: an order on Akash's own chain to our bid included, over N orders (default 100).

A fresh local devnet (Akash v2.0.1, 1 s blocks); the tenant creates GPU deployments one after another
with the real `akash` CLI; the bid engine runs in this process on the Akash adapter with a static H100
inventory. For every order it prints, as p50/p99:
- blocks and seconds from the order's block to the block that includes our bid (block header times);
- the in-process part: the feed page holding the order received -> our MsgCreateBid signed (the
  moment it is handed to broadcast), which is what Akash's provider logs as ~5 ms order -> reservation.

    python bench/akash_bid.py [N]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from provider.chain.akash.chain import AkashChain  # noqa: E402
from provider.chain.akash.keys import AkashKey  # noqa: E402
from provider.chain.akash.pb.akash.market.v1beta5 import bidmsg_pb2  # noqa: E402
from provider.chain.akash.pb.cosmos.tx.v1beta1 import tx_pb2  # noqa: E402
from provider.chain.types import Coin, FeedPage  # noqa: E402
from provider.devcluster.akash import AkashDevnet, DevnetState  # noqa: E402
from provider.money import Dec  # noqa: E402
from tests.market.conftest import make_engine  # noqa: E402

SDL = REPO / "sdl" / "examples" / "llm-inference.yaml"
POOL = [{"name": "h100", "model": "h100", "ram": "80Gi", "interface": "sxm", "gpus": 8, "count": 100}]


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def block_time(devnet: AkashDevnet, chain: DevnetState, height: int) -> float:
    header = devnet._get(f"{chain.rpc}/block?height={height}")["result"]["block"]["header"]
    text = header["time"]  # RFC 3339 with nanoseconds
    whole, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (frac or "0"))


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        devnet = AkashDevnet(Path(tmp) / "devnet")
        started = time.monotonic()
        chain = devnet.up(timeout=300)
        print(f"devnet up in {time.monotonic() - started:.1f} s", flush=True)
        key = AkashKey.from_mnemonic("provider", chain.mnemonics["provider"])
        adapter = AkashChain(chain.rest, chain.rpc, key)
        received: dict[tuple[str, int], float] = {}
        signed: dict[tuple[str, int], float] = {}

        events = adapter.events

        async def timed_events(after: str = "", limit: int = 500, wait: float = 0) -> FeedPage:
            page = await events(after, limit, wait)
            now = time.perf_counter()
            for e in page.events:
                if e.type == "order_created":
                    received.setdefault((e.data["order"]["owner"], e.data["order"]["dseq"]), now)
            return page

        broadcast = adapter.client.broadcast

        async def timed_broadcast(tx_bytes: bytes, what: str) -> str:
            now = time.perf_counter()
            body = tx_pb2.TxBody.FromString(tx_pb2.TxRaw.FromString(tx_bytes).body_bytes)
            for m in body.messages:
                if m.type_url.endswith("MsgCreateBid"):
                    bid = bidmsg_pb2.MsgCreateBid.FromString(m.value)
                    signed.setdefault((bid.id.owner, bid.id.dseq), now)
            return await broadcast(tx_bytes, what)

        adapter.events = timed_events  # type: ignore[method-assign]
        adapter.client.broadcast = timed_broadcast  # type: ignore[method-assign]
        engine = make_engine(
            adapter,  # type: ignore[arg-type]
            Path(tmp) / "state",
            POOL,
            storage_tib=1000,
            deposit=Coin("uact", Dec.parse("500000")),
            hold_blocks=100_000,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(engine.run(stop))
        try:
            orders: list[tuple[int, int]] = []  # (dseq, order height)
            for i in range(n):
                result = await asyncio.to_thread(
                    devnet.tx, chain, "tenant", "deployment", "create", str(SDL), "--deposit", "5000000uact"
                )
                created = next(e for e in result["events"] if e["type"].endswith("EventDeploymentCreated"))
                dseq = int(json.loads({a["key"]: a["value"] for a in created["attributes"]}["id"])["dseq"])
                orders.append((dseq, int(result["height"])))
                if (i + 1) % 20 == 0:
                    print(f"  {i + 1}/{n} orders made", flush=True)
            deadline = time.monotonic() + 120
            tenant = chain.keys["tenant"]
            bids: dict[int, int] = {}
            while time.monotonic() < deadline and len(bids) < n:
                for b in await adapter.bids(provider=key.address, owner=tenant):
                    bids[b.id.order.dseq] = b.created_height
                await asyncio.sleep(1)
        finally:
            stop.set()
            await task
            await adapter.aclose()
        missing = [d for d, _ in orders if d not in bids]
        blocks, seconds, inproc = [], [], []
        for dseq, height in orders:
            if dseq not in bids:
                continue
            blocks.append(bids[dseq] - height)
            seconds.append(block_time(devnet, chain, bids[dseq]) - block_time(devnet, chain, height))
            k = (tenant, dseq)
            if k in received and k in signed:
                inproc.append((signed[k] - received[k]) * 1000)
        devnet.down()
    print(f"orders: {n}, bid on: {len(blocks)}, missing: {len(missing)}")
    print(f"order block -> bid block: p50 {pct(blocks, 0.5)} blocks, p99 {pct(blocks, 0.99)} blocks")
    print(
        f"order block time -> bid block time: p50 {pct(seconds, 0.5):.2f} s, p99 {pct(seconds, 0.99):.2f} s, "
        f"mean {statistics.mean(seconds):.2f} s"
    )
    print(
        f"in-process, feed page received -> MsgCreateBid signed: p50 {pct(inproc, 0.5):.1f} ms, "
        f"p99 {pct(inproc, 0.99):.1f} ms ({len(inproc)} orders)"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
