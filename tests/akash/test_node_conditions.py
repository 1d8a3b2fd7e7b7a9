"""The Akash path on nodes shaped like mainnet ones, not like a fresh devnet: a chain whose genesis starts
above height 1 and a node that prunes blocks (the session's devnet, see tests/conftest.py), a node that
keeps no block results at all (`discard_abci_responses`), a chain reset, an unknown REST route, and an
order for a leased IP.

- The chain identity is a label-safe hash of the genesis (chain id, initial height, genesis time): the
  same on every node of the chain and through pruning; a reset changes it.
- The feed passes over pruned heights in one step, says so (log, metric), reconciles with the chain's
  open orders and bids on an order made in the gap; on a node without block results it reads the
  transaction index.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provider.chain.akash.chain import AkashChain, chain_identity
from provider.chain.akash.client import GenesisHead
from provider.chain.port import ChainError
from provider.chain.types import ChainStatus, OrderId
from provider.devcluster.akash import AkashDevnet, DevnetState, NodeShape
from tests.akash.test_daemon import (
    GPU_SDL,
    Daemon,
    akash_daemon,
    bid_transactions,
    deploy,
    deploy_at,
    our_bid,
    skipped_with_reason,
    until,
)
from tests.conftest import SESSION_NODE_SHAPE

pytestmark = pytest.mark.akash
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")  # Kubernetes' label value syntax


def status_of(chain: DevnetState) -> ChainStatus:
    async def go() -> ChainStatus:
        a = AkashChain(chain.rest, chain.rpc)
        try:
            return await a.status()
        finally:
            await a.aclose()

    return asyncio.run(go())


def genesis_identity(devnet: AkashDevnet) -> str:
    """The identity computed from the node's genesis file itself (not from anything the node answers)."""
    doc = json.loads((devnet.home / "config" / "genesis.json").read_text())
    return chain_identity(GenesisHead(doc["genesis_time"], doc["chain_id"], int(doc["initial_height"])))


def rpc_status(devnet: AkashDevnet, chain: DevnetState) -> dict[str, Any]:
    found: dict[str, Any] = devnet._get(f"{chain.rpc}/status")["result"]["sync_info"]
    return found


@pytest.fixture(scope="module")
def daemon(chain: DevnetState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = akash_daemon(chain, tmp_path_factory.mktemp("akash-node-conditions"), bidding={"gap_rescan_seconds": 2})
    try:
        yield d
    finally:
        d.stop()


def test_the_chain_identity_is_a_label_safe_hash_of_the_genesis_stable_through_pruning(
    devnet: AkashDevnet, chain: DevnetState
) -> None:
    sync = rpc_status(devnet, chain)
    assert int(sync["earliest_block_height"]) >= SESSION_NODE_SHAPE.initial_height > 1  # not a height-1 chain
    first = status_of(chain)
    assert first.genesis == genesis_identity(devnet)
    assert LABEL_VALUE.fullmatch(first.genesis) and len(first.genesis) <= 63
    # the node prunes: its earliest block moves up, the identity does not
    earliest = int(sync["earliest_block_height"])
    until_pruned = time.monotonic() + 120
    while int(rpc_status(devnet, chain)["earliest_block_height"]) <= earliest:
        assert time.monotonic() < until_pruned, "the devnet does not prune"
        time.sleep(1)
    assert status_of(chain).genesis == first.genesis


def test_an_order_made_in_a_pruned_gap_is_bid_on(devnet: AkashDevnet, chain: DevnetState, daemon: Daemon) -> None:
    first = deploy(devnet, chain)
    until(lambda: our_bid(devnet, chain, first), f"our bid on dseq {first}", daemon)
    # following the feed (its start, with its own catch-up, is over): the gap must be the feed's
    until(lambda: daemon.metric("gpu_provider_chain_feed_last_poll_timestamp_seconds"), "the feed to run", daemon)
    gaps = daemon.metric("gpu_provider_chain_feed_gaps_total", reason="pruned")
    assert daemon.proc is not None
    os.killpg(daemon.proc.pid, signal.SIGSTOP)  # frozen: its cursor stays where it is while the node prunes
    try:
        in_gap, block = deploy_at(devnet, chain)
        deadline = time.monotonic() + 180
        while int(rpc_status(devnet, chain)["earliest_block_height"]) <= block:  # the order's own block is gone
            assert time.monotonic() < deadline, "the devnet did not prune the order's block"
            time.sleep(1)
    finally:
        os.killpg(daemon.proc.pid, signal.SIGCONT)
    until(lambda: our_bid(devnet, chain, in_gap), f"our bid on dseq {in_gap}, made in the gap", daemon, timeout=180)
    assert daemon.metric("gpu_provider_chain_feed_gaps_total", reason="pruned") > gaps
    until(lambda: daemon.metric("gpu_provider_chain_feed_rescans_total") >= 1, "the reconciliation counted", daemon)
    assert "chain feed gap" in daemon.log.read_text()
    after = deploy(devnet, chain)  # and it follows the chain again from the earliest height it has
    until(lambda: our_bid(devnet, chain, after), f"our bid on dseq {after}", daemon)
    counts = bid_transactions(devnet, chain)
    assert [counts[(chain.keys["tenant"], d)] for d in (first, in_gap, after)] == [1, 1, 1]


def test_an_order_for_a_leased_ip_gets_no_bid(
    devnet: AkashDevnet, chain: DevnetState, daemon: Daemon, tmp_path: Path
) -> None:
    ip_sdl = tmp_path / "ip.yaml"
    ip_sdl.write_text(
        GPU_SDL.read_text().replace("          - global: true\n", "          - global: true\n            ip: lb\n")
        + "\nendpoints:\n  lb:\n    kind: ip\n"
    )
    skipped_with_reason(devnet, chain, daemon, ip_sdl, "ip_leases_not_offered")
    assert "reason=ip_leases_not_offered" in daemon.log.read_text()


def test_an_unknown_route_is_an_error_and_a_missing_object_is_none(chain: DevnetState) -> None:
    async def go() -> None:
        a = AkashChain(chain.rest, chain.rpc)
        try:
            assert await a.deployment(chain.keys["tenant"], 999_999_999) is None  # the chain says: no such thing
            assert await a.order(OrderId(chain.keys["tenant"], 999_999_999, 1, 1)) is None
            for path in ("/akash/deployment/v1beta9/deployments/info", "/no/such/module"):
                with pytest.raises(ChainError) as e:
                    await a.client.rest(path, {"id.owner": chain.keys["tenant"], "id.dseq": 1})
                assert e.value.code == "unknown_route" and chain.rest + path in str(e.value)
        finally:
            await a.aclose()

    asyncio.run(go())


# -- nodes of their own ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def discarding(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AkashDevnet, DevnetState]]:
    """A node that keeps no block results (discard_abci_responses = true), only its transaction index."""
    net = AkashDevnet(tmp_path_factory.mktemp("akash-discard") / "state", NodeShape(discard_results=True))
    try:
        state = net.up(timeout=300)
        yield net, state
    finally:
        net.down()


def test_a_node_without_block_results_is_followed_through_its_tx_index(
    discarding: tuple[AkashDevnet, DevnetState], tmp_path: Path
) -> None:
    devnet, chain = discarding

    async def results() -> None:
        a = AkashChain(chain.rest, chain.rpc)
        try:
            await a.client.rpc("block_results")
        finally:
            await a.aclose()

    with pytest.raises(ChainError, match="not persisting"):  # the node really keeps no block results
        asyncio.run(results())
    daemon = akash_daemon(chain, tmp_path)
    try:
        dseq = deploy(devnet, chain)
        until(lambda: our_bid(devnet, chain, dseq), f"our bid on dseq {dseq}", daemon)
        # the lease the tenant makes reaches the engine through the tx index too
        devnet.tx(chain, "tenant", "market", "lease", "create", "--dseq", str(dseq), "--gseq", "1", "--oseq", "1",
                  "--provider", chain.keys["provider"])  # fmt: skip
        until(lambda: daemon.metric("gpu_provider_leases_won_total") >= 1, "the lease to be won", daemon)
        assert daemon.metric("gpu_provider_chain_feed_gaps_total", reason="block_events_not_kept") >= 1
        assert bid_transactions(devnet, chain)[(chain.keys["tenant"], dseq)] == 1
    finally:
        daemon.stop()


def test_a_reset_chain_is_a_new_chain(discarding: tuple[AkashDevnet, DevnetState], tmp_path: Path) -> None:
    """A height-1 chain (the discarding node; last in this module), reset (same chain id, new genesis): the
    daemon drops its cursor and starts over with a catch-up, as it always did; the height-1 chain's older
    identity (its first block's hash) is still recognised, so an install from before the identity changed
    keeps its cursor."""
    net, chain = discarding
    before = status_of(chain)
    first_block = rpc_status(net, chain)["earliest_block_hash"]
    assert before.names(first_block) and before.names(first_block[:63]) and before.genesis != first_block
    daemon = akash_daemon(chain, tmp_path / "home-1")
    state_dir = tmp_path / "home-1" / "state"
    try:
        until((state_dir / "chain-cursor").is_file, "the daemon's cursor", daemon)
    finally:
        daemon.stop()
    saved = json.loads((state_dir / "chain-cursor").read_text())
    assert saved["genesis"] == before.genesis
    net.down()
    chain = net.up(timeout=300, fund=False)  # the same chain id, a new genesis
    after = status_of(chain)
    assert after.chain_id == before.chain_id and after.genesis != before.genesis
    assert not after.names(before.genesis) and not after.names(first_block)
    (tmp_path / "home-2").mkdir()
    (tmp_path / "home-2" / "state").symlink_to(state_dir)  # the same state directory, a new node
    daemon = akash_daemon(chain, tmp_path / "home-2")
    try:
        until(lambda: daemon.metric("gpu_provider_chain_resets_total") >= 1, "the reset to be noticed", daemon)
        until(
            lambda: json.loads((state_dir / "chain-cursor").read_text())["genesis"] == after.genesis,
            "the cursor to move to the new chain",
            daemon,
        )
    finally:
        daemon.stop()
