"""Two replicas of the daemon (HA) on one provider account, against the dev cluster and the mock chain:
one leader bids and deploys, the standby serves the API (a manifest sent to it is deployed by the leader),
kill -9 of the leader hands over to the standby without losing a lease, exactly one bid transaction is sent
per order across both replicas, and a graceful stop hands over at once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

import sdl
from provider import tenant as tenant_ops
from provider.chain.keys import Key
from provider.chain.types import BidId
from provider.deploy.naming import namespace_for
from tests.cluster.lifecycle_kit import Daemon, gpu_sdl, lease_on, lease_ready, poll, tenant_client
from tests.jose import jose_token
from tests.market.conftest import ChainProcess, funded, run

pytestmark = pytest.mark.cluster

HA = {"enabled": True, "lease_seconds": 6, "renew_seconds": 4, "retry_seconds": 1, "sync_seconds": 1}
KWOK_SDL = gpu_sdl("registry.invalid/kwok-never-pulls:1", model="h100")  # KWOK runs it; nothing is pulled


def _status(d: Daemon) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(d.url + "/status", timeout=10).json()
    return body


def _leading(d: Daemon) -> Any:
    async def check() -> bool:
        try:
            return bool(_status(d)["leader"]["leading"])
        except httpx.HTTPError:
            return False

    return check


def _send_manifest_to(d: Daemon, tenant: Any, dseq: int) -> None:
    """PUT the manifest to this replica (not to the host URI on chain, which names the first leader)."""
    body = json.dumps(sdl.parse(KWOK_SDL.encode()).manifest_json())
    token = tenant_ops.token(tenant, ["send-manifest"])
    r = httpx.put(f"{d.url}/deployment/{dseq}/manifest", content=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


def test_a_standby_takes_over_without_losing_a_lease_or_bidding_twice(
    kubeconfig: Path, chain_proc: ChainProcess, real_node: dict[str, Any], api: client.ApiClient, tmp_path: Path
) -> None:
    apps = client.AppsV1Api(api)
    dns = str(real_node["ip"])
    a = Daemon(tmp_path / "a", kubeconfig, chain_proc, dns, ha=HA)
    b = Daemon(tmp_path / "b", kubeconfig, chain_proc, dns, ha=HA, key=a.key)
    c: Daemon | None = None
    assert a.key is not None and b.key is not None and a.key.address == b.key.address
    run(funded(chain_proc.url, a.key))
    a.setup()

    async def go() -> None:
        nonlocal c
        a.start()
        await poll(_leading(a), 60, 0.2)
        b.start()  # ready (serves the API) as a standby
        assert _status(b)["leader"]["leading"] is False
        assert a.metric("gpu_provider_leader") == 1 and b.metric("gpu_provider_leader") == 0

        tenant = await tenant_client(chain_proc, Key.generate("tenant"))
        assert tenant.key is not None
        token = jose_token(tenant.key)
        first = await lease_on(tenant, KWOK_SDL, 2001, a.key.address)  # type: ignore[union-attr]
        _send_manifest_to(b, tenant, 2001)  # the standby stores it, the leader deploys it
        await poll(lease_ready(a, token, 2001), 120)
        await poll(lease_ready(b, token, 2001), 60)  # the standby's status agrees
        bids_by_a = a.metric("gpu_provider_bids_placed_total")
        assert bids_by_a == 1 and b.metric("gpu_provider_bids_placed_total") == 0

        a.kill9()  # no release: b takes over once a's lease runs out
        killed = time.monotonic()
        await poll(_leading(b), 60, 0.2)
        print(f"failover after kill -9: {time.monotonic() - killed:.1f}s (lease_seconds={HA['lease_seconds']})")

        second = await lease_on(tenant, KWOK_SDL, 2002, b.key.address)  # type: ignore[union-attr]
        _send_manifest_to(b, tenant, 2002)
        await poll(lease_ready(b, token, 2002), 120)
        assert await lease_ready(b, token, 2001)()  # the first lease lived through the failover
        # one bid transaction per order across both replicas (the new leader re-bid nothing)
        assert bids_by_a + b.metric("gpu_provider_bids_placed_total") == 2
        # one set of objects per lease: the new leader converged onto what the old one applied
        for lease in (first, second):
            (deployment,) = apps.list_namespaced_deployment(namespace_for(BidId.parse(lease))).items
            assert deployment.metadata.name == "app"

        # a graceful stop hands over at once: a fresh replica leads well within one lease period
        c = Daemon(tmp_path / "c", kubeconfig, chain_proc, dns, ha=HA, key=a.key)
        c.start()
        assert _status(c)["leader"]["leading"] is False
        b.stop()
        assert "leadership released=True" in b.logs()
        await poll(_leading(c), 60, 0.2)
        assert await lease_ready(c, token, 2001)() and await lease_ready(c, token, 2002)()
        await tenant_ops.close(tenant, 2001)
        await tenant_ops.close(tenant, 2002)
        await tenant.aclose()
        core = client.CoreV1Api(api)

        async def torn_down() -> bool:  # by the leader that is left, c
            names = {namespace_for(BidId.parse(lease)) for lease in (first, second)}
            return all(
                ns.metadata.name not in names or ns.status.phase == "Terminating" for ns in core.list_namespace().items
            )

        await poll(torn_down, 60)

    try:
        run(go())
    finally:
        for d in (a, b, c):
            if d is not None:
                d.stop()
