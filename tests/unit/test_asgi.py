"""The API's plain ASGI guards in front of the application: per-client rate limits (429 before anything
else runs) and the body limit (413 before the body reaches the application)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from provider.api.app import RateLimiter
from provider.asgi import BodyLimit, ClientRateLimit

seen: list[int] = []


async def echo(request: Request) -> PlainTextResponse:
    body = await request.body()
    seen.append(len(body))
    return PlainTextResponse(str(len(body)))


def _client(rate: float, limit: int = 100) -> TestClient:
    app = Starlette(routes=[Route("/", echo, methods=["GET", "POST"])])
    guarded = ClientRateLimit(BodyLimit(app, limit=limit), allow=RateLimiter(rate, rate * 2).allow)
    return TestClient(guarded)


def test_a_client_over_its_rate_gets_429_and_the_app_never_runs() -> None:
    seen.clear()
    client = _client(rate=1)  # a burst of 2, then 1 per second
    codes = [client.get("/").status_code for _ in range(5)]
    assert codes[:2] == [200, 200] and set(codes[2:]) == {429}
    assert len(seen) == 2
    refused = client.get("/")
    assert refused.json()["code"] == "rate_limited"


def test_a_body_over_the_limit_is_refused_before_the_app_reads_it() -> None:
    seen.clear()
    client = _client(rate=1000, limit=10)
    assert client.post("/", content=b"x" * 10).status_code == 200
    assert client.post("/", content=b"x" * 11).status_code == 413

    def chunks() -> object:
        yield b"x" * 6
        yield b"x" * 6

    assert client.post("/", content=chunks()).status_code == 413  # no Content-Length: counted as it comes
    assert seen == [10]


def test_the_rate_limiter_forgets_the_least_recent_keys_first() -> None:
    limiter = RateLimiter(rate=1, burst=1, size=2)
    assert limiter.allow("a") and limiter.allow("b") and limiter.allow("c")
    assert not limiter.allow("c")  # spent
    assert limiter.allow("a")  # "a" was forgotten (bounded memory), so it starts with a full bucket
