"""Market value types shared by the chain client, the mock chain and the bid engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provider.money import ZERO, Dec


@dataclass(frozen=True, slots=True, order=True)
class OrderId:
    owner: str
    dseq: int
    gseq: int
    oseq: int

    def __str__(self) -> str:
        return f"{self.owner}/{self.dseq}/{self.gseq}/{self.oseq}"

    @classmethod
    def parse(cls, text: str) -> OrderId:
        owner, dseq, gseq, oseq = text.split("/")
        return cls(owner, int(dseq), int(gseq), int(oseq))

    def to_json(self) -> dict[str, Any]:
        return {"owner": self.owner, "dseq": self.dseq, "gseq": self.gseq, "oseq": self.oseq}


@dataclass(frozen=True, slots=True, order=True)
class BidId:
    order: OrderId
    provider: str

    def __str__(self) -> str:
        return f"{self.order}/{self.provider}"

    @classmethod
    def parse(cls, text: str) -> BidId:
        owner, dseq, gseq, oseq, provider = text.split("/")
        return cls(OrderId(owner, int(dseq), int(gseq), int(oseq)), provider)


LeaseId = BidId  # a lease is identified by the bid it came from


@dataclass(frozen=True, slots=True)
class Coin:
    """An exact amount of one denom (18 decimals, like Cosmos DecCoin)."""

    denom: str
    amount: Dec

    def to_json(self) -> dict[str, str]:
        return {"denom": self.denom, "amount": str(self.amount)}

    @classmethod
    def from_json(cls, raw: Any) -> Coin:
        return cls(str(raw["denom"]), Dec.parse(str(raw["amount"])))


@dataclass(frozen=True, slots=True)
class Order:
    id: OrderId
    state: str  # open | active | closed
    group: dict[str, Any]  # the group spec, Akash JSON form
    created_height: int

    def max_price(self) -> Coin:
        return max_price_of(self.group)


def max_price_of(group: dict[str, Any]) -> Coin:
    """A group spec's (Akash JSON) maximum per block: the sum of price x count over its units."""
    units = group.get("resources", [])
    denom = units[0]["price"]["denom"] if units else ""
    total = ZERO
    for u in units:
        total += Dec.parse(str(u["price"]["amount"])).times(int(u["count"]))
    return Coin(denom, total)


@dataclass(frozen=True, slots=True)
class Bid:
    id: BidId
    state: str  # open | active (won) | lost | closed
    price: Coin
    created_height: int


@dataclass(frozen=True, slots=True)
class Lease:
    id: BidId
    state: str  # active | closed
    price: Coin
    created_height: int
    closed_reason: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    height: int
    index: int
    type: str
    data: dict[str, Any]

    @property
    def cursor(self) -> str:
        return f"{self.height}:{self.index}"


@dataclass(frozen=True, slots=True)
class Deployment:
    owner: str
    dseq: int
    state: str  # active | closed
    version: str  # the deployment version hash, hex (sdl's Deployment.version)
    groups: tuple[dict[str, Any], ...]  # group specs in gseq order, Akash JSON form
    escrow: Coin
    created_height: int


@dataclass(frozen=True, slots=True)
class ChainStatus:
    chain_id: str
    genesis: str  # identifies this chain's history: a reset or another chain has another one
    height: int
    # earlier names of this same history (what older releases stored): accepted as ``genesis``, then replaced
    aliases: tuple[str, ...] = ()

    def names(self, genesis: str) -> bool:
        """Whether a stored identity (a cursor's, a label's, possibly cut to 63 characters) is this chain's."""
        return bool(genesis) and (genesis == self.genesis or genesis in self.aliases)


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    address: str
    host_uri: str
    attributes: dict[str, str]
    audited: dict[str, dict[str, str]] = field(default_factory=dict)  # auditor -> signed attributes


@dataclass(frozen=True, slots=True)
class FeedGap:
    """Heights the feed could not read whole: their events may be missing, so the reader reconciles with
    the chain's current state (open orders, its own bids and leases) instead of trusting the feed."""

    first: int
    last: int
    reason: str  # pruned (the node no longer has them) | block_events_not_kept | not_indexed


@dataclass(frozen=True, slots=True)
class FeedPage:
    events: tuple[Event, ...]
    cursor: str  # opaque: pass it back to get what follows
    height: int  # the chain's height when the page was read
    gap: FeedGap | None = None  # set when the page passed over heights it could not read whole
