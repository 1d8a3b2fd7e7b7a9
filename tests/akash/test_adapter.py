"""The Akash adapter against Akash's own node: keys derived as the `akash` CLI derives them, the chain
port's reads in our domain types, and transactions signed here that the real chain includes, refuses
with a clear code, or accepts after another process used the same key.

Deployments and leases are made with the real `akash` CLI as the tenant; everything the provider does
goes through provider.chain.akash."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import sdl
from provider.chain.akash.chain import END_OF_BLOCK, AkashChain
from provider.chain.akash.keys import AkashKey, from_armored
from provider.chain.port import ChainError
from provider.chain.types import BidId, Coin, OrderId
from provider.devcluster.akash import AkashDevnet, DevnetState
from provider.money import Dec
from sdl.spec import group_from_json
from tests.conftest import REPO

pytestmark = pytest.mark.akash
T = TypeVar("T")

GPU_SDL = REPO / "sdl" / "examples" / "llm-inference.yaml"  # one H100 80GB SXM with beta3 storage, uact
CAPABILITIES = {
    "region": "devnet",
    "capabilities/gpu/vendor/nvidia/model/h100": "true",
    "capabilities/gpu/vendor/nvidia/model/h100/ram/80Gi": "true",
    "capabilities/gpu/vendor/nvidia/model/h100/ram/80Gi/interface/sxm": "true",
    "capabilities/storage/1/class": "beta3",
    "capabilities/storage/1/persistent": "true",
}
DEPOSIT = Coin("uact", Dec.parse("500000"))


def run(call: Awaitable[T]) -> T:
    async def go() -> T:
        return await call

    return asyncio.run(go())


def adapter(chain: DevnetState, key: str = "provider") -> AkashChain:
    return AkashChain(chain.rest, chain.rpc, AkashKey.from_mnemonic(key, chain.mnemonics[key]))


async def with_adapter(chain: DevnetState, body: Any) -> Any:
    a = adapter(chain)
    try:
        return await body(a)
    finally:
        await a.aclose()


def deploy(devnet: AkashDevnet, chain: DevnetState) -> tuple[OrderId, int]:
    """A GPU deployment made by the tenant with the real CLI; its order id and the block it is in."""
    result = devnet.tx(chain, "tenant", "deployment", "create", str(GPU_SDL), "--deposit", "5000000uact")
    created = next(e for e in result["events"] if e["type"] == "akash.deployment.v1.EventDeploymentCreated")
    dseq = int(json.loads({a["key"]: a["value"] for a in created["attributes"]}["id"])["dseq"])
    return OrderId(chain.keys["tenant"], dseq, 1, 1), int(result["height"])


@pytest.fixture(scope="module")
def registered(chain: DevnetState) -> DevnetState:
    async def body(a: AkashChain) -> None:
        await a.register_provider(CAPABILITIES, "https://provider.devnet.example:8443")

    run(with_adapter(chain, body))
    return chain


def test_keys_from_the_mnemonic_are_the_clis_keys(devnet: AkashDevnet, chain: DevnetState) -> None:
    for name in ("provider", "tenant", "validator"):
        key = AkashKey.from_mnemonic(name, chain.mnemonics[name])
        shown = json.loads(devnet.akash(chain, "keys", "show", name, "--keyring-backend", "test", "--output", "json"))
        assert key.address == shown["address"] == chain.keys[name]
        assert json.loads(shown["pubkey"])["key"] == base64.b64encode(key.public_bytes).decode()
    # the CLI's encrypted export of the same key imports to the same account
    exported = subprocess.run(
        [str(Path(chain.bin_dir) / "akash"), "keys", "export", "provider", "--keyring-backend", "test",
         "--home", str(devnet.home)],
        input="s3cret-pass\ns3cret-pass\n", capture_output=True, text=True, check=True, timeout=60,
        env={**os.environ, "LD_LIBRARY_PATH": str(Path(chain.bin_dir).parent / "lib")},
    ).stdout  # fmt: skip
    assert "BEGIN TENDERMINT PRIVATE KEY" in exported
    assert from_armored("provider", exported, "s3cret-pass").address == chain.keys["provider"]


def test_registering_publishes_the_capabilities_and_is_idempotent(registered: DevnetState) -> None:
    async def body(a: AkashChain) -> tuple[Any, int, int]:
        info = await a.provider(a.address)
        sent = a.client.txs_sent
        await a.register_provider(CAPABILITIES, "https://provider.devnet.example:8443")  # unchanged: no tx
        return info, sent, a.client.txs_sent

    info, before, after = run(with_adapter(registered, body))
    assert info is not None
    assert info.attributes == CAPABILITIES
    assert info.host_uri == "https://provider.devnet.example:8443"
    assert after == before


def test_an_order_from_the_cli_is_followed_read_and_bid_on(devnet: AkashDevnet, registered: DevnetState) -> None:
    chain = registered
    oid, height = deploy(devnet, chain)

    async def body(a: AkashChain) -> dict[str, Any]:
        page = await a.events(f"{height - 1}:{END_OF_BLOCK}", wait=10)
        order = await a.order(oid)
        deployment = await a.deployment(oid.owner, oid.dseq)
        await a.create_bid(oid, Coin("uact", Dec.parse("7000.5")), DEPOSIT)
        bids = await a.bids(provider=a.address, owner=oid.owner, dseq=oid.dseq)
        again: ChainError | None = None
        try:
            await a.create_bid(oid, Coin("uact", Dec.parse("7000.5")), DEPOSIT)
        except ChainError as e:
            again = e
        after = await a.events(f"{height}:{END_OF_BLOCK}", wait=10)
        while (
            not any(e.type == "bid_created" for e in after.events) and after.cursor != f"{after.height}:{END_OF_BLOCK}"
        ):
            after = await a.events(after.cursor, wait=10)
        return {"page": page, "order": order, "deployment": deployment, "bids": bids, "again": again, "after": after}

    got = run(with_adapter(chain, body))
    created = [e for e in got["page"].events if e.type == "order_created"]
    assert [OrderId(**e.data["order"]) for e in created] == [oid]
    assert created[0].height == height
    # the order's group is the SDL's group, in the form the bid engine reads
    spec = sdl.parse(GPU_SDL.read_bytes())
    assert got["order"].group == spec.groups[0].to_json()
    assert group_from_json(got["order"].group) == spec.groups[0]
    assert got["order"].state == "open"
    assert got["order"].max_price() == Coin("uact", Dec.parse("10000"))
    assert got["deployment"].version == spec.version.hex()
    assert got["deployment"].escrow == Coin("uact", Dec.parse("5000000"))
    (bid,) = got["bids"]
    assert bid.id == BidId(oid, chain.keys["provider"]) and bid.state == "open"
    assert bid.price == Coin("uact", Dec.parse("7000.5"))  # LegacyDec on the wire, exact both ways
    assert got["again"] is not None and got["again"].code == "bid_exists" and got["again"].status == 400
    assert "bid exists" in str(got["again"])
    bid_events = [e for e in got["after"].events if e.type == "bid_created"]
    assert bid_events and bid_events[0].data["bid"]["provider"] == chain.keys["provider"]


def test_the_feed_cursor_means_the_same_place_every_time(devnet: AkashDevnet, chain: DevnetState) -> None:
    _, height = deploy(devnet, chain)

    async def body(a: AkashChain) -> tuple[Any, Any, Any]:
        whole = await a.events(f"{height - 1}:{END_OF_BLOCK}", wait=10)
        first = whole.events[0]
        rest = await a.events(first.cursor, wait=0)  # resume after the first event of that block
        one = await a.events(f"{height - 1}:{END_OF_BLOCK}", limit=1)
        return whole, rest, one

    whole, rest, one = run(with_adapter(chain, body))
    assert len(whole.events) >= 2 and {e.height for e in whole.events} == {height}
    assert rest.events == whole.events[1:]
    assert one.events == whole.events[:1] and one.cursor == whole.events[0].cursor


def test_refusals_carry_a_clear_code(devnet: AkashDevnet, registered: DevnetState) -> None:
    oid, _ = deploy(devnet, registered)

    async def refused(call: Any) -> ChainError:
        async def body(a: AkashChain) -> ChainError:
            try:
                await call(a)
            except ChainError as e:
                return e
            raise AssertionError("the chain accepted it")

        result: ChainError = await with_adapter(registered, body)
        return result

    small = run(refused(lambda a: a.create_bid(oid, Coin("uact", Dec.parse("5000")), Coin("uact", Dec.parse("1")))))
    assert small.code == "invalid_deposit" and "minimum" in str(small)
    over = run(refused(lambda a: a.create_bid(oid, Coin("uact", Dec.parse("10001")), DEPOSIT)))
    assert over.code == "invalid_price"
    missing = OrderId(oid.owner, oid.dseq + 100000, 1, 1)
    gone = run(refused(lambda a: a.create_bid(missing, Coin("uact", Dec.parse("5")), DEPOSIT)))
    assert gone.code == "not_found" and gone.status == 400
    for e in (small, over, gone):
        assert not e.unreachable


def test_a_sequence_used_by_another_process_is_recovered(devnet: AkashDevnet, registered: DevnetState) -> None:
    chain = registered
    oids = [deploy(devnet, chain)[0] for _ in range(2)]

    async def body(a: AkashChain) -> tuple[list[int], int]:
        await a.create_bid(oids[0], Coin("uact", Dec.parse("6000")), DEPOSIT)  # sequence now tracked here
        # the same key signs elsewhere (the akash CLI): our tracked sequence is now behind the chain's
        devnet.tx(chain, "provider", "bank", "send", chain.keys["provider"], chain.keys["tenant"], "1uakt")
        await a.create_bid(oids[1], Coin("uact", Dec.parse("6000")), DEPOSIT)
        ours = [b.id.order.dseq for b in await a.bids(provider=a.address, state="open") if b.id.order in oids]
        return ours, a.client.sequence_resyncs

    dseqs, resyncs = run(with_adapter(chain, body))
    assert sorted(dseqs) == sorted(o.dseq for o in oids)
    assert resyncs == 1  # the mismatch happened and was recovered from by re-reading the account


def test_a_lease_is_withdrawn_to_the_unit_and_the_bid_closed(devnet: AkashDevnet, registered: DevnetState) -> None:
    chain = registered
    oid, _ = deploy(devnet, chain)
    provider = chain.keys["provider"]

    async def bid(a: AkashChain) -> None:
        await a.create_bid(oid, Coin("uact", Dec.parse("100")), DEPOSIT)

    run(with_adapter(chain, bid))
    devnet.tx(
        chain,
        "tenant",
        "market",
        "lease",
        "create",
        "--dseq",
        str(oid.dseq),
        "--gseq",
        "1",
        "--oseq",
        "1",
        "--provider",
        provider,
    )
    lease_id = BidId(oid, provider)

    async def body(a: AkashChain) -> dict[str, Any]:
        lease = await a.lease(lease_id)
        await a.blocks.wait_beyond((await a.status()).height + 3, 30)  # let the lease earn a few blocks
        before = await a.client.balance(provider, "uact")
        withdrawn = await a.withdraw_lease(lease_id)
        after = await a.client.balance(provider, "uact")
        await a.close_bid(oid, "decommission")
        closed = await a.lease(lease_id)
        return {"lease": lease, "before": before, "withdrawn": withdrawn, "after": after, "closed": closed}

    got = run(with_adapter(chain, body))
    assert got["lease"] is not None and got["lease"].state == "active"
    assert got["lease"].price == Coin("uact", Dec.parse("100"))
    assert got["withdrawn"].denom == "uact" and got["withdrawn"].amount > Dec.parse("0")
    # fees are paid in uakt, so the uact balance moves by exactly what was withdrawn
    assert Dec.parse(str(got["after"] - got["before"])) == got["withdrawn"].amount
    assert got["closed"] is not None and got["closed"].state == "closed"
    assert got["closed"].closed_reason == "decommission"
