"""The mock chain's client: the only module that speaks HTTP to the chain (httpx). Implements the chain
port (provider.chain.port) for the mock chain; signs transactions with the account's key and keeps its
sequence; every request has a timeout."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx

from provider.chain.keys import Key
from provider.chain.port import ChainError
from provider.chain.types import (
    Bid,
    BidId,
    ChainStatus,
    Coin,
    Deployment,
    Event,
    FeedPage,
    Lease,
    Order,
    OrderId,
    ProviderInfo,
)
from provider.money import Dec

__all__ = ["ChainClient", "ChainError", "provider_request"]


def _order_id(row: dict[str, Any]) -> OrderId:
    return OrderId(row["owner"], int(row["dseq"]), int(row["gseq"]), int(row["oseq"]))


def _bid(row: dict[str, Any]) -> Bid:
    return Bid(
        BidId(_order_id(row), row["provider"]),
        row["state"],
        Coin(row["price_denom"], Dec.parse(row["price"])),
        row["created_height"],
    )


def _lease(row: dict[str, Any]) -> Lease:
    return Lease(
        BidId(_order_id(row), row["provider"]),
        row["state"],
        Coin(row["price_denom"], Dec.parse(row["price"])),
        row["created_height"],
        row.get("closed_reason") or "",
    )


class ChainClient:
    def __init__(self, url: str, key: Key | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.http = httpx.AsyncClient(base_url=self.url, timeout=timeout)
        self._chain_id: str | None = None
        self._sequence: int | None = None
        self._seq_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise ChainError("unreachable", f"{method} {self.url}{path}: {e}") from e
        try:
            body = resp.json()
        except ValueError:
            body = {"code": "bad_response", "message": resp.text[:300]}
        if resp.status_code >= 400:
            detail = body.get("detail", body) if isinstance(body, dict) else {}
            if not isinstance(detail, dict):
                detail = {"message": str(detail)}
            raise ChainError(str(detail.get("code", "error")), str(detail.get("message", detail)), resp.status_code)
        return body

    @property
    def address(self) -> str:
        if self.key is None:
            raise ChainError("no_key", "this client has no signing key")
        return self.key.address

    # -- reads -----------------------------------------------------------------------------------
    async def status(self) -> ChainStatus:
        body = await self._request("GET", "/status")
        try:
            status = ChainStatus(str(body["chain_id"]), str(body.get("genesis", "")), int(body["height"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ChainError("bad_response", f"/status answered {str(body)[:200]}") from e
        self._chain_id = status.chain_id
        return status

    async def account(self, address: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._request("GET", f"/accounts/{address}")
        return result

    async def account_public_key(self, address: str) -> bytes | None:
        pub = (await self.account(address)).get("pubkey")
        return base64.b64decode(pub) if pub else None

    async def _get_or_none(self, path: str) -> dict[str, Any] | None:
        """GET a single object; None when the chain answers 404."""
        try:
            found: dict[str, Any] = await self._request("GET", path)
        except ChainError as e:
            if e.status == 404:
                return None
            raise
        return found

    async def provider(self, address: str) -> ProviderInfo | None:
        r = await self._get_or_none(f"/providers/{address}")
        if r is None:
            return None
        return ProviderInfo(r["address"], r["host_uri"], dict(r["attributes"]), dict(r.get("audited", {})))

    async def account_deployment(self, owner: str, dseq: int) -> dict[str, Any] | None:
        """The deployment as the chain serves it (JSON), for the tenant's status."""
        return await self._get_or_none(f"/deployments/{owner}/{dseq}")

    async def deployment(self, owner: str, dseq: int) -> Deployment | None:
        r = await self._get_or_none(f"/deployments/{owner}/{dseq}")
        if r is None:
            return None
        return Deployment(
            r["owner"],
            int(r["dseq"]),
            r["state"],
            r["version"],
            tuple(r.get("groups", ())),
            Coin.from_json(r["escrow"]),
            int(r["created_height"]),
        )

    async def _pages(self, path: str, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        after = ""
        while True:
            page = await self._request(
                "GET", path, params={**{k: v for k, v in params.items() if v is not None}, "after": after, "limit": 500}
            )
            for item in page["items"]:
                yield item
            after = page["next"]
            if not after:
                return

    async def orders(
        self, state: str | None = "open", owner: str | None = None, dseq: int | None = None
    ) -> list[Order]:
        return [
            Order(_order_id(r), r["state"], r["spec"], r["created_height"])
            async for r in self._pages("/orders", {"state": state, "owner": owner, "dseq": dseq})
        ]

    async def order(self, oid: OrderId) -> Order | None:
        for o in await self.orders(state=None, owner=oid.owner, dseq=oid.dseq):
            if o.id == oid:
                return o
        return None

    async def bids(
        self, provider: str | None = None, state: str | None = None, owner: str | None = None, dseq: int | None = None
    ) -> list[Bid]:
        filters = {"provider": provider, "state": state, "owner": owner, "dseq": dseq}
        return [_bid(r) async for r in self._pages("/bids", filters)]

    async def bid(self, bid_id: BidId) -> Bid | None:
        o = bid_id.order
        found = await self.bids(provider=bid_id.provider, owner=o.owner, dseq=o.dseq)
        return next((b for b in found if b.id == bid_id), None)

    async def leases(
        self, provider: str | None = None, state: str | None = None, owner: str | None = None, dseq: int | None = None
    ) -> list[Lease]:
        filters = {"provider": provider, "state": state, "owner": owner, "dseq": dseq}
        return [_lease(r) async for r in self._pages("/leases", filters)]

    async def lease(self, lease_id: BidId) -> Lease | None:
        o = lease_id.order
        found = await self.leases(provider=lease_id.provider, owner=o.owner, dseq=o.dseq)
        return next((x for x in found if x.id == lease_id), None)

    async def lease_rows(self, **filters: Any) -> list[dict[str, Any]]:
        return [r async for r in self._pages("/leases", filters)]

    async def events(self, after: str = "", limit: int = 500, wait: float = 0) -> FeedPage:
        body = await self._request(
            "GET", "/events", params={"after": after, "limit": limit, "wait": wait}, timeout=wait + 10
        )
        try:
            events = tuple(Event(int(e["height"]), int(e["index"]), str(e["type"]), e["data"]) for e in body["events"])
            return FeedPage(events, str(body["cursor"]), int(body["height"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ChainError("bad_response", f"/events answered {str(body)[:200]}") from e

    # -- writes ----------------------------------------------------------------------------------
    async def submit(self, tx_type: str, msg: dict[str, Any]) -> dict[str, Any]:
        if self.key is None:
            raise ChainError("no_key", "this client has no signing key")
        async with self._seq_lock:
            if self._chain_id is None:
                await self.status()
            for attempt in range(2):
                if self._sequence is None:
                    self._sequence = int((await self.account(self.key.address))["sequence"])
                sequence = self._sequence + 1
                tx = self.key.sign_tx(self._chain_id or "", sequence, tx_type, msg)
                try:
                    result: dict[str, Any] = await self._request("POST", "/tx", json=tx)
                except ChainError as e:
                    if e.code == "bad_sequence" and attempt == 0:
                        self._sequence = None  # someone else used the account: re-read and retry once
                        continue
                    if e.code != "unreachable":
                        self._sequence = sequence  # the chain counted it even though it refused the message
                    else:
                        self._sequence = None
                    raise
                self._sequence = sequence
                return result
        raise ChainError("bad_sequence", "could not agree on the account sequence")

    async def fund(self, address: str, denom: str, amount: Dec) -> None:
        await self._request("POST", "/faucet", json={"address": address, "denom": denom, "amount": str(amount)})

    async def register_provider(self, attributes: dict[str, str], host_uri: str) -> None:
        await self.submit("provider.create", {"attributes": attributes, "host_uri": host_uri})

    async def create_bid(self, order: OrderId, price: Coin, deposit: Coin) -> None:
        await self.submit(
            "bid.create", {"order": order.to_json(), "price": price.to_json(), "deposit": deposit.to_json()}
        )

    async def close_bid(self, order: OrderId, reason: str = "provider") -> None:
        await self.submit("bid.close", {"order": order.to_json(), "reason": reason})

    async def withdraw_lease(self, lease_id: BidId) -> Coin:
        lease = {**lease_id.order.to_json(), "provider": lease_id.provider}
        result = await self.submit("lease.withdraw", {"lease": lease})
        return Coin.from_json(result["withdrawn"])


async def provider_request(
    method: str, url: str, token: str, body: str | None = None, timeout: float = 30.0, verify: bool | str = True
) -> Any:
    """One call to a provider's API as a tenant (``Authorization: Bearer``); JSON back. A refusal is a
    ChainError whose code is the provider's (``forbidden``, ``version``, ``lease_not_found``...)."""
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    async with httpx.AsyncClient(timeout=timeout, verify=verify) as http:
        try:
            resp = await http.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as e:
            raise ChainError("unreachable", f"cannot reach the provider at {url}: {e}") from e
    try:
        data = resp.json()
    except ValueError:
        data = {"message": resp.text[:300]}
    if resp.status_code >= 400:
        code = data.get("code", "refused") if isinstance(data, dict) else "refused"
        message = data.get("message", "") if isinstance(data, dict) else str(data)[:300]
        raise ChainError(str(code), f"the provider answered {resp.status_code}: {message}", resp.status_code)
    return data
