"""The mock chain's HTTP/JSON API (FastAPI, so its contract is published as OpenAPI at /openapi.json).

Reads are plain GETs; every state change is a signed transaction POSTed to /tx. /events long-polls: a
subscriber passes the cursor of the last event it handled and misses nothing across reconnects. Long
polls wait on the event loop (no thread each), so any number of idle subscribers never starve /tx.
Request bodies are bounded; every error is JSON with a stable ``code``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from typing import Any

from fastapi import FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from provider.asgi import AsciiJSONResponse, BodyLimit
from provider.asgi import error_response as _error
from provider.chain.mock.state import Chain, TxError
from provider.money import Dec

_CURSOR = re.compile(r"^(\d{1,18}):(\d{1,18})$")
MAX_HEIGHT = 2**62


class SignedTx(BaseModel):
    account: str
    pubkey: str
    sequence: int
    type: str
    msg: dict[str, Any]
    signature: str


class FundRequest(BaseModel):
    address: str
    denom: str
    amount: str = Field(pattern=r"^\d{1,30}(\.\d{1,18})?$")


def parse_cursor(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    m = _CURSOR.match(text)
    if not m:
        raise TxError("invalid_cursor", "cursor must be HEIGHT:INDEX (decimal numbers)")
    return int(m[1]), int(m[2])


class _Wakeup:
    """Wakes the event loop's long polls when the chain commits (called from the chain's threads)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None

    def bind(self) -> asyncio.Event:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            self.event = asyncio.Event()
        assert self.event is not None
        return self.event

    def _fire(self) -> None:
        if self.event is not None:
            self.event.set()
            self.event = asyncio.Event()

    def __call__(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop shutting down
                loop.call_soon_threadsafe(self._fire)


def create_app(chain: Chain) -> FastAPI:
    app = FastAPI(
        title="gpu-provider mock chain",
        version="1",
        description="An Akash-like market on one machine: deployments, orders, bids, leases, escrow and an event feed.",
        default_response_class=AsciiJSONResponse,
    )
    app.add_middleware(BodyLimit)
    wakeup = _Wakeup()
    chain.add_listener(wakeup)

    @app.exception_handler(TxError)
    async def tx_error(_: Request, exc: TxError) -> JSONResponse:
        return _error(exc.code, str(exc), exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) else {"code": "error", "message": str(exc.detail)}
        return AsciiJSONResponse(detail, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error("invalid_request", str(exc.errors())[:500], 422)

    @app.get("/status", summary="chain id, genesis id (changes when the chain is reset) and current height")
    def status() -> dict[str, Any]:
        return {"chain_id": chain.params.chain_id, "genesis": chain.genesis, "height": chain.height}

    @app.get("/accounts/{address}", summary="sequence, public key (once it signed) and balances of an account")
    def account(address: str) -> dict[str, Any]:
        return chain.account(address)

    @app.get("/providers/{address}", summary="a provider's attributes and the attributes auditors signed for it")
    def provider(address: str) -> dict[str, Any]:
        found = chain.provider(address)
        if found is None:
            raise HTTPException(404, detail={"code": "not_found", "message": f"no provider {address}"})
        return found

    @app.get("/deployments/{owner}/{dseq}", summary="a deployment and its escrow")
    def deployment(owner: str, dseq: int = Path(ge=0, le=MAX_HEIGHT)) -> dict[str, Any]:
        found = chain.deployment(owner, dseq)
        if found is None:
            raise HTTPException(404, detail={"code": "not_found", "message": f"no deployment {owner}/{dseq}"})
        return found

    def listing(table: str, filters: dict[str, Any], after: str, limit: int) -> dict[str, Any]:
        items, next_key = chain.query(table, filters, after, limit)
        return {"items": items, "next": next_key}

    @app.get("/orders", summary="orders, filtered and paged")
    def orders(
        state: str | None = None, owner: str | None = None, dseq: int | None = Query(None, ge=0, le=MAX_HEIGHT),
        after: str = "", limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:  # fmt: skip
        return listing("orders", {"state": state, "owner": owner, "dseq": dseq}, after, limit)

    @app.get("/bids", summary="bids, filtered and paged")
    def bids(
        state: str | None = None, owner: str | None = None, dseq: int | None = Query(None, ge=0, le=MAX_HEIGHT),
        provider: str | None = None,
        after: str = "", limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:  # fmt: skip
        return listing("bids", {"state": state, "owner": owner, "dseq": dseq, "provider": provider}, after, limit)

    @app.get("/leases", summary="leases, filtered and paged")
    def leases(
        state: str | None = None, owner: str | None = None, dseq: int | None = Query(None, ge=0, le=MAX_HEIGHT),
        provider: str | None = None,
        after: str = "", limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:  # fmt: skip
        return listing("leases", {"state": state, "owner": owner, "dseq": dseq, "provider": provider}, after, limit)

    @app.get("/events", summary="events after a cursor (HEIGHT:INDEX), waiting up to `wait` seconds for new ones")
    async def events(
        after: str = "", limit: int = Query(500, ge=1, le=5000), wait: float = Query(0, ge=0, le=30)
    ) -> dict[str, Any]:
        position = parse_cursor(after)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            changed = wakeup.bind()  # taken before reading, so a commit in between is not missed
            found = chain.events(position, limit)
            left = deadline - loop.time()
            if found or left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)
        cursor = f"{found[-1]['height']}:{found[-1]['index']}" if found else after
        return {"events": found, "cursor": cursor, "height": chain.height}

    @app.post("/tx", summary="submit a signed transaction")
    def submit(tx: SignedTx) -> dict[str, Any]:
        return chain.submit(tx.model_dump())

    if chain.params.faucet:

        @app.post("/faucet", summary="credit an account (mock chain only)")
        def faucet(req: FundRequest) -> dict[str, Any]:
            chain.fund(req.address, req.denom, Dec.parse(req.amount))
            return chain.account(req.address)

    return app


class BlockTicker:
    """Advances the chain one block every ``interval`` seconds in a background thread."""

    def __init__(self, chain: Chain, interval: float) -> None:
        self.chain = chain
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="block-ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.chain.advance()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
