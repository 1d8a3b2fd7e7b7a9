"""The tenant side of the market, for the `gpu-provider tenant ...` commands: keys, deploy an SDL, watch
bids, accept one, send the manifest to the provider, follow and close the deployment.

Talking to a provider (send the manifest, read a lease's status, logs and events) works on any chain
port, with a token minter for the chain's keys: the mock chain's EdDSA tokens by default, or an Akash
key's ES256K tokens (the CLI passes one). Making deployments and leases is the mock chain's here; on
Akash tenants use Akash's own CLI or Console for those."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import sdl
from provider.api.auth import mint
from provider.chain.client import ChainClient, provider_request
from provider.chain.port import ChainPort
from provider.chain.types import BidId
from provider.errors import ProviderError
from provider.money import Dec


class TenantError(ProviderError):
    pass


async def deploy(
    chain: ChainClient, text: bytes, source: str, deposit: Dec, dseq: int | None, wait: float
) -> dict[str, Any]:
    try:
        parsed = sdl.parse(text, source=source)
    except sdl.SdlError as e:
        raise TenantError(str(e)) from None
    groups = parsed.groups_json()
    denom = groups[0]["resources"][0]["price"]["denom"]
    dseq = dseq or (await chain.status()).height * 1000 + int(time.time()) % 1000
    await chain.submit(
        "deployment.create",
        {
            "dseq": dseq,
            "groups": groups,
            "version": parsed.version.hex(),
            "deposit": {"denom": denom, "amount": str(deposit)},
        },
    )
    result: dict[str, Any] = {"dseq": dseq, "version": parsed.version.hex(), "bids": []}
    deadline = time.monotonic() + wait
    seen: set[str] = set()
    assert chain.key is not None
    while time.monotonic() < deadline:
        for bid in await chain.bids(owner=chain.key.address, dseq=dseq, state="open"):
            if str(bid.id) not in seen:
                seen.add(str(bid.id))
                result["bids"].append({"bid": str(bid.id), "price": str(bid.price.amount), "denom": bid.price.denom})
                print(f"bid {bid.id} {bid.price.amount} {bid.price.denom}/block", flush=True)
        await asyncio.sleep(0.5)
    return result


async def accept(chain: ChainClient, bid: str) -> dict[str, Any]:
    try:
        bid_id = BidId.parse(bid)
    except ValueError:
        raise TenantError(f"{bid!r} is not a bid id (OWNER/DSEQ/GSEQ/OSEQ/PROVIDER)") from None
    return await chain.submit("lease.create", {"bid": {**bid_id.order.to_json(), "provider": bid_id.provider}})


Minter = Callable[[list[str] | None, int], str]  # (scope or None for full access, lifetime s) -> JWT


def token(chain: ChainClient, scope: list[str] | None = None, lifetime: int = 300) -> str:
    """A JWT for the provider API, signed with this tenant's chain key (Akash's claims, EdDSA)."""
    assert chain.key is not None
    return mint(chain.key.private, chain.key.address, scope=scope, lifetime=lifetime)


def _minter(chain: ChainPort, minter: Minter | None) -> Minter:
    if minter is not None:
        return minter
    if not isinstance(chain, ChainClient):
        raise TenantError("no token minter for this chain's keys")
    return lambda scope, lifetime: token(chain, scope, lifetime)


async def _provider_url(chain: ChainPort, provider: str) -> str:
    info = await chain.provider(provider)
    if info is None:
        raise TenantError(f"provider {provider} is not registered")
    return info.host_uri.rstrip("/")


async def send_manifest(
    chain: ChainPort, text: bytes, source: str, dseq: int, timeout: float = 30.0, minter: Minter | None = None
) -> list[str]:
    """PUT the manifest to every provider holding a lease of this deployment."""
    try:
        parsed = sdl.parse(text, source=source)
    except sdl.SdlError as e:
        raise TenantError(str(e)) from None
    leases = await chain.leases(owner=chain.address, dseq=dseq, state="active")
    if not leases:
        raise TenantError(f"deployment {dseq} has no active lease yet: accept a bid first")
    sent = []
    jwt = _minter(chain, minter)(["send-manifest"], 300)
    for provider in sorted({lease.id.provider for lease in leases}):
        url = f"{await _provider_url(chain, provider)}/deployment/{dseq}/manifest"
        await provider_request("PUT", url, jwt, json.dumps(parsed.manifest_json()), timeout)
        sent.append(url)
    return sent


async def update(chain: ChainClient, text: bytes, source: str, dseq: int) -> dict[str, Any]:
    """Give the deployment the new SDL's version on chain, then send its manifest to the providers."""
    try:
        parsed = sdl.parse(text, source=source)
    except sdl.SdlError as e:
        raise TenantError(str(e)) from None
    await chain.submit(
        "deployment.update", {"dseq": dseq, "version": parsed.version.hex(), "groups": parsed.groups_json()}
    )
    return {"version": parsed.version.hex(), "sent": await send_manifest(chain, text, source, dseq)}


async def lease_call(chain: ChainPort, lease: str, what: str, query: str = "", minter: Minter | None = None) -> Any:
    """GET one of a lease's provider endpoints (status, kubeevents, logs, manifest) as its owner."""
    parts = lease.split("/")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise TenantError(f"{lease!r} is not DSEQ/GSEQ/OSEQ")
    dseq, gseq, oseq = (int(p) for p in parts)
    found = [
        x
        for x in await chain.leases(owner=chain.address, dseq=dseq)
        if (x.id.order.gseq, x.id.order.oseq) == (gseq, oseq)
    ]
    if not found:
        raise TenantError(f"no lease {lease} of yours on chain")
    scope = {"status": "status", "kubeevents": "events", "logs": "logs", "manifest": "get-manifest"}[what]
    url = f"{await _provider_url(chain, found[-1].id.provider)}/lease/{dseq}/{gseq}/{oseq}/{what}"
    return await provider_request("GET", url + (f"?{query}" if query else ""), _minter(chain, minter)([scope], 300))


async def status(chain: ChainClient, dseq: int) -> dict[str, Any]:
    assert chain.key is not None
    owner = chain.key.address
    return {
        "deployment": await chain.account_deployment(owner, dseq),
        "orders": [
            {"order": str(o.id), "state": o.state} for o in await chain.orders(state=None, owner=owner, dseq=dseq)
        ],
        "bids": [
            {"bid": str(b.id), "state": b.state, "price": str(b.price.amount), "denom": b.price.denom}
            for b in await chain.bids(owner=owner, dseq=dseq)
        ],
        "leases": await chain.lease_rows(owner=owner, dseq=dseq),
    }


async def close(chain: ChainClient, dseq: int) -> dict[str, Any]:
    return await chain.submit("deployment.close", {"dseq": dseq})
