"""Composition root: builds the adapters from the config and runs the services in one TaskGroup."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from provider.bidding.engine import BidEngine, EngineConfig
from provider.bidding.pricing import PricingPort, ScriptPricing
from provider.chain.client import ChainClient
from provider.chain.keys import Keyring
from provider.chain.mock.state import ChainParams
from provider.chain.types import Coin
from provider.config import Config
from provider.inventory.reservations import Reservations
from provider.inventory.service import ClusterInventory
from provider.inventory.static import StaticInventory, nodes_from_config
from provider.kube import Kube
from provider.metrics import BidMetrics

log = logging.getLogger("provider")


def build_pricing(config: Config) -> PricingPort:
    p = config.pricing
    if p.strategy == "script":
        return ScriptPricing(p.script.path, p.script.timeout, p.script.concurrency)
    return p.linear.pricing()


async def run(config: Config, registry: CollectorRegistry | None = None) -> None:
    registry = registry or CollectorRegistry()
    key = Keyring(config.chain.keyring).get(config.chain.key)
    chain = ChainClient(config.chain.url, key)
    engine: BidEngine | None = None
    reservations = Reservations(
        config.inventory.storage_capacity,
        config.bidding.hold_blocks,
        height=lambda: engine.height if engine is not None else 0,  # holds are counted in chain heights
    )
    inventory: ClusterInventory | StaticInventory
    if config.inventory.static:
        inventory = StaticInventory(nodes_from_config(config.inventory.static), reservations)
    else:
        kubeconfig = str(config.inventory.kubeconfig) if config.inventory.kubeconfig else None
        inventory = ClusterInventory(Kube(kubeconfig), reservations)
    b = config.bidding
    engine = BidEngine(
        chain,
        inventory,
        build_pricing(config),
        EngineConfig(
            state_dir=config.provider.state_dir,
            attributes=dict(config.provider.attributes),
            host_uri=config.provider.host_uri,
            deposit=Coin(b.deposit.denom, b.deposit.amount),
            hold_blocks=b.hold_blocks,
            storage_classes=frozenset(b.storage_classes),
            tenant_allow=None if b.tenants.allow is None else frozenset(b.tenants.allow),
            tenant_deny=frozenset(b.tenants.deny),
        ),
        BidMetrics(registry),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics_address = config.provider.metrics_address
    if metrics_address:
        host, _, port = metrics_address.rpartition(":")
        start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    log.info(
        "provider starting address=%s chain=%s metrics=%s",
        key.address,
        config.chain.url,
        metrics_address or "off",
    )
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(engine.run(stop))
    finally:
        await chain.aclose()


def serve_mock_chain(db: Path, host: str, port: int, block_interval: float, params: ChainParams) -> None:
    """Run the mock chain until interrupted: SQLite state, a block every ``block_interval`` seconds."""
    import uvicorn

    from provider.chain.mock.server import BlockTicker, create_app
    from provider.chain.mock.state import Chain

    db.parent.mkdir(parents=True, exist_ok=True)
    chain = Chain(db, params)
    ticker = BlockTicker(chain, block_interval)
    ticker.start()
    print(f"mock chain on http://{host}:{port} (state {db}, a block every {block_interval}s)", file=sys.stderr)
    try:
        uvicorn.run(create_app(chain), host=host, port=port, log_level="warning")
    finally:
        ticker.stop()
        chain.close()
