"""Composition root: builds the adapters from the config and runs the services in one TaskGroup."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server

from provider.bidding.engine import BidEngine, EngineConfig
from provider.bidding.pricing import LinearPricing, ScriptPricing
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


def build_pricing(config: Config) -> LinearPricing | ScriptPricing:
    p = config.pricing
    if p.strategy == "script":
        return ScriptPricing(p.script_path, p.script_timeout, p.script_concurrency)
    return p.linear


async def run(config: Config, registry: CollectorRegistry | None = None) -> None:
    registry = registry or CollectorRegistry()
    key = Keyring(config.keyring).get(config.key_name)
    chain = ChainClient(config.chain_url, key)
    reservations = Reservations(config.storage_capacity, config.bid_hold_seconds)
    inventory: ClusterInventory | StaticInventory
    if config.static_nodes:
        inventory = StaticInventory(nodes_from_config(config.static_nodes), reservations)
    else:
        inventory = ClusterInventory(Kube(config.kubeconfig), reservations)
    engine = BidEngine(
        chain,
        inventory,
        build_pricing(config),
        EngineConfig(
            state_dir=config.state_dir,
            attributes=config.attributes,
            host_uri=config.host_uri,
            deposit=Coin(config.deposit_denom, config.deposit_amount),
            bid_hold_seconds=config.bid_hold_seconds,
            storage_classes=config.storage_classes,
            tenant_allow=config.tenant_allow,
            tenant_deny=config.tenant_deny,
        ),
        BidMetrics(registry),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if config.metrics_address:
        host, _, port = config.metrics_address.rpartition(":")
        start_http_server(int(port), addr=host, registry=registry)
    log.info(
        "provider starting address=%s chain=%s metrics=%s",
        key.address,
        config.chain_url,
        config.metrics_address or "off",
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
