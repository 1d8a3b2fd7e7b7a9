"""The chain port: everything the provider needs from a market chain, in domain types.

The mock chain client implements it today; an Akash adapter implements the same Protocol. Errors are
``ChainError`` with a stable ``code`` (``unreachable`` when the chain could not be asked at all, so
callers can tell "no" from "no answer").
"""

from __future__ import annotations

from typing import Protocol

from provider.chain.types import (
    Bid,
    BidId,
    ChainStatus,
    Coin,
    Deployment,
    FeedPage,
    Lease,
    Order,
    OrderId,
    ProviderInfo,
)
from provider.errors import ProviderError

UNREACHABLE = "unreachable"


class ChainError(ProviderError):
    """The chain refused a request (``code`` says why) or could not be reached (``code`` unreachable)."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.status = status

    @property
    def unreachable(self) -> bool:
        return self.code == UNREACHABLE


class ChainPort(Protocol):
    """What the bid engine and the lease lifecycle use of a chain."""

    @property
    def address(self) -> str:
        """This provider's account address (the signer of its transactions)."""
        ...

    async def status(self) -> ChainStatus: ...

    async def events(self, after: str = "", limit: int = 500, wait: float = 0) -> FeedPage:
        """Events after an opaque cursor ("" = from the start), waiting up to ``wait`` seconds."""
        ...

    # -- market reads ------------------------------------------------------------------------------
    async def order(self, oid: OrderId) -> Order | None: ...

    async def orders(
        self, state: str | None = "open", owner: str | None = None, dseq: int | None = None
    ) -> list[Order]: ...

    async def bid(self, bid_id: BidId) -> Bid | None: ...

    async def bids(
        self, provider: str | None = None, state: str | None = None, owner: str | None = None, dseq: int | None = None
    ) -> list[Bid]: ...

    async def lease(self, lease_id: BidId) -> Lease | None: ...

    async def leases(
        self, provider: str | None = None, state: str | None = None, owner: str | None = None, dseq: int | None = None
    ) -> list[Lease]: ...

    async def deployment(self, owner: str, dseq: int) -> Deployment | None:
        """With its version hash, group specs and escrow."""
        ...

    async def account_public_key(self, address: str) -> bytes | None:
        """The account's public key, once the chain has seen it sign (None before)."""
        ...

    async def provider(self, address: str) -> ProviderInfo | None: ...

    # -- this provider's transactions --------------------------------------------------------------
    async def register_provider(self, attributes: dict[str, str], host_uri: str) -> None:
        """Create or update this provider's on-chain record."""
        ...

    async def create_bid(self, order: OrderId, price: Coin, deposit: Coin) -> None: ...

    async def close_bid(self, order: OrderId, reason: str) -> None:
        """Close our bid; on an active lease this closes our side of the lease (Akash's MsgCloseBid)."""
        ...

    async def withdraw_lease(self, lease_id: BidId) -> Coin:
        """Move what the lease has earned so far to our account; returns the amount."""
        ...

    async def aclose(self) -> None: ...
