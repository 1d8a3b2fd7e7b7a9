"""The daemon recovers: kill -9 in the middle of a deploy converges on restart without a duplicate object
or transaction; an API server restart is ridden out; and no secret ever reaches a log line."""

from __future__ import annotations

import base64
import json
import signal
from collections import Counter
from collections.abc import Iterator
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
from provider.devcluster import DevCluster
from tests.cluster.lifecycle_kit import Daemon, daemon_running, get, gpu_sdl, lease_on, lease_ready, poll, tenant_client
from tests.jose import jose_token
from tests.market.conftest import ChainProcess, run

pytestmark = pytest.mark.cluster

QUICK_EXIT = 'echo hello-from-lease; trap "exit 0" TERM; while :; do sleep 1; done'


@pytest.fixture
def daemon(kubeconfig: Path, chain_proc: ChainProcess, real_node: dict[str, Any], tmp_path: Path) -> Iterator[Daemon]:
    with daemon_running(kubeconfig, chain_proc, real_node, tmp_path) as d:
        yield d


def _objects(api: client.ApiClient, ns: str) -> Counter[str]:
    """How many objects of each kind the lease's namespace holds (a duplicate would be a second one)."""
    core, apps, net = client.CoreV1Api(api), client.AppsV1Api(api), client.NetworkingV1Api(api)
    found: Counter[str] = Counter()
    for kind, items in (
        ("Deployment", apps.list_namespaced_deployment(ns).items),
        ("StatefulSet", apps.list_namespaced_stateful_set(ns).items),
        ("ReplicaSet", apps.list_namespaced_replica_set(ns).items),
        ("Service", core.list_namespaced_service(ns).items),
        ("Secret", core.list_namespaced_secret(ns).items),
        ("NetworkPolicy", net.list_namespaced_network_policy(ns).items),
        ("Ingress", net.list_namespaced_ingress(ns).items),
        ("Pod", [p for p in core.list_namespaced_pod(ns).items if not p.metadata.deletion_timestamp]),
    ):
        found[kind] += len(items)
    return found


def test_kill_9_mid_deploy_converges_without_duplicates(
    kubeconfig: Path, chain_proc: ChainProcess, real_node: dict[str, Any], api: client.ApiClient, tmp_path: Path
) -> None:
    text = gpu_sdl(real_node["busybox"], command=QUICK_EXIT)
    with daemon_running(kubeconfig, chain_proc, real_node, tmp_path) as d:

        async def go() -> None:
            tenant = await tenant_client(chain_proc, Key.generate("tenant"))
            assert tenant.key is not None
            lease = await lease_on(tenant, text, 1001, d.key.address)
            await tenant_ops.send_manifest(tenant, text.encode(), "t.yaml", 1001)
            d.kill9()  # the manifest is stored; its deploy is queued or under way
            d.start()
            await poll(lease_ready(d, jose_token(tenant.key), 1001))
            ns = namespace_for(BidId.parse(lease))

            async def settled() -> Counter[str]:
                found = _objects(api, ns)
                return found if found["Pod"] == 1 else Counter()

            found = await poll(settled, 60)
            assert found == Counter(
                {"Deployment": 1, "ReplicaSet": 1, "Pod": 1, "Service": 1, "Secret": 1, "NetworkPolicy": 1}
            ), found
            manifests = client.CustomObjectsApi(api).list_namespaced_custom_object(
                "gpu-provider.io", "v1", d.namespace, "manifests"
            )["items"]
            assert len(manifests) == 1
            # the transactions we sent (the chain counts every signed one, refused or not): register + one bid
            assert (await tenant.account(d.key.address))["sequence"] == 2
            await tenant_ops.close(tenant, 1001)
            await tenant.aclose()

        run(go())
    assert d.logs().count("lease service started leases=1") == 1  # the restart rebuilt it from chain + cluster


def test_an_api_server_restart_is_ridden_out(
    daemon: Daemon, devcluster: DevCluster | None, chain_proc: ChainProcess, real_node: dict[str, Any]
) -> None:
    assert devcluster is not None, "this test restarts the session's own API server"
    text = gpu_sdl(real_node["busybox"], command=QUICK_EXIT)

    async def go() -> None:
        tenant = await tenant_client(chain_proc, Key.generate("tenant"))
        assert tenant.key is not None
        token = jose_token(tenant.key)
        await lease_on(tenant, text, 1101, daemon.key.address)
        await tenant_ops.send_manifest(tenant, text.encode(), "t.yaml", 1101)
        await poll(lease_ready(daemon, token, 1101))
        devcluster.restart("kube-apiserver")
        assert daemon.proc is not None and daemon.proc.poll() is None  # still running
        await poll(lease_ready(daemon, token, 1101), 120)  # its lease is still reported
        # and it keeps working: a new lease is bid on, deployed and ready
        await lease_on(tenant, text, 1102, daemon.key.address)
        await tenant_ops.send_manifest(tenant, text.encode(), "t.yaml", 1102)
        await poll(lease_ready(daemon, token, 1102))
        for dseq in (1101, 1102):
            await tenant_ops.close(tenant, dseq)
        await tenant.aclose()

    run(go())


def test_no_secret_reaches_a_log_line(
    kubeconfig: Path, chain_proc: ChainProcess, real_node: dict[str, Any], tmp_path: Path
) -> None:
    password, env_value = "planted-registry-pw-4711", "planted-env-value-0815"
    registry = real_node["busybox"].split("/", 1)[0]
    text = (
        gpu_sdl(real_node["busybox"], command=QUICK_EXIT)
        .replace("      - API_TOKEN=s3cr3t-env-value", f"      - API_TOKEN={env_value}")
        .replace(
            "    expose:",
            f"    credentials:\n      host: {registry}\n      username: tenant\n      password: {password}\n    expose:",
            1,
        )
    )
    assert password in text and env_value in text
    with daemon_running(kubeconfig, chain_proc, real_node, tmp_path, log_level="debug") as d:

        async def go() -> list[str]:
            tenant = await tenant_client(chain_proc, Key.generate("tenant"))
            assert tenant.key is not None
            token = jose_token(tenant.key)
            await lease_on(tenant, text, 1201, d.key.address)
            # a refused manifest carrying the secrets (its version does not match) ...
            bad = sdl.parse(text.encode(), source="t.yaml").manifest_json()
            bad[0]["services"][0]["args"] = ["changed"]
            refused = httpx.put(
                f"{d.url}/deployment/1201/manifest",
                content=json.dumps(bad),
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert refused.status_code == 422 and password not in refused.text and env_value not in refused.text
            # ... and the real one, then every read endpoint
            await tenant_ops.send_manifest(tenant, text.encode(), "t.yaml", 1201)
            await poll(lease_ready(d, token, 1201))
            for what in ("status", "manifest", "kubeevents", "logs?tail=5"):
                resp = get(f"{d.url}/lease/1201/1/1/{what}", token)
                assert resp.status_code == 200 and password not in resp.text and env_value not in resp.text
            await tenant_ops.close(tenant, 1201)
            await tenant.aclose()
            tenant_seed = base64.b64encode(tenant.key.seed_bytes()).decode()
            return [token, token.rsplit(".", 1)[1], tenant_seed]

        planted = run(go())
        assert isinstance(planted, list)
    provider_seed = json.loads(d.keyring.read_text())["provider"]
    secrets = [password, env_value, provider_seed, *planted]
    secrets += [base64.b64encode(s.encode()).decode() for s in (password, env_value)]
    logs = d.logs()
    assert "manifest refused" in logs and "lease applied" in logs  # the log is there and at debug level
    for secret in secrets:
        assert secret not in logs, f"a planted secret reached the daemon's log: {secret[:6]}..."


def test_sigterm_drains_and_exits_cleanly(
    kubeconfig: Path, chain_proc: ChainProcess, real_node: dict[str, Any], tmp_path: Path
) -> None:
    text = gpu_sdl(real_node["busybox"], command=QUICK_EXIT)
    with daemon_running(kubeconfig, chain_proc, real_node, tmp_path) as d:

        async def go() -> None:
            tenant = await tenant_client(chain_proc, Key.generate("tenant"))
            assert tenant.key is not None
            await lease_on(tenant, text, 1401, d.key.address)
            await tenant_ops.send_manifest(tenant, text.encode(), "t.yaml", 1401)
            assert d.proc is not None
            d.proc.send_signal(signal.SIGTERM)  # the deploy is queued or under way
            assert d.proc.wait(60) == 0
            cursor = json.loads((d.dir / "state" / "chain-cursor").read_text())
            assert cursor["genesis"] == (await tenant.status()).genesis and cursor["cursor"]
            d.start()  # and what was in flight converges after the restart
            await poll(lease_ready(d, jose_token(tenant.key), 1401))
            await tenant_ops.close(tenant, 1401)
            await tenant.aclose()

        run(go())
    assert "Traceback" not in d.logs()
