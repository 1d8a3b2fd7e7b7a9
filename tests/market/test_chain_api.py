"""The mock chain's HTTP contract: OpenAPI, queries with filters and paging, the event cursor, signed
transactions (forged, tampered, replayed and unauthorized ones refused), junk requests."""

from __future__ import annotations

import asyncio
import copy
import json

import httpx
import pytest

import sdl
from provider.chain.client import ChainClient, ChainError
from provider.chain.keys import Key
from provider.chain.types import Coin
from provider.money import Dec
from tests.conftest import REPO
from tests.market.conftest import BID_DEPOSIT, ChainProcess, funded, run

EXAMPLE = sdl.parse((REPO / "sdl/examples/llm-inference.yaml").read_bytes())


def deployment_msg(dseq: int, deposit: int = 5_000_000) -> dict[str, object]:
    return {
        "dseq": dseq,
        "groups": EXAMPLE.groups_json(),
        "version": EXAMPLE.version.hex(),
        "deposit": {"denom": "uact", "amount": str(deposit)},
    }


def test_openapi_documents_every_endpoint(chain_proc: ChainProcess) -> None:
    spec = httpx.get(chain_proc.url + "/openapi.json").json()
    for path in (
        "/status",
        "/orders",
        "/bids",
        "/leases",
        "/events",
        "/tx",
        "/accounts/{address}",
        "/providers/{address}",
    ):
        assert path in spec["paths"], path


def test_orders_filter_and_page(chain_proc: ChainProcess) -> None:
    async def go() -> None:
        tenant = await funded(chain_proc.url, Key.generate("t"))
        for dseq in range(1, 8):
            await tenant.submit("deployment.create", deployment_msg(dseq, 500_000))
        page = httpx.get(chain_proc.url + "/orders", params={"limit": 3, "owner": tenant.key.address}).json()  # type: ignore[union-attr]
        assert len(page["items"]) == 3 and page["next"]
        everything = await tenant.orders(state="open", owner=tenant.key.address)  # type: ignore[union-attr]
        assert [o.id.dseq for o in everything] == list(range(1, 8))
        assert await tenant.orders(state="open", owner="gp1nobody") == []
        await tenant.aclose()

    run(go())


def test_event_cursor_resumes_without_gaps(chain_proc: ChainProcess) -> None:
    async def go() -> None:
        tenant = await funded(chain_proc.url, Key.generate("t"))
        reader = ChainClient(chain_proc.url)
        page = await reader.events(limit=2)
        first, cursor = page.events, page.cursor
        for dseq in (10, 11, 12):
            await tenant.submit("deployment.create", deployment_msg(dseq, 500_000))
        seen: list[str] = [e.cursor for e in first]
        while True:  # reconnect after every small batch, as a flaky subscriber would
            page = await reader.events(after=cursor, limit=2)
            batch, cursor = page.events, page.cursor
            if not batch:
                break
            seen += [e.cursor for e in batch]
        everything = (await reader.events(limit=5000)).events
        assert seen == [e.cursor for e in everything]
        created = [e for e in everything if e.type == "order_created"]
        assert [e.data["order"]["dseq"] for e in created] == [10, 11, 12]
        await tenant.aclose()
        await reader.aclose()

    run(go())


def test_forged_tampered_and_replayed_transactions_are_refused(chain_proc: ChainProcess) -> None:
    async def go() -> None:
        alice, mallory = Key.generate("alice"), Key.generate("mallory")
        client = await funded(chain_proc.url, alice)
        status = await client.status()
        tx = alice.sign_tx(status.chain_id, 1, "deployment.create", deployment_msg(1))
        tampered = copy.deepcopy(tx)
        tampered["msg"]["deposit"]["amount"] = "1"
        assert httpx.post(chain_proc.url + "/tx", json=tampered).json()["code"] == "unauthorized"
        forged = mallory.sign_tx(status.chain_id, 1, "deployment.create", deployment_msg(2))
        forged["account"] = alice.address  # mallory pretending to be alice
        r = httpx.post(chain_proc.url + "/tx", json=forged)
        assert r.status_code == 401
        other_chain = alice.sign_tx("another-chain", 1, "deployment.create", deployment_msg(3))
        assert httpx.post(chain_proc.url + "/tx", json=other_chain).status_code == 401
        ok = httpx.post(chain_proc.url + "/tx", json=tx)
        assert ok.status_code == 200, ok.text
        replay = httpx.post(chain_proc.url + "/tx", json=tx)
        assert replay.status_code == 409 and replay.json()["code"] == "bad_sequence"
        balance = (await client.account(alice.address))["balances"]["uact"]
        assert Dec.parse(balance) == Dec.parse(100_000_000 - 5_000_000)  # charged once
        await client.aclose()

    run(go())


def test_only_the_owner_accepts_and_only_the_provider_bids_as_itself(chain_proc: ChainProcess) -> None:
    async def go() -> None:
        tenant = await funded(chain_proc.url, Key.generate("tenant"))
        other = await funded(chain_proc.url, Key.generate("other"))
        prov = await funded(chain_proc.url, Key.generate("prov"))
        await prov.submit("provider.create", {"attributes": {}, "host_uri": "https://p.example"})
        await tenant.submit("deployment.create", deployment_msg(5))
        order = (await tenant.orders(owner=tenant.key.address))[0]  # type: ignore[union-attr]
        await prov.create_bid(order.id, Coin("uact", Dec.parse(100)), BID_DEPOSIT)
        bid = {**order.id.to_json(), "provider": prov.key.address}  # type: ignore[union-attr]
        with pytest.raises(ChainError) as e:
            await other.submit("lease.create", {"bid": bid})
        assert e.value.code == "unauthorized" and e.value.status == 403
        with pytest.raises(ChainError) as e:
            await other.create_bid(order.id, Coin("uact", Dec.parse(1)), BID_DEPOSIT)
        assert e.value.code == "not_a_provider"
        with pytest.raises(ChainError) as e:
            await prov.create_bid(order.id, Coin("uact", Dec.parse(5)), BID_DEPOSIT)
        assert e.value.code == "bid_exists"
        await tenant.submit("lease.create", {"bid": bid})
        for c in (tenant, other, prov):
            await c.aclose()

    run(go())


@pytest.mark.parametrize(
    "price,code",
    [("0", "invalid_price"), ("-1", "invalid_price"), ("999999999", "invalid_price"), ("abc", "invalid_amount")],
)
def test_bid_price_rules(chain_proc: ChainProcess, price: str, code: str) -> None:
    async def go() -> None:
        tenant = await funded(chain_proc.url, Key.generate("tenant"))
        prov = await funded(chain_proc.url, Key.generate("prov"))
        await prov.submit("provider.create", {"attributes": {}, "host_uri": "https://p.example"})
        await tenant.submit("deployment.create", deployment_msg(9))
        order = (await tenant.orders(owner=tenant.key.address))[0]  # type: ignore[union-attr]
        with pytest.raises(ChainError) as e:
            await prov.submit(
                "bid.create",
                {
                    "order": order.id.to_json(),
                    "price": {"denom": "uact", "amount": price},
                    "deposit": {"denom": "uakt", "amount": "500000"},
                },
            )
        assert e.value.code == code
        with pytest.raises(ChainError) as e:
            await prov.create_bid(order.id, Coin("uakt", Dec.parse(1)), BID_DEPOSIT)
        assert e.value.code == "invalid_price"  # wrong denom
        await tenant.aclose()
        await prov.aclose()

    run(go())


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"account": 1}',
        json.dumps({"account": "x", "pubkey": "!!", "sequence": 1, "type": "t", "msg": {}, "signature": "x"}).encode(),
    ],
)
def test_junk_requests_get_clear_errors(chain_proc: ChainProcess, body: bytes) -> None:
    r = httpx.post(chain_proc.url + "/tx", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code in (401, 422)
    assert "code" in r.json()
    assert httpx.get(chain_proc.url + "/events", params={"after": "x"}).status_code == 400
    assert httpx.get(chain_proc.url + "/status").status_code == 200  # still serving


def test_idle_long_polls_never_starve_transactions(chain_proc: ChainProcess) -> None:
    """100 subscribers wait on /events while a tenant's transactions still commit promptly."""

    async def go() -> None:
        tenant = await funded(chain_proc.url, Key.generate("t"))
        head = (await tenant.events(limit=5000)).events
        cursor = head[-1].cursor if head else ""
        async with httpx.AsyncClient(
            base_url=chain_proc.url, timeout=60, limits=httpx.Limits(max_connections=200)
        ) as http:
            far = f"{10**12}:0"  # nothing will ever come after this cursor: every poll waits its full time
            polls = [asyncio.create_task(http.get("/events", params={"after": far, "wait": 20})) for _ in range(100)]
            await asyncio.sleep(1)  # let them all be waiting
            assert not any(p.done() for p in polls)
            for dseq in range(1, 6):  # each answers while all 100 polls still hold their requests
                await asyncio.wait_for(tenant.submit("deployment.create", deployment_msg(dseq, 500_000)), 10)
            created = (await tenant.events(after=cursor, limit=5000)).events
            assert sum(e.type == "order_created" for e in created) == 5
            assert not any(p.done() for p in polls)
            for p in polls:
                p.cancel()
            await asyncio.gather(*polls, return_exceptions=True)
        await tenant.aclose()

    run(go())


def test_status_has_a_genesis_and_accounts_their_public_key(chain_proc: ChainProcess) -> None:
    async def go() -> None:
        key = Key.generate("t")
        tenant = await funded(chain_proc.url, key)
        status = await tenant.status()
        assert len(status.genesis) == 32 and status.chain_id
        assert await tenant.account_public_key(key.address) is None  # not seen signing yet
        await tenant.submit("deployment.create", deployment_msg(1, 500_000))
        assert await tenant.account_public_key(key.address) == key.public_bytes
        await tenant.aclose()

    run(go())
