"""Follow streams over websockets, as Akash serves them: a lease's logs arrive as the process prints them,
its Kubernetes events as they happen; the same auth as HTTP (401, 404 for another tenant); streams per
account are capped; a stream ends when its pods go. The websocket client is the `websockets` library."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from provider import tenant as tenant_ops
from provider.chain.keys import Key
from provider.money import Dec
from tests.cluster.lifecycle_kit import Daemon, daemon_running, get, gpu_sdl, lease_on, lease_ready, poll, tenant_client
from tests.jose import jose_token
from tests.market.conftest import ChainProcess, run

pytestmark = pytest.mark.cluster

TICKER = 'trap "exit 0" TERM; i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.5; done'


@pytest.fixture
def daemon(kubeconfig: Path, chain_proc: ChainProcess, real_node: dict[str, Any], tmp_path: Path) -> Iterator[Daemon]:
    with daemon_running(
        kubeconfig, chain_proc, real_node, tmp_path, api_extra={"max_follow_streams_per_account": 2}
    ) as d:
        yield d


def _ws(daemon: Daemon, path: str, token: str | None) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return connect(daemon.url.replace("http://", "ws://") + path, additional_headers=headers, open_timeout=30)


def _ticks(conn: ClientConnection, n: int) -> list[int]:
    out: list[int] = []
    while len(out) < n:
        msg = json.loads(conn.recv(timeout=30))
        assert set(msg) == {"name", "service", "message"} and msg["service"] == "app", msg
        if msg["message"].startswith("tick-"):
            out.append(int(msg["message"].removeprefix("tick-")))
    return out


def test_logs_and_events_follow_over_websockets(
    daemon: Daemon, chain_proc: ChainProcess, real_node: dict[str, Any]
) -> None:
    text = gpu_sdl(real_node["busybox"], command=TICKER)

    async def go() -> None:
        tenant = await tenant_client(chain_proc, Key.generate("tenant"))
        other = await tenant_client(chain_proc, Key.generate("other"))
        assert tenant.key is not None and other.key is not None
        await lease_on(tenant, text, 1301, daemon.key.address)
        await tenant_ops.send_manifest(tenant, text.encode(), "t.yaml", 1301)
        token = jose_token(tenant.key)

        await poll(lease_ready(daemon, token, 1301))

        # a followed log: the tail first, then lines printed after we connected, in order, without gaps
        with _ws(daemon, "/lease/1301/1/1/logs?follow=true&tail=2", token) as conn:
            first = _ticks(conn, 2)
            later = _ticks(conn, 4)
        assert later == list(range(first[-1] + 1, first[-1] + 5)), (first, later)

        # not following: the tail, then the server closes
        with _ws(daemon, "/lease/1301/1/1/logs?tail=3", token) as conn:
            assert len(_ticks(conn, 3)) == 3
            with pytest.raises(ConnectionClosed):
                conn.recv(timeout=30)

        # events: the deploy's history (scheduled, pulled, started) on the event stream
        with _ws(daemon, "/lease/1301/1/1/kubeevents?follow=true&tail=-1", token) as conn:
            reasons = set()
            deadline = time.monotonic() + 30
            while not {"Scheduled", "Started"} <= reasons and time.monotonic() < deadline:
                reasons.add(json.loads(conn.recv(timeout=30))["reason"])
        assert {"Scheduled", "Started"} <= reasons

        # the same auth as HTTP: no token 401, another tenant 404, a token without the scope 403 (the
        # other tenant's key is on chain once it has signed something)
        await tenant_ops.deploy(other, text.encode(), "other.yaml", Dec.parse(50_000_000), 1399, wait=0)
        for bad_token, status in (
            (None, 401),
            (jose_token(other.key), 404),
            (jose_token(tenant.key, leases={"access": "scoped", "scope": ["status"]}), 403),
        ):
            with pytest.raises(InvalidStatus) as refused:
                _ws(daemon, "/lease/1301/1/1/logs?follow=true", bad_token)
            assert refused.value.response.status_code == status

        # at most two follow streams per account (this daemon's setting); a closed one frees its place
        with contextlib.ExitStack() as streams:
            one = streams.enter_context(_ws(daemon, "/lease/1301/1/1/logs?follow=true&tail=0", token))
            two = streams.enter_context(_ws(daemon, "/lease/1301/1/1/logs?follow=true&tail=0", token))
            with pytest.raises(InvalidStatus) as refused:
                _ws(daemon, "/lease/1301/1/1/logs?follow=true&tail=0", token)
            assert refused.value.response.status_code == 429
            one.close()

            def reopened() -> ClientConnection | None:
                try:
                    return streams.enter_context(_ws(daemon, "/lease/1301/1/1/logs?follow=true&tail=0", token))
                except InvalidStatus:
                    return None

            deadline = time.monotonic() + 20
            three = reopened()
            while three is None and time.monotonic() < deadline:
                time.sleep(0.2)
                three = reopened()
            assert three is not None

            # over plain HTTP, follow=true says where to go
            resp = get(f"{daemon.url}/lease/1301/1/1/logs?follow=true", token)
            assert resp.status_code == 400 and "websocket" in resp.json()["message"]

            # the lease closes: its pods go, so the server ends the follow streams
            await tenant_ops.close(tenant, 1301)
            for conn in (two, three):
                with pytest.raises(ConnectionClosed):
                    while True:
                        conn.recv(timeout=90)
        await tenant.aclose()
        await other.aclose()

    run(go())
