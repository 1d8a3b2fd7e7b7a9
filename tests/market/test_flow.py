"""The whole market on one machine: order -> bid -> lease -> payments -> close, balances to the unit;
then kill -9 of the chain and of the provider at several points, with no duplicate bid, no leaked
reservation and no missed order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

import sdl
from provider.chain.client import ChainClient
from provider.chain.keys import Key, Keyring
from provider.chain.types import Coin
from provider.money import ZERO, Dec
from tests.conftest import REPO
from tests.market.conftest import (
    BID_DEPOSIT,
    H100_POOL,
    ChainProcess,
    free_port,
    funded,
    make_engine,
    run,
    running,
    wait_until,
)

EXAMPLE = sdl.parse((REPO / "sdl/examples/llm-inference.yaml").read_bytes())  # one H100, uact


def deployment_msg(dseq: int, deposit: int, gpus: int = 1) -> dict[str, object]:
    groups = EXAMPLE.groups_json()
    groups[0]["resources"][0]["resource"]["gpu"]["units"]["val"] = str(gpus)
    if gpus == 0:
        del groups[0]["resources"][0]["resource"]["gpu"]["attributes"]
    groups[0]["resources"][0]["price"]["amount"] = "100000.000000000000000000"
    return {
        "dseq": dseq,
        "groups": groups,
        "version": EXAMPLE.version.hex(),
        "deposit": {"denom": "uact", "amount": str(deposit)},
    }


def test_order_bid_lease_close_with_exact_escrow(chain_proc: ChainProcess, tmp_path: Path) -> None:
    async def go() -> None:
        tenant = await funded(chain_proc.url, Key.generate("tenant"))
        prov_client = await funded(chain_proc.url, Key.generate("provider"))
        engine = make_engine(prov_client, tmp_path / "state")
        async with running(engine):
            deposit = 50_000_000
            await tenant.submit("deployment.create", deployment_msg(77, deposit))
            bids = await wait_until(lambda: tenant.bids(owner=tenant.key.address, dseq=77, state="open"))  # type: ignore[union-attr]
            (bid,) = bids  # type: ignore[misc]
            price = bid.price.amount
            assert bid.price.denom == "uact" and price > ZERO
            assert price.to_decimal() <= EXAMPLE.groups[0].max_price().amount
            await tenant.submit("lease.create", {"bid": {**bid.id.order.to_json(), "provider": bid.id.provider}})
            (active,) = await tenant.leases(owner=tenant.key.address, dseq=77)  # type: ignore[union-attr]
            await _blocks_after(tenant, active.created_height + 2)  # a few blocks of payments
            withdrawn = await prov_client.withdraw_lease(bid.id)
            assert withdrawn.denom == "uact" and withdrawn.amount > ZERO
            await _blocks_after(tenant, (await tenant.status()).height + 1)
            await tenant.submit("deployment.close", {"dseq": 77})
            (lease,) = await tenant.lease_rows(owner=tenant.key.address, dseq=77)
            blocks = lease["closed_height"] - lease["created_height"]
            assert blocks >= 3 and lease["state"] == "closed" and lease["closed_reason"] == "owner"
            paid = price.times(blocks)
            assert Dec.parse(lease["withdrawn"]) == paid and Dec.parse(lease["unsettled"]) == ZERO
            tenant_balance = Dec.parse((await tenant.account(tenant.key.address))["balances"]["uact"])  # type: ignore[union-attr]
            provider_balances = (await prov_client.account(prov_client.key.address))["balances"]  # type: ignore[union-attr]
            assert tenant_balance == Dec.parse(100_000_000) - paid  # escrow refunded, exactly what was paid is gone
            assert Dec.parse(provider_balances["uact"]) == Dec.parse(100_000_000) + paid
            assert Dec.parse(provider_balances["uakt"]) == Dec.parse(100_000_000)  # bid deposit returned
            dep = await tenant.account_deployment(tenant.key.address, 77)
            assert dep["state"] == "closed" and Dec.parse(dep["escrow"]["amount"]) == ZERO
            await wait_until(lambda: _released(engine))
        for c in (tenant, prov_client):
            await c.aclose()

    run(go())


async def _blocks_after(chain: ChainClient, height: int) -> None:
    """Wait for the chain to pass ``height`` (blocks, not wall-clock time)."""

    async def passed() -> bool:
        return (await chain.status()).height > height

    await wait_until(passed, timeout=60)


async def _released(engine: object) -> bool:
    return not engine.inventory.reservations.holds()  # type: ignore[attr-defined]


def test_escrow_running_out_closes_the_lease(chain_proc: ChainProcess, tmp_path: Path) -> None:
    async def go() -> None:
        tenant = await funded(chain_proc.url, Key.generate("tenant"))
        prov = await funded(chain_proc.url, Key.generate("provider"))
        await prov.submit("provider.create", {"attributes": {}, "host_uri": "https://p.example"})
        await tenant.submit("deployment.create", deployment_msg(5, 500_000))
        order = (await tenant.orders(owner=tenant.key.address))[0]  # type: ignore[union-attr]
        await prov.create_bid(order.id, Coin("uact", Dec.parse(10000)), BID_DEPOSIT)
        await tenant.submit("lease.create", {"bid": {**order.id.to_json(), "provider": prov.key.address}})  # type: ignore[union-attr]
        rows = await wait_until(lambda: tenant.lease_rows(owner=tenant.key.address, state="closed"), timeout=40)  # type: ignore[union-attr]
        (lease,) = rows  # type: ignore[misc]
        assert lease["closed_reason"] == "insufficient_funds"
        assert Dec.parse(lease["withdrawn"]) == Dec.parse(500_000)  # every unit of escrow went to the provider
        dep = await tenant.account_deployment(tenant.key.address, 5)  # type: ignore[union-attr]
        assert dep["state"] == "closed"
        for c in (tenant, prov):
            await c.aclose()

    run(go())


def test_bid_timeout_releases_the_reservation(tmp_path: Path) -> None:
    cp = ChainProcess(tmp_path / "c.sqlite", free_port(), block_interval=0.1, bid_timeout_blocks=5)
    cp.start()

    async def go() -> None:
        tenant = await funded(cp.url, Key.generate("tenant"))
        prov = await funded(cp.url, Key.generate("provider"))
        engine = make_engine(prov, tmp_path / "state", pool=[{**H100_POOL[0], "count": 1}])
        async with running(engine):
            await tenant.submit("deployment.create", deployment_msg(1, 5_000_000, gpus=8))
            await wait_until(lambda: tenant.bids(owner=tenant.key.address, dseq=1))  # type: ignore[union-attr]
            assert engine.inventory.reservations.holds()
            closed = await wait_until(lambda: tenant.bids(owner=tenant.key.address, dseq=1, state="closed"))  # type: ignore[union-attr]
            assert closed
            await wait_until(lambda: _released(engine))
            assert engine.metrics.bids_lost.labels(outcome="closed")._value.get() == 1  # type: ignore[attr-defined]
        for c in (tenant, prov):
            await c.aclose()

    try:
        run(go())
    finally:
        cp.stop()


def test_order_timeout_closes_the_order_and_releases_the_hold(tmp_path: Path) -> None:
    cp = ChainProcess(
        tmp_path / "c.sqlite", free_port(), block_interval=0.1, bid_timeout_blocks=0, order_timeout_blocks=8
    )
    cp.start()

    async def go() -> None:
        tenant = await funded(cp.url, Key.generate("tenant"))
        prov = await funded(cp.url, Key.generate("provider"))
        engine = make_engine(prov, tmp_path / "state")
        async with running(engine):
            await tenant.submit("deployment.create", deployment_msg(1, 5_000_000))
            await wait_until(lambda: tenant.bids(owner=tenant.key.address, dseq=1))  # type: ignore[union-attr]
            closed = await wait_until(lambda: tenant.orders(state="closed", owner=tenant.key.address))  # type: ignore[union-attr]
            assert closed
            await wait_until(lambda: _released(engine))
            (bid,) = await tenant.bids(owner=tenant.key.address, dseq=1)  # type: ignore[union-attr]
            assert bid.state == "closed"
            balances = (await prov.account(prov.key.address))["balances"]  # type: ignore[union-attr]
            assert Dec.parse(balances["uakt"]) == Dec.parse(100_000_000)  # deposit back
        for c in (tenant, prov):
            await c.aclose()

    try:
        run(go())
    finally:
        cp.stop()


# -- kill -9 ---------------------------------------------------------------------------------------


def start_provider(
    tmp_path: Path, chain_url: str, gpus_nodes: int = 1, metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    config = {
        "chain": {"url": chain_url, "key": "provider", "keyring": str(tmp_path / "keyring.json")},
        "provider": {
            "state_dir": str(tmp_path / "state"),
            "attributes": {"host": "gpu-provider"},
            "metrics_address": f"127.0.0.1:{metrics_port}" if metrics_port else "",
        },
        "inventory": {"static": [{**H100_POOL[0], "count": gpus_nodes}], "storage_capacity": {"beta3": "10Ti"}},
    }
    (tmp_path / "provider.yaml").write_text(yaml.safe_dump(config))
    return subprocess.Popen(
        [sys.executable, "-m", "provider.cli", "run", "--config", str(tmp_path / "provider.yaml")],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "provider.log", "ab"),
    )


def kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill9_of_either_side_loses_nothing_and_never_bids_twice(chain_proc: ChainProcess, tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "keyring.json")
    pkey = keyring.add("provider")

    async def go() -> None:
        tenant = await funded(chain_proc.url, Key.generate("tenant"))
        await funded(chain_proc.url, pkey)
        me = pkey.address
        reader = ChainClient(chain_proc.url)
        metrics_port = free_port()
        provider = start_provider(tmp_path, chain_proc.url, metrics_port=metrics_port)
        try:
            await wait_until(lambda: reader.provider(me))
            # 1. an 8-GPU order fills the single node; the provider bids
            await tenant.submit("deployment.create", deployment_msg(1, 5_000_000, gpus=8))
            await wait_until(lambda: reader.bids(provider=me, dseq=1))
            scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            assert "gpu_provider_bids_placed_total 1.0" in scrape
            assert "gpu_provider_last_bid_placed_timestamp_seconds" in scrape
            # 2. kill -9 the provider; orders arrive while it is down
            kill9(provider)
            await tenant.submit(
                "deployment.create", deployment_msg(2, 5_000_000, gpus=8)
            )  # must not get a bid: node held
            await tenant.submit("deployment.create", deployment_msg(3, 5_000_000, gpus=0))  # cpu-only: must get a bid
            provider = start_provider(tmp_path, chain_proc.url)
            await wait_until(lambda: reader.bids(provider=me, dseq=3))
            # 3. kill -9 the chain mid-flow, restart it from its database
            chain_proc.kill9()
            chain_proc.start()
            await tenant.submit("deployment.create", deployment_msg(4, 5_000_000, gpus=0))
            await wait_until(lambda: reader.bids(provider=me, dseq=4), timeout=30)
            # 4. the won lease survives a provider kill -9 too
            bid1 = (await reader.bids(provider=me, dseq=1))[0]
            await tenant.submit("lease.create", {"bid": {**bid1.id.order.to_json(), "provider": me}})
            kill9(provider)
            provider = start_provider(tmp_path, chain_proc.url)
            await tenant.submit(
                "deployment.create", deployment_msg(6, 5_000_000, gpus=1)
            )  # node still taken by lease 1
            await tenant.submit("deployment.create", deployment_msg(7, 5_000_000, gpus=0))
            await wait_until(lambda: reader.bids(provider=me, dseq=7), timeout=30)
            all_bids = await reader.bids(provider=me)
            per_order = [str(b.id.order) for b in all_bids]
            assert len(per_order) == len(set(per_order)), "a duplicate bid"
            assert sorted(b.id.order.dseq for b in all_bids) == [1, 3, 4, 7]  # 2 and 6 had no room, nothing missed
        finally:
            kill9(provider)
            await tenant.aclose()
            await reader.aclose()

    run(go())
    assert httpx.get(chain_proc.url + "/status").status_code == 200


def test_malformed_events_are_skipped_not_fatal(chain_proc: ChainProcess, tmp_path: Path) -> None:
    from provider.chain.types import Event, FeedPage

    async def go() -> None:
        tenant = await funded(chain_proc.url, Key.generate("tenant"))
        prov = await funded(chain_proc.url, Key.generate("provider"))
        engine = make_engine(prov, tmp_path / "state")
        real_events = prov.events
        junk = [
            Event(1, 0, "order_created", {"order": "not an id"}),
            Event(
                1,
                1,
                "order_created",
                {"order": {"owner": "o", "dseq": 1, "gseq": 1, "oseq": 1}, "spec": {"resources": "x"}},
            ),
            Event(1, 2, "lease_created", {"lease": {}}),
        ]

        async def events_with_junk(after: str = "", limit: int = 500, wait: float = 0) -> FeedPage:
            if junk:
                batch = tuple(junk)
                junk.clear()
                return FeedPage(batch, after, (await prov.status()).height)
            return await real_events(after=after, limit=limit, wait=wait)

        prov.events = events_with_junk  # type: ignore[method-assign]
        async with running(engine) as task:
            await tenant.submit("deployment.create", deployment_msg(1, 5_000_000))
            await wait_until(lambda: tenant.bids(owner=tenant.key.address, dseq=1))  # type: ignore[union-attr]
            assert not junk and not task.done()  # the junk was read, and the engine is still running
            failed = engine.metrics.events_failed.labels(reason="malformed")._value.get()
            assert failed == 2  # the unreadable ids were counted, not only logged
        for c in (tenant, prov):
            await c.aclose()

    run(go())


def test_provider_started_before_the_chain_waits_for_it(tmp_path: Path) -> None:
    cp = ChainProcess(tmp_path / "c.sqlite", free_port(), block_interval=0.2)
    pkey = Keyring(tmp_path / "keyring.json").add("provider")
    provider = start_provider(tmp_path, cp.url)  # nothing listens there yet
    try:
        log = tmp_path / "provider.log"
        deadline = time.monotonic() + 60
        while "cannot start bidding yet" not in (log.read_text() if log.exists() else ""):
            assert provider.poll() is None, "the daemon must keep waiting for its chain, not exit"
            assert time.monotonic() < deadline, "the daemon never said it is waiting for its chain"
            time.sleep(0.1)
        assert provider.poll() is None
        cp.start()

        async def go() -> None:
            tenant = await funded(cp.url, Key.generate("tenant"))
            await funded(cp.url, pkey)
            reader = ChainClient(cp.url)
            await wait_until(lambda: reader.provider(pkey.address), timeout=30)
            await tenant.submit("deployment.create", deployment_msg(1, 5_000_000))
            await wait_until(lambda: reader.bids(provider=pkey.address, dseq=1), timeout=30)
            await tenant.aclose()
            await reader.aclose()

        run(go())
        assert "cannot start bidding yet" in (tmp_path / "provider.log").read_text()
    finally:
        kill9(provider)
        cp.stop()
