"""Composition root: builds the adapters from the config and runs the services in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, start_http_server

from provider.api.app import ApiLimits, create_app
from provider.api.auth import ChainKeyVerifier, PublicKeys
from provider.bidding.engine import BidEngine, EngineConfig
from provider.bidding.pricing import PricingPort, ScriptPricing
from provider.chain.client import ChainClient
from provider.chain.keys import Keyring
from provider.chain.mock.state import ChainParams
from provider.chain.port import ChainPort
from provider.chain.types import Coin
from provider.config import Config
from provider.deploy.deployer import Deployer
from provider.deploy.watch import WatchCache
from provider.errors import ConfigError
from provider.inventory.reservations import Reservations
from provider.inventory.service import ClusterInventory
from provider.inventory.static import StaticInventory, nodes_from_config
from provider.kube import Kube
from provider.leader import LeaderElector, LeaderSettings, LeadershipLostError
from provider.leases.reaper import OrphanReaper, ReaperSettings
from provider.leases.service import LeaseService, LeaseSettings
from provider.metrics import BidMetrics, LeaderMetrics, LeaseMetrics

log = logging.getLogger("provider")


def build_pricing(config: Config) -> PricingPort:
    p = config.pricing
    if p.strategy == "script":
        return ScriptPricing(p.script.path, p.script.timeout, p.script.concurrency)
    return p.linear.pricing()


def build_chain(config: Config) -> tuple[ChainPort, str]:
    """The chain port the config selects, and where it is (for the log)."""
    c = config.chain
    if c.kind == "mock":
        return ChainClient(c.url, Keyring(c.keyring).get(c.key)), c.url
    try:  # imported only for Akash (its protobuf types are generated, committed in provider/chain/akash/pb)
        from provider.chain.akash.chain import AkashChain
        from provider.chain.akash.client import GasSettings
        from provider.chain.akash.keys import load_key_file, read_passphrase
    except ImportError as e:
        raise ConfigError(
            f"chain.kind akash: the Akash adapter cannot be imported ({e}); this installation lacks "
            "provider/chain/akash/pb (an install from an incomplete source tree?): reinstall from a full "
            "checkout, or regenerate it with `make proto`"
        ) from None
    a = c.akash
    assert a.key_file is not None  # the config refuses kind akash without one
    gas = GasSettings(a.gas_price, a.gas_denom, a.gas_adjustment, a.inclusion_timeout)
    passphrase = read_passphrase(a.key_passphrase_file) if a.key_passphrase_file else None
    key = load_key_file(a.key_file, "provider", passphrase)
    chain = AkashChain(a.rest, a.rpc, key, a.chain_id, gas, a.max_blocks_per_poll)
    return chain, f"akash rpc={a.rpc} rest={a.rest}"


async def run(config: Config, registry: CollectorRegistry | None = None) -> None:
    registry = registry or CollectorRegistry()
    chain, chain_where = build_chain(config)
    engine: BidEngine | None = None
    reservations = Reservations(
        config.inventory.storage_capacity,
        config.bidding.hold_blocks,
        height=lambda: engine.height if engine is not None else 0,  # holds are counted in chain heights
    )
    inventory: ClusterInventory | StaticInventory
    leases: LeaseService | None = None
    reaper: OrphanReaper | None = None
    elector: LeaderElector | None = None
    leader_metrics = LeaderMetrics(registry)
    if config.inventory.static:
        inventory = StaticInventory(nodes_from_config(config.inventory.static), reservations)
    else:
        kubeconfig = str(config.inventory.kubeconfig) if config.inventory.kubeconfig else None
        catalogue = config.inventory.catalogue()
        kube = Kube(kubeconfig, catalogue)
        inventory = ClusterInventory(kube, reservations)
        d = config.deploy
        leases = LeaseService(
            chain,
            Deployer(kube, d.settings(), d.namespace, catalogue),
            LeaseMetrics(registry),
            LeaseSettings(
                d.manifest_timeout_blocks,
                tuple(d.blocked_hostnames),
                withdrawal_period_seconds=d.withdrawal_period_seconds,
                close_failed_after_seconds=d.close_failed_after_seconds,
                sync_seconds=config.ha.sync_seconds if config.ha.enabled else 0.0,
            ),
            height=lambda: engine.height if engine is not None else 0,
        )
        if config.ha.enabled:
            ha = config.ha
            leases.leading = False
            elector = LeaderElector(
                kube,
                LeaderSettings(
                    d.namespace, ha.lease_name, ha.identity, ha.lease_seconds, ha.renew_seconds, ha.retry_seconds
                ),
                on_change=leader_metrics.set,
            )
        cache = WatchCache(kube, on_change=leases.namespace_changed)
        leases.deployer.cache = cache
        reaper = OrphanReaper(
            chain,
            leases.deployer,
            leases.metrics,
            ReaperSettings(d.orphans.interval_seconds, d.orphans.grace_seconds, d.orphans.dry_run),
            live=leases.live,
        )
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
            maintenance=b.maintenance,
            recheck_seconds=b.recheck_seconds,
            max_waiting_orders=b.max_waiting_orders,
            gap_rescan_seconds=b.gap_rescan_seconds,
            register_debounce_seconds=b.register_debounce_seconds,
        ),
        BidMetrics(registry),
        on_lease_won=leases.lease_won if leases is not None else None,
        on_lease_closed=leases.lease_closed if leases is not None else None,
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
        "provider starting address=%s chain=%s metrics=%s ha=%s",
        chain.address,
        chain_where,
        metrics_address or "off",
        elector.identity if elector is not None else "off",
    )

    async def leader_work(halt: asyncio.Event) -> None:
        """What only the leader does: bid, deploy (HA: take the leases over), sweep orphans."""
        if leases is not None and elector is not None and not await leases.take_over(halt):
            return
        async with asyncio.TaskGroup() as tg:
            tg.create_task(engine.run(halt))
            if leases is not None and elector is not None:
                tg.create_task(leases.lead(halt))
            if leases is not None and reaper is not None:
                tg.create_task(_after_ready(leases, reaper, halt))

    if elector is None:
        leader_metrics.leader.set(1)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(leader_work(stop) if elector is None else elector.run(leader_work, stop))
            if leases is not None:
                tg.create_task(leases.run(stop))
                if config.api.address:
                    leading = (lambda: elector.leading) if elector is not None else (lambda: True)
                    identity = elector.identity if elector is not None else ""
                    server = api_server(config, leases, chain, engine, inventory, leading, identity)
                    tg.create_task(_serve_until(server, stop))
    except* LeadershipLostError as group:
        raise group.exceptions[0] from None
    finally:
        await chain.aclose()


async def _after_ready(leases: LeaseService, reaper: OrphanReaper, stop: asyncio.Event) -> None:
    """Sweep for orphans only once the lease service knows its leases (so none of them looks orphaned)."""
    while not leases.ready and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)
    await reaper.run(stop)


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon's stop event ends it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def api_server(
    config: Config,
    leases: LeaseService,
    chain: ChainPort,
    engine: BidEngine,
    inventory: ClusterInventory | StaticInventory,
    leading: Callable[[], bool] = lambda: True,
    identity: str = "",
) -> uvicorn.Server:
    a = config.api
    keys = PublicKeys(chain.account_public_key)
    verifier: ChainKeyVerifier
    if config.chain.kind == "akash":  # tenants sign with their secp256k1 account keys (ES256K, ES256KADR36)
        from provider.chain.akash.jwt import AkashTokenVerifier

        verifier = AkashTokenVerifier(keys, max_lifetime=a.max_token_lifetime)
    else:
        verifier = ChainKeyVerifier(keys, max_lifetime=a.max_token_lifetime)

    async def provider_status() -> dict[str, Any]:
        current = inventory.current
        return {
            "address": leases.me,
            "leader": {"leading": leading(), "identity": identity},
            "leases": {"active": len(leases.records), "by_state": leases.public_status()},
            "bids": {"open": engine.holds.count()},
            "maintenance": engine.in_maintenance(),
            "gpus": [
                {"model": m.model, "total": m.total, "allocated": m.allocated, "reserved": m.reserved, "free": m.free}
                for m in current.by_model()
            ],
        }

    app = create_app(
        leases,
        verifier,
        provider_status,
        ApiLimits(
            a.max_manifest_bytes,
            a.client_rate,
            a.account_rate,
            max_follow_streams=a.max_follow_streams,
            max_follow_streams_per_account=a.max_follow_streams_per_account,
            follow_max_seconds=a.follow_max_seconds,
        ),
    )
    host, _, port = a.address.rpartition(":")
    tls: dict[str, Any] = {}
    if not a.insecure_http:
        tls = {"ssl_certfile": str(a.tls_cert), "ssl_keyfile": str(a.tls_key)}
    return _ApiServer(
        uvicorn.Config(
            app, host=host.strip("[]"), port=int(port), log_level="warning", access_log=False, lifespan="off", **tls
        )
    )


async def _serve_until(server: uvicorn.Server, stop: asyncio.Event) -> None:
    task = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await task


def serve_mock_chain(db: Path, host: str, port: int, block_interval: float, params: ChainParams) -> None:
    """Run the mock chain until interrupted: SQLite state, a block every ``block_interval`` seconds."""
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
