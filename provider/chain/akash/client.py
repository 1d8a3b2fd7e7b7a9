"""HTTP access to an Akash node: its REST gateway (queries, simulate, broadcast) and its CometBFT RPC
(status, block results). One of the three modules allowed to speak to the network for the chain
(httpx here, the websocket in the follower, the mock chain's client beside it).

Transactions go through ``submit``: the account's number and sequence are read once and then tracked;
gas is simulated and multiplied by the adjustment; the fee is gas x gas price, rounded up; the tx is
broadcast in sync mode and waited for until a block includes it. A refusal, at check or at execution,
becomes a ChainError with a stable code (the mock chain's names where they mean the same) and the
chain's own log. A sequence mismatch (another process used the key) is re-read and retried.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from google.protobuf.message import Message

from provider.chain.akash import tx
from provider.chain.akash.keys import AkashKey
from provider.chain.port import UNREACHABLE, ChainError
from provider.money import Dec

# Registered error texts of the SDK and Akash's modules -> our stable codes (the mock chain's where the
# meaning is the same). Matched in the raw log, which carries the registered text.
_TX_ERRORS = (
    ("account sequence mismatch", "bad_sequence"),
    ("incorrect account sequence", "bad_sequence"),
    ("bid exists from provider", "bid_exists"),
    ("order not open", "order_not_open"),
    ("order closed", "order_not_open"),
    ("order active", "order_not_open"),
    ("bid not open", "bid_not_open"),
    ("bid not active", "bid_not_open"),
    ("lease not active", "lease_closed"),
    ("bid price above max order price", "invalid_price"),
    ("bid price is invalid", "invalid_price"),
    ("zero price", "invalid_price"),
    ("deposit invalid", "invalid_deposit"),
    ("unknown provider", "not_a_provider"),
    ("attribute mismatch", "attribute_mismatch"),
    ("capabilities mismatch", "attribute_mismatch"),
    ("order: chain height to low for bidding", "order_too_early"),
    ("order duration has exceeded", "order_expired"),
    ("insufficient funds", "insufficient_funds"),
    ("insufficient fee", "insufficient_fee"),
    ("out of gas", "out_of_gas"),
    ("provider already exists", "provider_exists"),
    ("not found", "not_found"),
    ("tx already in mempool", "tx_in_mempool"),
    ("mempool is full", "mempool_full"),
    ("invalid host uri", "invalid_host_uri"),
)
_TRANSIENT = {"bad_sequence", "out_of_gas", "tx_in_mempool", "mempool_full", "insufficient_fee"}


def tx_error(code: int, codespace: str, raw_log: str, what: str) -> ChainError:
    """A refused transaction as a ChainError: our code, the SDK's codespace/code and its log."""
    ours = next((name for text, name in _TX_ERRORS if text in raw_log), "tx_failed")
    status = 503 if ours in _TRANSIENT else 400  # 4xx: the chain said no, asking again will not help
    return ChainError(ours, f"{what} refused by the chain ({codespace or 'sdk'} code {code}): {raw_log[:500]}", status)


def _object_not_found(status: int, body: Any) -> bool:
    """The query service's own "no such object": gRPC NotFound (code 5) with its module's message. The
    gateway's routing 404 says only "Not Found"; a proxy's 404 is not JSON at all."""
    if status != 404 or not isinstance(body, dict) or body.get("code") != 5:
        return False
    message = str(body.get("message", ""))
    return message.strip().lower() not in ("", "not found")


@dataclass(frozen=True, slots=True)
class GenesisHead:
    time: str  # RFC 3339, as the node writes it
    chain_id: str
    initial_height: int


_GENESIS_FIELDS = (
    re.compile(rb'"genesis_time"\s*:\s*"([^"]+)"'),
    re.compile(rb'"chain_id"\s*:\s*"([^"]+)"'),
    re.compile(rb'"initial_height"\s*:\s*"?(\d+)(?:"|[,}\s])'),  # the whole number, never a prefix of it
)
_CHUNK_DATA = re.compile(rb'"data"\s*:\s*"([A-Za-z0-9+/=]*)')


def parse_genesis_head(answer: bytes) -> GenesisHead | None:
    """The genesis head from the start of a ``genesis_chunked`` answer (base64 of the document's JSON),
    or None while too little of it has arrived."""
    data = _CHUNK_DATA.search(answer)
    if data is None:
        return None
    encoded = data.group(1)
    try:
        text = base64.b64decode(encoded[: len(encoded) // 4 * 4])
    except ValueError:
        return None
    found = [m.search(text) for m in _GENESIS_FIELDS]
    if any(m is None for m in found):
        return None
    when, chain_id, initial = (m.group(1) for m in found if m is not None)
    return GenesisHead(when.decode(), chain_id.decode(), int(initial))


@dataclass(frozen=True, slots=True)
class Account:
    address: str
    number: int
    sequence: int
    public_key: bytes | None


@dataclass(frozen=True, slots=True)
class GasSettings:
    price: Dec = Dec.parse("0.025")  # per unit of gas, in ``denom`` (the devnet's and mainnet's usual minimum)
    denom: str = "uakt"
    adjustment: float = 1.5  # simulated gas x this is the limit
    inclusion_timeout: float = 60.0  # how long to wait for a broadcast tx to be in a block


class AkashClient:
    def __init__(
        self,
        rest: str,
        rpc: str,
        key: AkashKey | None = None,
        chain_id: str = "",
        gas: GasSettings | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.rest_url = rest.rstrip("/")
        self.rpc_url = rpc.rstrip("/")
        self.key = key
        self.chain_id = chain_id
        self.gas = gas or GasSettings()
        self.http = httpx.AsyncClient(timeout=timeout)
        self._account: Account | None = None
        self._lock = asyncio.Lock()
        self.txs_sent = 0
        self.sequence_resyncs = 0  # times another user of the key moved the sequence under us

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- plumbing --------------------------------------------------------------------------------------
    async def _call(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            resp = await self.http.request(method, url, **kwargs)
        except httpx.HTTPError as e:
            raise ChainError(UNREACHABLE, f"{method} {url}: {e.__class__.__name__}: {e}") from e
        try:
            body = resp.json()
        except ValueError:
            body = {"message": resp.text[:300]}
        return resp.status_code, body

    async def rest(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """GET a REST query; None only when the chain says the thing does not exist (a gRPC NotFound from
        the query service). A route the node does not serve (moved in an Akash upgrade, or a proxy's own
        404) is a ChainError naming the URL, never "no such object"."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.rest_url + path
        status, body = await self._call("GET", url, params=query)
        if status == 200 and isinstance(body, dict):
            return body
        message = str(body.get("message", body) if isinstance(body, dict) else body)
        if _object_not_found(status, body):
            return None
        if status in (404, 405, 501):
            raise ChainError(
                "unknown_route",
                f"GET {url}: the node does not serve this route ({status}: {message[:200]}); is the REST "
                "endpoint an Akash node of the version this provider supports (docs/akash.md)?",
                status,
            )
        if status >= 500:
            raise ChainError(UNREACHABLE, f"GET {url}: the node answered {status}: {message[:300]}", status)
        raise ChainError("bad_request", f"GET {url}: {status}: {message[:300]}", status)

    async def rest_pages(self, path: str, key: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every item of a paginated list query (``pagination.next_key``)."""
        items: list[dict[str, Any]] = []
        next_key: str | None = None
        while True:
            page = await self.rest(path, {**(params or {}), "pagination.limit": 500, "pagination.key": next_key})
            if page is None:
                return items
            items += page.get(key) or []
            next_key = (page.get("pagination") or {}).get("next_key")
            if not next_key:
                return items

    async def rpc(self, method: str, **params: Any) -> dict[str, Any]:
        """A CometBFT JSON-RPC call over HTTP GET; its ``result``. An error answer is a ChainError whose
        message carries the node's own words (``error.data``), e.g. "height 5 is not available"."""
        status, body = await self._call("GET", f"{self.rpc_url}/{method}", params=params)
        if not isinstance(body, dict) or "result" not in body:
            error = body.get("error") if isinstance(body, dict) else body
            detail = error.get("data") or error.get("message") if isinstance(error, dict) else error
            raise ChainError(UNREACHABLE, f"RPC {method}: {status}: {str(detail)[:300]}", status)
        result: dict[str, Any] = body["result"]
        return result

    async def genesis_head(self, limit: int = 4 << 20) -> GenesisHead:
        """The genesis document's first fields (time, chain id, initial height), read from the start of
        ``genesis_chunked`` chunk 0 and the connection dropped: a mainnet genesis is tens of MiB."""
        url = f"{self.rpc_url}/genesis_chunked"
        seen = b""
        try:
            async with self.http.stream("GET", url, params={"chunk": 0}) as resp:
                async for piece in resp.aiter_bytes():
                    seen += piece
                    head = parse_genesis_head(seen)
                    if head is not None:
                        return head
                    if len(seen) > limit:
                        break
        except httpx.HTTPError as e:
            raise ChainError(UNREACHABLE, f"GET {url}: {e.__class__.__name__}: {e}") from e
        raise ChainError(
            "no_genesis",
            f"GET {url}: no genesis document (genesis_time, chain_id, initial_height) at the start of the "
            f"answer: {seen[:200]!r}; the provider names the chain by its genesis (docs/akash.md)",
        )

    async def tx_events(self, height: int) -> list[dict[str, Any]]:
        """The events of every transaction of one block, in block order, from the node's transaction index
        (for nodes that do not keep block results). Raises when the node indexes no transactions, and
        (unreachable: asked again) while the index has fewer of the block's transactions than the block
        holds: the index is written after the block."""
        block = await self.rpc("block", height=height)
        expected = len(((block.get("block") or {}).get("data") or {}).get("txs") or [])
        events: list[dict[str, Any]] = []
        found_txs = 0
        page = 1
        while expected:
            found = await self.rpc("tx_search", query=f'"tx.height={height}"', page=page, per_page=100)
            txs = sorted(found.get("txs") or [], key=lambda t: int(t.get("index", 0)))
            found_txs += len(txs)
            for t in txs:
                events += (t.get("tx_result") or {}).get("events") or []
            if page * 100 >= int(found.get("total_count") or 0):
                break
            page += 1
        if found_txs < expected:
            raise ChainError(
                UNREACHABLE, f"the tx index has {found_txs} of the {expected} transactions of block {height} yet"
            )
        return events

    # -- accounts ----------------------------------------------------------------------------------
    async def account(self, address: str) -> Account | None:
        found = await self.rest(f"/cosmos/auth/v1beta1/accounts/{address}")
        if found is None:
            return None
        acc = found["account"]
        while "base_account" in acc:  # vesting and module accounts wrap a BaseAccount
            acc = acc["base_account"]
        pub = (acc.get("pub_key") or {}).get("key")
        return Account(
            str(acc["address"]),
            int(acc.get("account_number", 0)),
            int(acc.get("sequence", 0)),
            base64.b64decode(pub) if pub else None,
        )

    async def balance(self, address: str, denom: str) -> int:
        found = await self.rest(f"/cosmos/bank/v1beta1/balances/{address}/by_denom", {"denom": denom})
        return int(found["balance"]["amount"]) if found else 0

    # -- transactions --------------------------------------------------------------------------------
    async def _chain_id(self) -> str:
        if not self.chain_id:
            self.chain_id = str((await self.rpc("status"))["node_info"]["network"])
        return self.chain_id

    async def simulate(self, tx_bytes: bytes, what: str) -> int:
        status, body = await self._call(
            "POST",
            self.rest_url + "/cosmos/tx/v1beta1/simulate",
            json={"tx_bytes": base64.b64encode(tx_bytes).decode()},
        )
        if status == 200 and isinstance(body, dict) and "gas_info" in body:
            return int(body["gas_info"]["gas_used"])
        # the application's answer (JSON with a gRPC code and message) is a refusal, whatever the HTTP
        # status the gateway gave it; anything else (a proxy's page, a gateway timeout) is no answer
        if not (isinstance(body, dict) and "message" in body and "code" in body) or status in (502, 503, 504):
            raise ChainError(UNREACHABLE, f"simulating {what}: the node answered {status}: {str(body)[:300]}", status)
        raise tx_error(int(body.get("code", 0)), "simulate", str(body["message"]), what)

    async def broadcast(self, tx_bytes: bytes, what: str) -> str:
        """Broadcast (sync: checked, in the mempool); the tx hash."""
        payload = {"tx_bytes": base64.b64encode(tx_bytes).decode(), "mode": "BROADCAST_MODE_SYNC"}
        status, body = await self._call("POST", self.rest_url + "/cosmos/tx/v1beta1/txs", json=payload)
        response = body.get("tx_response") if isinstance(body, dict) else None
        if not isinstance(response, dict):
            raise ChainError(UNREACHABLE, f"broadcasting {what}: the node answered {status}: {str(body)[:300]}", status)
        if int(response.get("code", 0)):
            raise tx_error(
                int(response["code"]), str(response.get("codespace", "")), str(response.get("raw_log")), what
            )
        return str(response["txhash"])

    async def wait_for(self, tx_hash: str, what: str, timeout: float | None = None) -> dict[str, Any]:
        """Poll until the tx is in a block; its tx_response. A tx that failed at execution is a ChainError."""
        limit = timeout if timeout is not None else self.gas.inclusion_timeout
        deadline = time.monotonic() + limit
        delay = 0.2
        while True:
            # the RPC's tx index, not REST GetTx: that one also reads the tx's block, which a node that
            # prunes may no longer have by the time we ask
            try:
                found: dict[str, Any] | None = await self.rpc("tx", hash="0x" + tx_hash)
            except ChainError as e:
                if "indexing is disabled" in str(e):
                    raise ChainError("no_tx_index", f"{self.rpc_url} indexes no transactions (docs/akash.md)") from e
                found = None  # not in a block yet (or the node did not answer): asked again
            if found is not None and isinstance(found.get("tx_result"), dict):
                result = found["tx_result"]
                code, codespace = int(result.get("code") or 0), str(result.get("codespace") or "")
                raw_log = str(result.get("log") or "")
                if code:
                    raise tx_error(code, codespace, raw_log, what)
                response: dict[str, Any] = {
                    "txhash": tx_hash,
                    "height": str(found.get("height", "")),
                    "code": code,
                    "codespace": codespace,
                    "raw_log": raw_log,
                    "events": result.get("events") or [],
                }
                return response
            if time.monotonic() > deadline:
                raise ChainError(UNREACHABLE, f"{what} ({tx_hash}) was not in a block after {limit:g} s", 504)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    async def submit(self, messages: Sequence[Message], memo: str = "") -> dict[str, Any]:
        """Sign, simulate, broadcast and wait for one transaction of this client's key; its tx_response."""
        if self.key is None:
            raise ChainError("no_key", "this client has no signing key")
        key = self.key
        what = ", ".join(tx.type_url(m).rsplit(".", 1)[-1] for m in messages)
        async with self._lock:
            chain_id = await self._chain_id()
            for attempt in range(3):
                if self._account is None:
                    account = await self.account(key.address)
                    if account is None:
                        raise ChainError(
                            "insufficient_funds",
                            f"the account {key.address} does not exist on {chain_id}: send it funds first",
                            400,
                        )
                    self._account = account
                acc = self._account
                try:
                    probe = tx.build(
                        key, chain_id, acc.number, acc.sequence, messages, tx.Fee(0, 0, self.gas.denom), memo
                    )
                    used = await self.simulate(probe, what)
                    limit = math.ceil(used * self.gas.adjustment)
                    fee = math.ceil(self.gas.price.to_fraction() * limit)
                    signed = tx.build(
                        key, chain_id, acc.number, acc.sequence, messages, tx.Fee(limit, fee, self.gas.denom), memo
                    )
                    tx_hash = await self.broadcast(signed, what)
                except ChainError as e:
                    if e.code == "bad_sequence" and attempt < 2:
                        self._account = None  # another process used the key: re-read and sign again
                        self.sequence_resyncs += 1
                        continue
                    if e.unreachable:
                        self._account = None  # we do not know whether it went in
                    raise
                self.txs_sent += 1
                self._account = Account(acc.address, acc.number, acc.sequence + 1, key.public_bytes)
                break
            else:
                raise ChainError("bad_sequence", f"{what}: could not agree on the account sequence with the chain", 503)
        # in the mempool, sequence counted: the next transaction can be signed while this one waits for
        # its block, so several of ours can land in one block
        return await self.wait_for(tx_hash, what)
