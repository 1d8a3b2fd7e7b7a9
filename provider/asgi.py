"""Small ASGI pieces both our HTTP servers use: a body-size limit and an ASCII-only JSON response."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1 << 20  # 1 MiB: far above any real transaction or manifest


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a lone surrogate echoed back can never fail to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(code: str, message: str, status: int) -> AsciiJSONResponse:
    return AsciiJSONResponse({"code": code, "message": message}, status_code=status)


class ClientRateLimit:
    """Refuses HTTP requests with 429 when ``allow(client address)`` says no (a plain ASGI middleware:
    no per-request task or body copy, unlike a decorator-style HTTP middleware)."""

    def __init__(self, app: ASGIApp, allow: Callable[[str], bool]) -> None:
        self.app = app
        self.allow = allow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            if not self.allow(client[0] if client else "unknown"):
                await error_response("rate_limited", "too many requests from this address; slow down", 429)(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await error_response("body_too_large", f"request body over {self.limit} bytes", 413)(
                    scope, receive, send
                )
                return
        # read the whole body first (at most the limit), then hand it on: a body that grows past the
        # limit without a Content-Length is refused before the application sees a byte of it
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await error_response("body_too_large", f"request body over {self.limit} bytes", 413)(
                    scope, receive, send
                )
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
