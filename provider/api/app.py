"""The provider API (FastAPI): Akash's gateway paths, query parameters and JSON shapes, so its tooling
ports over, plus the lease ``state`` and the ``errors`` Akash never fills.

Public: ``/status``, ``/address``, ``/version``, ``/healthz``, ``/readyz``. Everything under
``/deployment`` and ``/lease`` needs ``Authorization: Bearer <JWT>``: no or a bad token is 401; a
token that does not grant the scope or the lease is 403 with no data. The owner is always the
token's issuer, so a tenant can only ever name its own leases. Bodies are bounded; requests are
rate limited per client address and per account.
"""

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from provider.api.auth import AuthError, Scope, Target, Tenant, TokenVerifier
from provider.api.streams import END, FollowLimits, pump
from provider.asgi import AsciiJSONResponse, BodyLimit, ClientRateLimit, error_response
from provider.deploy.deployer import public_group
from provider.errors import KubeError
from provider.kube import LineStream
from provider.leases.service import LeaseRecord, LeaseService, ManifestRefusedError

log = logging.getLogger("provider.api")

MAX_SEQ = 2**63 - 1
FOLLOW_OVER_WEBSOCKET = (
    "follow=true is served over a websocket at this same path (as Akash's provider serves it); "
    "over plain HTTP, use follow=false"
)
Seq = Annotated[int, Path(ge=1, le=MAX_SEQ)]
Seq0 = Annotated[int, Path(ge=0, le=MAX_SEQ)]


@dataclass(frozen=True)
class ApiLimits:
    max_manifest_bytes: int = 1 << 20
    client_rate: float = 20.0  # requests per second per client address (bursts of 2x)
    account_rate: float = 10.0  # authenticated requests per second per account
    max_log_lines: int = 10_000
    max_follow_streams: int = 100  # websocket follow streams open at once, in all
    max_follow_streams_per_account: int = 8
    follow_max_seconds: float = 3600.0  # a follow stream is closed after this long (the client reconnects)


class RateLimiter:
    """Token buckets per key, bounded in number (the least recently used key is forgotten first)."""

    def __init__(self, rate: float, burst: float, size: int = 50_000) -> None:
        self.rate, self.burst, self.size = rate, burst, size
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1
        self._buckets[key] = (tokens - 1 if allowed else tokens, now)
        while len(self._buckets) > self.size:
            self._buckets.popitem(last=False)
        return allowed


def _deny(status: int, code: str, message: str) -> HTTPException:
    return HTTPException(status, detail={"code": code, "message": message})


def create_app(
    leases: LeaseService,
    verifier: TokenVerifier,
    provider_status: Callable[[], Awaitable[dict[str, Any]]],
    limits: ApiLimits | None = None,
    version: str = "0.1.0",
) -> FastAPI:
    limits = limits or ApiLimits()
    me = leases.me
    app = FastAPI(
        title="gpu-provider API",
        version=version,
        description="Tenant API of a gpu-provider (Akash-compatible paths): manifests, lease status, events, logs.",
        default_response_class=AsciiJSONResponse,
    )
    app.add_middleware(BodyLimit, limit=limits.max_manifest_bytes)
    per_client = RateLimiter(limits.client_rate, limits.client_rate * 2)
    per_account = RateLimiter(limits.account_rate, limits.account_rate * 2)
    app.add_middleware(ClientRateLimit, allow=per_client.allow)  # outermost: before a body is read

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) else {"code": "error", "message": str(exc.detail)}
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return AsciiJSONResponse(detail, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response("invalid_request", f"{where}: {first.get('msg', 'invalid')}"[:300], 422)

    async def tenant(request: Request) -> Tenant:
        return await authenticate(request.headers.get("authorization", ""))

    async def authenticate(header: str) -> Tenant:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _deny(401, "unauthenticated", "send Authorization: Bearer <JWT signed with your account key>")
        try:
            who = await verifier.verify(token.strip())
        except AuthError as e:
            raise _deny(401, "unauthenticated", str(e)) from None
        except Exception:
            raise _deny(503, "unavailable", "cannot verify tokens right now (chain unreachable); retry") from None
        if not per_account.allow(who.address):
            raise _deny(429, "rate_limited", "too many requests for this account; slow down")
        return who

    Caller = Annotated[Tenant, Depends(tenant)]  # noqa: N806 (a type alias)

    def need(who: Tenant, target: Target) -> None:
        if not who.allows(me, target):
            raise _deny(403, "forbidden", f"the token does not grant {target.scope} on this lease")

    def services_wanted(who: Tenant, target: Target, service: str) -> frozenset[str] | None:
        """The services whose logs to read: those asked for (comma-separated; none = all), within those
        the token grants (None = every service)."""
        asked = frozenset(s for s in service.split(",") if s) or None
        allowed = who.services(me, target)
        if asked is None:
            return allowed
        return asked if allowed is None else asked & allowed

    def lease_of(who: Tenant, dseq: int, gseq: int, oseq: int) -> LeaseRecord:
        rec = leases.lease_for(who.address, dseq, gseq, oseq)
        if rec is None:
            raise _deny(404, "lease_not_found", f"you have no active lease {dseq}/{gseq}/{oseq} with this provider")
        return rec

    @app.get("/healthz", summary="the process is alive")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/readyz", summary="the lease service has started (cluster and chain reached)")
    async def readyz() -> JSONResponse:
        if leases.ready:
            return AsciiJSONResponse({"ready": True})
        return AsciiJSONResponse({"ready": False}, status_code=503)

    @app.get("/address", summary="the provider's account address")
    async def address() -> dict[str, str]:
        return {"address": me}

    @app.get("/version", summary="the provider's software version")
    async def get_version() -> dict[str, str]:
        return {"version": version}

    @app.get("/status", summary="public status: address, leases, open bids, GPUs per model")
    async def status() -> dict[str, Any]:
        return await provider_status()

    @app.put("/deployment/{dseq}/manifest", summary="send the manifest of a deployment with a lease here")
    async def put_manifest(dseq: Seq, request: Request, who: Caller) -> dict[str, Any]:
        need(who, Target("send-manifest", dseq))
        body = await request.body()
        try:
            accepted = await leases.submit_manifest(who.address, dseq, body)
        except ManifestRefusedError as e:
            raise _deny(e.status, e.reason, str(e)) from None
        return {"accepted": accepted}

    @app.get("/lease/{dseq}/{gseq}/{oseq}/status", summary="the lease's services, URIs, ports, state and errors")
    async def lease_status(dseq: Seq, gseq: Seq, oseq: Seq, who: Caller) -> dict[str, Any]:
        need(who, Target("status", dseq, gseq, oseq))
        return await leases.lease_status(lease_of(who, dseq, gseq, oseq))

    @app.get("/lease/{dseq}/{gseq}/{oseq}/manifest", summary="the stored manifest group (secrets removed)")
    async def lease_manifest(dseq: Seq, gseq: Seq, oseq: Seq, who: Caller) -> dict[str, Any]:
        need(who, Target("get-manifest", dseq, gseq, oseq))
        rec = lease_of(who, dseq, gseq, oseq)
        if rec.group is None:
            raise _deny(404, "no_manifest", "no manifest was accepted for this lease yet")
        return {"version": rec.version, "group": public_group(rec.group.to_json())}

    @app.get("/lease/{dseq}/{gseq}/{oseq}/kubeevents", summary="Kubernetes events of the lease's objects")
    async def lease_events(
        dseq: Seq,
        gseq: Seq,
        oseq: Seq,
        who: Caller,
        tail: Annotated[int, Query(ge=-1, le=10_000)] = 200,
        follow: bool = False,
    ) -> dict[str, Any]:
        need(who, Target("events", dseq, gseq, oseq))
        rec = lease_of(who, dseq, gseq, oseq)
        if follow:
            raise _deny(400, "follow_needs_websocket", FOLLOW_OVER_WEBSOCKET)
        events = await asyncio.to_thread(leases.deployer.events, rec.id, tail if tail >= 0 else 10_000)
        return {"events": events}

    @app.get("/lease/{dseq}/{gseq}/{oseq}/logs", summary="the output of the lease's containers")
    async def lease_logs(
        dseq: Seq,
        gseq: Seq,
        oseq: Seq,
        who: Caller,
        tail: Annotated[int, Query(ge=-1, le=10_000)] = 100,
        service: Annotated[str, Query(max_length=1000)] = "",
        follow: bool = False,
    ) -> dict[str, Any]:
        target = Target("logs", dseq, gseq, oseq)
        need(who, target)
        rec = lease_of(who, dseq, gseq, oseq)
        if follow:
            raise _deny(400, "follow_needs_websocket", FOLLOW_OVER_WEBSOCKET)
        wanted = services_wanted(who, target, service)
        lines = await asyncio.to_thread(
            leases.deployer.logs, rec.id, wanted, min(tail, limits.max_log_lines) if tail >= 0 else limits.max_log_lines
        )
        return {"logs": lines[-limits.max_log_lines :]}

    # -- websockets: the same paths, as Akash serves them (follow streams) ------------------------------
    follows = FollowLimits(limits.max_follow_streams, limits.max_follow_streams_per_account)

    async def deny_ws(ws: WebSocket, exc: HTTPException) -> None:
        detail = exc.detail if isinstance(exc.detail, dict) else {"code": "error", "message": str(exc.detail)}
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
            await ws.send_denial_response(AsciiJSONResponse(detail, status_code=exc.status_code, headers=headers))
        else:  # Akash's close codes: 4001 lease not found, 4002 unavailable
            code = {404: 4001, 503: 4002}.get(exc.status_code, 1008)
            await ws.close(code, str(detail.get("message", ""))[:120])

    async def ws_open(
        ws: WebSocket, scope: Scope, dseq: int, gseq: int, oseq: int, follow: bool
    ) -> tuple[Tenant, LeaseRecord] | None:
        """Authenticate and authorize a websocket like an HTTP request, and take a follow-stream place when
        it follows (the caller releases it); None when refused (the refusal is sent)."""
        try:
            client = ws.client.host if ws.client else "unknown"
            if not per_client.allow(client):
                raise _deny(429, "rate_limited", "too many requests from this address; slow down")
            who = await authenticate(ws.headers.get("authorization", ""))
            need(who, Target(scope, dseq, gseq, oseq))
            rec = lease_of(who, dseq, gseq, oseq)
            why = follows.acquire(who.address) if follow else None
            if why:
                raise _deny(429, "too_many_streams", why)
        except HTTPException as e:
            await deny_ws(ws, e)
            return None
        return who, rec

    @app.websocket("/lease/{dseq}/{gseq}/{oseq}/logs")
    async def ws_logs(
        ws: WebSocket,
        dseq: Seq,
        gseq: Seq,
        oseq: Seq,
        tail: Annotated[int, Query(ge=-1, le=10_000)] = 100,
        service: Annotated[str, Query(max_length=1000)] = "",
        follow: bool = False,
    ) -> None:
        opened = await ws_open(ws, "logs", dseq, gseq, oseq, follow)
        if opened is None:
            return
        who, rec = opened
        wanted = services_wanted(who, Target("logs", dseq, gseq, oseq), service)
        try:
            await ws.accept()
            if not follow:
                lines = await asyncio.to_thread(leases.deployer.logs, rec.id, wanted, tail)
                for line in lines[-limits.max_log_lines :]:
                    await ws.send_json(line)
                await ws.close(1000)
                return
            try:
                streams = await asyncio.to_thread(leases.deployer.follow_logs, rec.id, wanted, tail)
            except KubeError:
                await ws.close(4002, "the cluster cannot be read right now; retry")
                return

            def start(emit: Callable[[Any], None]) -> Callable[[], None]:
                left = [len(streams)]
                lock = threading.Lock()

                def read(svc: str, name: str, stream: LineStream) -> None:
                    for text in stream:
                        emit({"name": name, "service": svc, "message": text})
                    with lock:
                        left[0] -= 1
                        last = left[0] == 0
                    if last:
                        emit(END)

                if not streams:
                    emit(END)
                for svc, name, stream in streams:
                    threading.Thread(target=read, args=(svc, name, stream), daemon=True, name="follow-logs").start()

                def stop() -> None:
                    for _, _, s in streams:
                        s.close()

                return stop

            await pump(ws, start, limits.follow_max_seconds)
        finally:
            if follow:
                follows.release(who.address)

    @app.websocket("/lease/{dseq}/{gseq}/{oseq}/kubeevents")
    async def ws_events(
        ws: WebSocket,
        dseq: Seq,
        gseq: Seq,
        oseq: Seq,
        tail: Annotated[int, Query(ge=-1, le=10_000)] = 200,
        follow: bool = False,
    ) -> None:
        opened = await ws_open(ws, "events", dseq, gseq, oseq, follow)
        if opened is None:
            return
        who, rec = opened
        try:
            await ws.accept()
            if not follow:
                for event in await asyncio.to_thread(leases.deployer.events, rec.id, tail if tail >= 0 else 10_000):
                    await ws.send_json(event)
                await ws.close(1000)
                return
            stop = threading.Event()

            def start(emit: Callable[[Any], None]) -> Callable[[], None]:
                def run() -> None:
                    try:
                        leases.deployer.follow_events(rec.id, tail, emit, stop)
                    except KubeError as e:
                        log.info("event stream ended lease=%s error=%r", rec.id, str(e)[:200])
                    finally:
                        emit(END)

                threading.Thread(target=run, daemon=True, name="follow-events").start()
                return stop.set

            await pump(ws, start, limits.follow_max_seconds)
        finally:
            if follow:
                follows.release(who.address)

    return app
