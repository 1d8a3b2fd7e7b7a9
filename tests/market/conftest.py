"""The mock chain as a real server on loopback (a `gpu-provider chain serve` process), keys, and a bid
engine wired to it with a static inventory."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from provider.bidding.engine import BidEngine, EngineConfig
from provider.bidding.pricing import LinearPricing
from provider.chain.client import ChainClient
from provider.chain.keys import Key
from provider.chain.types import Coin
from provider.config import StaticNode
from provider.inventory.reservations import Reservations
from provider.inventory.static import StaticInventory, nodes_from_config
from provider.metrics import BidMetrics
from provider.money import Dec

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ChainProcess:
    db: Path
    port: int
    block_interval: float
    bid_timeout_blocks: int = 50
    order_timeout_blocks: int = 0
    host: str = "127.0.0.1"  # another address (a dev cluster node's bridge) is served with --expose
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "provider.cli", "chain", "serve", "--db", str(self.db), "--port", str(self.port),
            "--block-interval", str(self.block_interval), "--bid-timeout-blocks", str(self.bid_timeout_blocks),
            "--order-timeout-blocks", str(self.order_timeout_blocks), "--host", self.host,
        ]  # fmt: skip
        if self.host != "127.0.0.1":
            cmd.append("--expose")
        with open(self.db.with_suffix(".log"), "ab") as log:  # never a pipe nobody reads: it would fill and block
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/status", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("mock chain did not start")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def wait_until(check: object, timeout: float = 20) -> object:
    """Poll an async check until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()  # type: ignore[operator]
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError("timed out")


@asynccontextmanager
async def running(engine: BidEngine) -> AsyncIterator[asyncio.Task[None]]:
    """The engine's run loop in the background, from its registration on chain until the block ends.
    Yields the loop's task, so a test can check it is still alive."""
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        await wait_until(lambda: engine.chain.provider(engine.me), timeout=30)
        yield task
    finally:
        stop.set()
        await task


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def funded(url: str, key: Key, uakt: int = 100_000_000, uact: int = 100_000_000) -> ChainClient:
    client = ChainClient(url, key)
    await client.fund(key.address, "uakt", Dec.parse(uakt))
    await client.fund(key.address, "uact", Dec.parse(uact))
    return client


BID_DEPOSIT = Coin("uakt", Dec.parse(500_000))  # the mock chain's minimum

H100_POOL = [
    {
        "name": "h100",
        "model": "h100",
        "ram": "80Gi",
        "interface": "sxm",
        "gpus": 8,
        "cpu": 192,
        "memory_gib": 2048,
        "count": 2,
    }
]


def make_engine(
    chain: ChainClient,
    state_dir: Path,
    pool: list[dict[str, object]] | None = None,
    pricing: LinearPricing | None = None,
    storage_tib: int = 10,
    **config: object,
) -> BidEngine:
    cfg = EngineConfig(
        state_dir=state_dir, attributes={"host": "gpu-provider", "region": "us-west"}, feed_wait=0.5, **config
    )  # type: ignore[arg-type]
    engine: BidEngine | None = None
    reservations = Reservations(
        {"beta3": storage_tib * 1024**4}, cfg.hold_blocks, height=lambda: engine.height if engine else 0
    )
    nodes = nodes_from_config([StaticNode.model_validate(n) for n in pool or H100_POOL])
    inventory = StaticInventory(nodes, reservations)
    engine = BidEngine(chain, inventory, pricing or LinearPricing(), cfg, BidMetrics(CollectorRegistry()))
    return engine


@asynccontextmanager
async def parties(url: str) -> AsyncIterator[tuple[ChainClient, ChainClient]]:
    """A funded tenant and a funded provider on the chain at ``url``, closed afterwards."""
    tenant = await funded(url, Key.generate("tenant"))
    prov = await funded(url, Key.generate("provider"))
    try:
        yield tenant, prov
    finally:
        for c in (tenant, prov):
            await c.aclose()
