"""The Akash adapter: the chain port (provider.chain.port) on a real Akash node.

Reads go to the REST gateway and come back as the port's domain types (provider.chain.akash.convert).
Writes are signed protobuf transactions (provider.chain.akash.client). The feed is read from block
results, height by height: the cursor is ``height:index``, ``index`` being the event's position in
its block (every transaction's events in order, then the block's own), so the same cursor always
means the same place and a restart, a lost websocket or a node that was down resumes exactly where
the engine stopped. The websocket (provider.chain.akash.blocks) only says when a new block exists.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import replace
from typing import Any

from provider.chain.akash import convert
from provider.chain.akash.blocks import BlockWatcher
from provider.chain.akash.client import AkashClient, GasSettings, GenesisHead
from provider.chain.akash.keys import AkashKey
from provider.chain.akash.pb.akash.base.attributes.v1 import attribute_pb2
from provider.chain.akash.pb.akash.base.deposit.v1 import deposit_pb2
from provider.chain.akash.pb.akash.market.v1 import bid_pb2, lease_pb2, types_pb2
from provider.chain.akash.pb.akash.market.v1beta5 import bidmsg_pb2, leasemsg_pb2
from provider.chain.akash.pb.akash.provider.v1beta4 import msg_pb2 as provider_msg_pb2
from provider.chain.akash.pb.akash.provider.v1beta4 import provider_pb2
from provider.chain.akash.pb.cosmos.base.v1beta1 import coin_pb2
from provider.chain.akash.tx import dec_coin
from provider.chain.port import ChainError
from provider.chain.types import (
    Bid,
    BidId,
    ChainStatus,
    Coin,
    Deployment,
    Event,
    FeedGap,
    FeedPage,
    Lease,
    Order,
    OrderId,
    ProviderInfo,
)
from provider.money import ZERO, Dec

log = logging.getLogger(__name__)

MARKET = "/akash/market/v1beta5"
END_OF_BLOCK = 2**31
_COIN = re.compile(r"(\d+)([a-zA-Z][a-zA-Z0-9/:._-]*)")
# Provider-side close reasons (MsgCloseBid accepts 10000..19999 only)
CLOSE_REASONS = {
    "unstable": types_pb2.lease_closed_reason_unstable,
    "decommission": types_pb2.lease_closed_reason_decommission,
    "manifest_timeout": types_pb2.lease_closed_reason_manifest_timeout,
}


_PRUNED = re.compile(r"is not available, lowest height is (\d+)")
_NOT_PERSISTING = "not persisting finalize block responses"  # discard_abci_responses = true
_NO_RESULTS = "could not find results for height"  # a state-synced node's first height (or the newest, briefly)
_SETTLED = 5  # blocks below the tip whose missing results mean "never stored", not "not stored yet"


def chain_identity(head: GenesisHead) -> str:
    """This chain's history as a label value: a hash over what its genesis fixes (chain id, initial
    height, genesis time). Stable under pruning and state sync; a reset (a new genesis) changes it."""
    text = f"{head.chain_id}\n{head.initial_height}\n{head.time}"
    return "g" + hashlib.sha256(text.encode()).hexdigest()[:40]


def _joined(a: FeedGap | None, b: FeedGap | None) -> FeedGap | None:
    if a is None or b is None:
        return a or b
    reason = a.reason if a.reason == b.reason else "pruned" if "pruned" in (a.reason, b.reason) else b.reason
    return FeedGap(min(a.first, b.first), max(a.last, b.last), reason)


def _parse_cursor(cursor: str) -> tuple[int, int]:
    if not cursor:
        return 0, END_OF_BLOCK
    try:
        height, index = cursor.split(":", 1)
        return int(height), int(index)
    except ValueError:
        raise ChainError("bad_cursor", f"{cursor!r} is not an Akash feed cursor (height:index)", 400) from None


def _id_query(order: OrderId, provider: str | None = None) -> dict[str, Any]:
    """An order's (or, with ``provider``, a bid's or lease's) id as the REST gateway's query parameters."""
    query: dict[str, Any] = {
        "id.owner": order.owner,
        "id.dseq": order.dseq,
        "id.gseq": order.gseq,
        "id.oseq": order.oseq,
    }
    if provider is not None:
        query["id.provider"] = provider
    return query


class AkashChain:
    """The chain port on Akash. ``max_blocks`` bounds how many blocks one ``events`` call reads."""

    def __init__(
        self,
        rest: str,
        rpc: str,
        key: AkashKey | None = None,
        chain_id: str = "",
        gas: GasSettings | None = None,
        max_blocks: int = 50,
        timeout: float = 10.0,
    ) -> None:
        self.client = AkashClient(rest, rpc, key, chain_id, gas, timeout)
        self.expected_chain_id = chain_id
        self.max_blocks = max_blocks
        self.blocks = BlockWatcher(rpc, self._latest_height)
        self._identity: ChainStatus | None = None
        self._seen = (0, 0)  # (latest, earliest) height at the last status

    @property
    def address(self) -> str:
        if self.client.key is None:
            raise ChainError("no_key", "this Akash client has no signing key")
        return self.client.key.address

    async def aclose(self) -> None:
        await self.blocks.aclose()
        await self.client.aclose()

    # -- status and feed -------------------------------------------------------------------------------
    async def _latest_height(self) -> int:
        return int((await self.client.rpc("status"))["sync_info"]["latest_block_height"])

    async def status(self) -> ChainStatus:
        result = await self.client.rpc("status")
        chain_id = str(result["node_info"]["network"])
        if self.expected_chain_id and chain_id != self.expected_chain_id:
            raise ChainError(
                "wrong_chain",
                f"the node at {self.client.rpc_url} serves chain {chain_id!r}, not the configured {self.expected_chain_id!r}",
                400,
            )
        self.client.chain_id = chain_id
        sync = result["sync_info"]
        height = int(sync["latest_block_height"])
        earliest = int(sync.get("earliest_block_height") or 0)
        # the genesis is read again only when history may have been replaced: the tip went back or the
        # earliest block moved down (a reset); pruning moves the earliest block up, never down
        if self._identity is None or height < self._seen[0] or earliest < self._seen[1]:
            head = await self.client.genesis_head()
            aliases = [f"{chain_id}@{earliest}"]  # what earlier releases (chart <= 0.3.0) stored on a pruned node
            if earliest == 1:  # ... and on a node with every block: the first block's hash (labels: 63 chars)
                first = str(sync["earliest_block_hash"])
                aliases += [first, first[:63]]
            self._identity = ChainStatus(chain_id, chain_identity(head), height, tuple(aliases))
        self._seen = (height, earliest)
        await self.blocks.seen(height)
        return replace(self._identity, height=height)

    async def block_events(self, height: int, tip: int = 0) -> tuple[list[Event], FeedGap | None]:
        """The events of one block that the engine follows, each with its position in the block (every
        transaction's events in order, then the block's own). A node that no longer has the height, or
        keeps no block results, answers with a gap instead (see ``events``); ``tip`` (the chain's height)
        tells results never stored from results not stored yet."""
        try:
            result = await self.client.rpc("block_results", height=height)
            raw: list[dict[str, Any]] = []
            for tx_result in result.get("txs_results") or []:
                raw += tx_result.get("events") or []
            raw += result.get("finalize_block_events") or []
            gap = None
        except ChainError as e:
            pruned = _PRUNED.search(str(e))
            if pruned is not None:
                lowest = int(pruned.group(1))
                return [], FeedGap(height, max(height, lowest - 1), "pruned")
            never_stored = _NO_RESULTS in str(e) and height + _SETTLED <= tip
            if _NOT_PERSISTING not in str(e) and not never_stored:
                raise  # e.g. the newest block, whose results are stored just after it: asked again
            # results not kept (discard_abci_responses, or a state-synced node's first heights): the
            # transactions' events are still in the tx index; the block's own events are lost
            try:
                raw = await self.client.tx_events(height)
            except ChainError as no_index:
                if "indexing is disabled" not in str(no_index):
                    raise
                return [], FeedGap(height, height, "not_indexed")
            gap = FeedGap(height, height, "block_events_not_kept")
        out = []
        for index, item in enumerate(raw):
            try:
                found = convert.event(height, index, str(item.get("type", "")), item.get("attributes") or [])
            except (KeyError, TypeError, ValueError) as err:
                log.warning(
                    "chain event not understood height=%d index=%d type=%s error=%r",
                    height,
                    index,
                    item.get("type"),
                    str(err),
                )
                continue
            if found is not None:
                out.append(found)
        return out, gap

    async def events(self, after: str = "", limit: int = 500, wait: float = 0) -> FeedPage:
        """Events after ``after``. Heights the node cannot give whole end the page with a ``gap``: pruned
        heights are passed over to the earliest one the node still has (one page, never one call per
        lost height); a height whose block results are not kept is read from the transaction index."""
        height, index = _parse_cursor(after)
        tip = self.blocks.tip or await self._latest_height()
        first = height if index < END_OF_BLOCK else height + 1
        first = max(first, 1)
        if tip < first and wait > 0:
            tip = await self.blocks.wait_beyond(first - 1, wait)
            if tip < first:  # nothing pushed: ask the node, in case the websocket went quiet without closing
                tip = max(tip, await self._latest_height())
                await self.blocks.seen(tip)
        if tip < first:
            return FeedPage((), after, tip)
        found: list[Event] = []
        cursor = after
        gap: FeedGap | None = None
        for h in range(first, min(tip, first + self.max_blocks - 1) + 1):
            events, missing = await self.block_events(h, tip)
            for event in events:
                if (event.height, event.index) > (height, index):
                    found.append(event)
                    if len(found) >= limit:
                        return FeedPage(tuple(found), event.cursor, tip, _joined(gap, missing))
            gap = _joined(gap, missing)
            cursor = f"{missing.last if missing is not None else h}:{END_OF_BLOCK}"
            if found or (missing is not None and missing.reason == "pruned"):
                break
        return FeedPage(tuple(found), cursor, tip, gap)

    # -- reads -------------------------------------------------------------------------------------------
    async def order(self, oid: OrderId) -> Order | None:
        found = await self.client.rest(f"{MARKET}/orders/info", _id_query(oid))
        return convert.order(found["order"]) if found else None

    async def orders(
        self, state: str | None = "open", owner: str | None = None, dseq: int | None = None
    ) -> list[Order]:
        rows = await self.client.rest_pages(
            f"{MARKET}/orders/list", "orders", {"filters.state": state, "filters.owner": owner, "filters.dseq": dseq}
        )
        return [convert.order(r) for r in rows]

    async def bid(self, bid_id: BidId) -> Bid | None:
        found = await self.client.rest(f"{MARKET}/bids/info", _id_query(bid_id.order, bid_id.provider))
        return convert.bid(found) if found else None

    async def bids(
        self, provider: str | None = None, state: str | None = None, owner: str | None = None, dseq: int | None = None
    ) -> list[Bid]:
        filters = {"filters.provider": provider, "filters.state": state, "filters.owner": owner, "filters.dseq": dseq}
        return [convert.bid(r) for r in await self.client.rest_pages(f"{MARKET}/bids/list", "bids", filters)]

    async def lease(self, lease_id: BidId) -> Lease | None:
        found = await self.client.rest(f"{MARKET}/leases/info", _id_query(lease_id.order, lease_id.provider))
        return convert.lease(found) if found else None

    async def leases(
        self, provider: str | None = None, state: str | None = None, owner: str | None = None, dseq: int | None = None
    ) -> list[Lease]:
        filters = {"filters.provider": provider, "filters.state": state, "filters.owner": owner, "filters.dseq": dseq}
        return [convert.lease(r) for r in await self.client.rest_pages(f"{MARKET}/leases/list", "leases", filters)]

    async def deployment(self, owner: str, dseq: int) -> Deployment | None:
        found = await self.client.rest(
            "/akash/deployment/v1beta4/deployments/info", {"id.owner": owner, "id.dseq": dseq}
        )
        return convert.deployment(found) if found else None

    async def account_public_key(self, address: str) -> bytes | None:
        account = await self.client.account(address)
        return account.public_key if account else None

    async def provider(self, address: str) -> ProviderInfo | None:
        found = await self.client.rest(f"/akash/provider/v1beta4/providers/{address}")
        if found is None:
            return None
        audits = await self.client.rest_pages(f"/akash/audit/v1/audit/attributes/{address}/list", "providers")
        audited = {
            str(a["auditor"]): {str(x["key"]): str(x["value"]) for x in a.get("attributes") or []} for a in audits
        }
        return convert.provider(found, audited)

    # -- this provider's transactions ---------------------------------------------------------------------
    async def register_provider(self, attributes: dict[str, str], host_uri: str) -> None:
        me = self.address
        existing = await self.provider(me)
        if existing is not None and existing.host_uri == host_uri and existing.attributes == attributes:
            return
        attrs = [attribute_pb2.Attribute(key=k, value=v) for k, v in sorted(attributes.items())]
        info = provider_pb2.Info()
        if existing is None:
            msg: Any = provider_msg_pb2.MsgCreateProvider(owner=me, host_uri=host_uri, attributes=attrs, info=info)
        else:
            msg = provider_msg_pb2.MsgUpdateProvider(owner=me, host_uri=host_uri, attributes=attrs, info=info)
        await self.client.submit([msg])

    def _bid_id(self, order: OrderId) -> bid_pb2.BidID:
        return bid_pb2.BidID(
            owner=order.owner, dseq=order.dseq, gseq=order.gseq, oseq=order.oseq, provider=self.address
        )

    async def create_bid(self, order: OrderId, price: Coin, deposit: Coin) -> None:
        amount = deposit.amount.to_fraction()
        if amount.denominator != 1:
            raise ChainError("invalid_deposit", f"a bid deposit is whole {deposit.denom}, not {deposit.amount}", 400)
        msg = bidmsg_pb2.MsgCreateBid(
            id=self._bid_id(order),
            price=dec_coin(price.denom, price.amount),
            deposit=deposit_pb2.Deposit(
                amount=coin_pb2.Coin(denom=deposit.denom, amount=str(amount.numerator)), sources=[deposit_pb2.balance]
            ),
        )
        await self.client.submit([msg])

    async def close_bid(self, order: OrderId, reason: str = "unspecified") -> None:
        code = CLOSE_REASONS.get(reason, types_pb2.lease_closed_reason_unspecified)
        await self.client.submit([bidmsg_pb2.MsgCloseBid(id=self._bid_id(order), reason=code)])

    async def withdraw_lease(self, lease_id: BidId) -> Coin:
        o = lease_id.order
        lid = lease_pb2.LeaseID(owner=o.owner, dseq=o.dseq, gseq=o.gseq, oseq=o.oseq, provider=lease_id.provider)
        result = await self.client.submit([leasemsg_pb2.MsgWithdrawLease(id=lid)])
        return _received(result, self.address)


def _received(tx_response: dict[str, Any], address: str) -> Coin:
    """What a transaction's ``coin_received`` events paid to ``address`` (one denom)."""
    denom, total = "", ZERO
    for e in tx_response.get("events") or []:
        if e.get("type") != "coin_received":
            continue
        attrs = {a.get("key"): a.get("value") for a in e.get("attributes") or []}
        if attrs.get("receiver") != address:
            continue
        for part in str(attrs.get("amount", "")).split(","):
            coin = _COIN.fullmatch(part.strip())
            if coin is not None:
                denom = coin.group(2)
                total += Dec.parse(coin.group(1))
    return Coin(denom, total)
