"""A won lease becomes a running GPU workload on the real node, through the authenticated provider API,
and goes away when the lease closes. The daemon is a real `gpu-provider run` process; the chain is the
mock chain server; tokens in the refusal tests are minted by joserfc, not by our own signing code."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from provider import tenant as tenant_ops
from provider.chain.keys import Key
from provider.chain.types import BidId
from provider.deploy.naming import namespace_for
from provider.money import Dec
from tests.cluster.lifecycle_kit import Daemon, daemon_running, get, gpu_sdl, lease_on, lease_ready, poll, tenant_client
from tests.jose import jose_token
from tests.market.conftest import ChainProcess, run

pytestmark = pytest.mark.cluster


@pytest.fixture
def daemon(kubeconfig: Path, chain_proc: ChainProcess, real_node: dict[str, Any], tmp_path: Path) -> Iterator[Daemon]:
    with daemon_running(kubeconfig, chain_proc, real_node, tmp_path) as d:
        yield d


def test_gpu_lease_runs_on_the_real_node_and_goes_away_on_close(
    daemon: Daemon, chain_proc: ChainProcess, real_node: dict[str, Any], api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    text = gpu_sdl(real_node["busybox"])

    async def go() -> None:
        tenant = await tenant_client(chain_proc, Key.generate("tenant"))
        other = await tenant_client(chain_proc, Key.generate("other"))
        assert tenant.key is not None and other.key is not None
        lease_id = await lease_on(tenant, text, 101, daemon.key.address)
        base = f"{daemon.url}/lease/101/1/1"

        # a wrong manifest (another SDL's version) is refused, and nothing is deployed from it
        wrong = gpu_sdl(real_node["busybox"], command="echo other; sleep 3600")
        with pytest.raises(Exception, match="version"):
            await tenant_ops.send_manifest(tenant, wrong.encode(), "wrong.yaml", 101)

        sent = await tenant_ops.send_manifest(tenant, text.encode(), "test.yaml", 101)
        assert sent == [f"{daemon.url}/deployment/101/manifest"]
        token = jose_token(tenant.key)

        status = await poll(lease_ready(daemon, token, 101))
        assert status["services"]["app"]["available"] == 1 and status["services"]["app"]["total"] == 1
        assert status["errors"] == []
        assert status["forwarded_ports"]["app"][0]["port"] == 8080

        ns = namespace_for(BidId.parse(lease_id))
        pods = core.list_namespaced_pod(ns).items
        assert len(pods) == 1 and pods[0].spec.node_name == real_node["name"]
        assert pods[0].spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
        assert pods[0].spec.runtime_class_name == "nvidia"

        async def logged() -> Any:
            lines = get(base + "/logs?tail=10", token).json().get("logs", [])
            return [x for x in lines if "hello-from-lease" in x["message"]]

        assert await poll(logged, 60)

        # another tenant (known on chain: it has signed a deployment) sees nothing of it; a token
        # without the scope gets 403 and no data
        await tenant_ops.deploy(other, text.encode(), "other.yaml", Dec.parse(50_000_000), 909, wait=0)
        assert get(base + "/status", jose_token(other.key)).status_code == 404
        scoped = jose_token(tenant.key, leases={"access": "scoped", "scope": ["logs"]})
        denied = get(base + "/status", scoped)
        assert denied.status_code == 403 and "services" not in denied.text

        # the manifest object and every log line of the daemon are free of the env secret
        stored = get(base + "/manifest", token).json()
        assert "s3cr3t-env-value" not in json.dumps(stored)
        assert "s3cr3t-env-value" not in daemon.logs()

        # close: the namespace goes, the stored manifest too
        await tenant_ops.close(tenant, 101)

        async def gone() -> bool:
            try:
                core.read_namespace(ns)
            except client.ApiException as e:
                return e.status == 404
            return False

        await poll(gone, 120)
        await tenant.aclose()
        await other.aclose()

    run(go())


def test_an_image_that_cannot_be_pulled_shows_its_reason(
    daemon: Daemon, chain_proc: ChainProcess, real_node: dict[str, Any]
) -> None:
    registry = real_node["registry"]
    text = gpu_sdl(f"{registry}/no-such-image:missing")

    async def go() -> None:
        tenant = await tenant_client(chain_proc, Key.generate("tenant"))
        assert tenant.key is not None
        await lease_on(tenant, text, 202, daemon.key.address)
        await tenant_ops.send_manifest(tenant, text.encode(), "test.yaml", 202)
        token = jose_token(tenant.key)

        async def failing() -> Any:
            body = get(f"{daemon.url}/lease/202/1/1/status", token).json()
            reasons = {e["reason"] for e in body.get("errors", [])}
            return body if reasons & {"ErrImagePull", "ImagePullBackOff"} else None

        status = await poll(failing)
        assert status["state"] in ("failed", "deploying")
        assert any(
            "not found" in e["message"].lower() or "manifest unknown" in e["message"].lower() for e in status["errors"]
        )
        await tenant_ops.close(tenant, 202)
        await tenant.aclose()

    run(go())


def test_tokens_that_are_not_valid_are_refused(daemon: Daemon, chain_proc: ChainProcess) -> None:
    async def go() -> None:
        tenant = await tenant_client(chain_proc, Key.generate("tenant"))
        assert tenant.key is not None
        # the tenant's key is on chain once it has signed something (here: a deployment)
        await tenant_ops.deploy(tenant, gpu_sdl("busybox").encode(), "t.yaml", Dec.parse(50_000_000), 404, wait=0)
        url = f"{daemon.url}/lease/1/1/1/status"
        now = int(time.time())
        stranger = Key.generate("stranger")  # never signed anything on chain
        forged = jose_token(stranger, iss=tenant.key.address)  # claims the tenant, signed by another key
        cases = {
            "expired": jose_token(tenant.key, iat=now - 900, nbf=now - 900, exp=now - 300),
            "not yet valid": jose_token(tenant.key, nbf=now + 600, iat=now, exp=now + 900),
            "forged": forged,
            "unknown issuer": jose_token(stranger),
            "too long-lived": jose_token(tenant.key, exp=now + 86_400),
            "bad version": jose_token(tenant.key, version="v2"),
            "garbage": "not.a.jwt",
        }
        for name, token in cases.items():
            resp = get(url, token)
            assert resp.status_code == 401, (name, resp.status_code, resp.text)
        assert httpx.get(url, timeout=10).status_code == 401
        # a valid token for a lease the tenant does not have: 404, no data
        assert get(url, jose_token(tenant.key)).status_code == 404
        await tenant.aclose()

    run(go())


def test_manifest_timeout_closes_our_side(
    kubeconfig: Path, chain_proc: ChainProcess, real_node: dict[str, Any], tmp_path: Path
) -> None:
    with daemon_running(kubeconfig, chain_proc, real_node, tmp_path, manifest_timeout_blocks=15) as d:

        async def go() -> None:
            tenant = await tenant_client(chain_proc, Key.generate("tenant"))
            assert tenant.key is not None
            await lease_on(tenant, gpu_sdl(real_node["busybox"]), 303, d.key.address)

            async def closed() -> Any:
                leases = await tenant.leases(owner=tenant.key.address, dseq=303)  # type: ignore[union-attr]
                return [x for x in leases if x.state == "closed"]

            lease = (await poll(closed, 60))[0]
            assert lease.closed_reason == "manifest_timeout"
            await tenant.aclose()

        run(go())
    assert "no manifest in time" in d.logs()


def test_a_lease_failed_on_the_tenants_side_is_closed_only_under_the_policy(
    kubeconfig: Path, chain_proc: ChainProcess, real_node: dict[str, Any], tmp_path: Path
) -> None:
    """deploy.close_failed_after_seconds: an image that cannot be pulled keeps the lease failed; after
    the configured time our side is closed with reason tenant_workload_failed (off by default: the other
    tests keep such leases open)."""
    text = gpu_sdl(f"{real_node['registry']}/no-such-image:missing")
    with daemon_running(
        kubeconfig, chain_proc, real_node, tmp_path, deploy_extra={"close_failed_after_seconds": 5}
    ) as d:

        async def go() -> None:
            tenant = await tenant_client(chain_proc, Key.generate("tenant"))
            assert tenant.key is not None
            await lease_on(tenant, text, 505, d.key.address)
            await tenant_ops.send_manifest(tenant, text.encode(), "t.yaml", 505)

            async def closed() -> Any:
                leases = await tenant.leases(owner=tenant.key.address, dseq=505)  # type: ignore[union-attr]
                return [x for x in leases if x.state == "closed"]

            lease = (await poll(closed, 180))[0]
            assert lease.closed_reason == "tenant_workload_failed"
            await tenant.aclose()

        run(go())
    assert "closing a lease failed on the tenant's side" in d.logs()
