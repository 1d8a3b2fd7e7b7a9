"""What a lease's workloads really do on the dev cluster, through a real daemon and the mock chain:
service-to-service traffic inside a lease while the NetworkPolicy keeps another lease out (real node),
persistent storage as a StatefulSet with a bound PVC (real node), an updated manifest rolling forward
(real node), and an unschedulable request showing the scheduler's message (KWOK)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from provider import tenant as tenant_ops
from provider.chain.keys import Key
from provider.chain.types import BidId
from provider.deploy.naming import namespace_for
from provider.devcluster.pool import POOL_LABEL
from tests.cluster.lifecycle_kit import Daemon, daemon_running, get, lease_on, lease_ready, poll, tenant_client
from tests.jose import jose_token
from tests.market.conftest import ChainProcess, run

pytestmark = pytest.mark.cluster

# PID 1 in a container ignores SIGTERM unless it traps it: this keeps teardown fast (GPUs come back soon)
FOREVER = 'trap "exit 0" TERM; while :; do sleep 1; done'


def _sdl(services: dict[str, dict[str, Any]], model: str = "h200", storage: dict[str, Any] | None = None) -> str:
    """An SDL of busybox services, one GPU of ``model`` each. ``services``: name -> {image, script, expose,
    params}."""
    doc: dict[str, Any] = {"version": "2.0", "services": {}, "profiles": {"compute": {}, "placement": {}}}
    pricing, deployment = {}, {}
    for name, svc in services.items():
        doc["services"][name] = {
            "image": svc["image"],
            "command": ["sh", "-c"],
            "args": [svc["script"]],
            "expose": svc.get("expose", [{"port": 8080, "to": [{"global": True}]}]),
            **({"params": svc["params"]} if "params" in svc else {}),
        }
        doc["profiles"]["compute"][name] = {
            "resources": {
                "cpu": {"units": 0.1},
                "memory": {"size": "64Mi"},
                "storage": storage or {"size": "64Mi"},
                "gpu": {"units": 1, "attributes": {"vendor": {"nvidia": [{"model": model}]}}},
            }
        }
        pricing[name] = {"denom": "uact", "amount": 1_000_000}
        deployment[name] = {"dc": {"profile": name, "count": 1}}
    doc["profiles"]["placement"]["dc"] = {"pricing": pricing}
    doc["deployment"] = deployment
    return json.dumps(doc)  # JSON is YAML


@pytest.fixture
def daemon(kubeconfig: Path, chain_proc: ChainProcess, real_node: dict[str, Any], tmp_path: Path) -> Iterator[Daemon]:
    with daemon_running(
        kubeconfig,
        chain_proc,
        real_node,
        tmp_path,
        deploy_extra={"storage_classes": {"beta2": "gp-test-local"}},
        inventory_extra={"storage_capacity": {"beta2": "1Gi"}},
    ) as d:
        yield d


def _logs(core: client.CoreV1Api, ns: str, service: str) -> str:
    pods = core.list_namespaced_pod(ns, label_selector=f"gpu-provider.io/service={service}").items
    running = [p for p in pods if p.status.phase == "Running"]
    return core.read_namespaced_pod_log(running[0].metadata.name, ns) if running else ""


def test_services_talk_inside_a_lease_and_another_lease_is_kept_out(
    daemon: Daemon, chain_proc: ChainProcess, real_node: dict[str, Any], api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    busybox = real_node["busybox"]
    ask = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {host} 8080 2>&1 | tail -n 1"
    app = _sdl(
        {
            "web": {
                "image": busybox,
                "script": f"mkdir -p /tmp/www && echo web-says-hi > /tmp/www/index.html && "
                f"httpd -p 8080 -h /tmp/www && {FOREVER}",
                "expose": [{"port": 8080, "to": [{"service": "client"}]}],
            },
            "client": {
                "image": busybox,
                "script": f'trap "exit 0" TERM; while :; do echo "got:$({ask.format(host="web")})"; sleep 1; done',
            },
        }
    )

    async def go() -> None:
        tenant = await tenant_client(chain_proc, Key.generate("tenant"))
        intruder = await tenant_client(chain_proc, Key.generate("intruder"))
        lease = await lease_on(tenant, app, 601, daemon.key.address)
        await tenant_ops.send_manifest(tenant, app.encode(), "app.yaml", 601)
        ns = namespace_for(BidId.parse(lease))

        status = await poll(lease_ready(daemon, jose_token(tenant.key), 601))
        assert set(status["services"]) == {"web", "client"}
        for pod in core.list_namespaced_pod(ns).items:
            assert pod.spec.node_name == real_node["name"]

        async def answered() -> bool:
            return "got:web-says-hi" in _logs(core, ns, "client")

        await poll(answered, 90)  # service-to-service through the ClusterIP Service and cluster DNS

        # another tenant's lease on the same node tries the web service by its cluster DNS name and IP
        web_ip = core.read_namespaced_service("web", ns).spec.cluster_ip
        probe = (
            f'trap "exit 0" TERM; while :; do echo "dns:$({ask.format(host=f"web.{ns}.svc.cluster.local")})"; '
            f'echo "ip:$({ask.format(host=web_ip)})"; sleep 1; done'
        )
        other = _sdl({"probe": {"image": busybox, "script": probe}})
        other_lease = await lease_on(intruder, other, 602, daemon.key.address)
        await tenant_ops.send_manifest(intruder, other.encode(), "other.yaml", 602)
        other_ns = namespace_for(BidId.parse(other_lease))

        async def attempts() -> list[str]:
            lines = [x for x in _logs(core, other_ns, "probe").splitlines() if x.startswith(("dns:", "ip:"))]
            return lines if len(lines) >= 12 else []

        lines = await poll(attempts, 120)
        assert not any("web-says-hi" in x for x in lines[-6:]), lines  # the last attempts: all kept out
        # while the lease's own client still gets through
        assert "got:web-says-hi" in _logs(core, ns, "client").splitlines()[-1]
        for t, dseq in ((tenant, 601), (intruder, 602)):
            await tenant_ops.close(t, dseq)
            await t.aclose()

    run(go())


@pytest.fixture
def local_volume(api: client.ApiClient, real_node: dict[str, Any], tmp_path: Path) -> Iterator[Path]:
    """A StorageClass without a provisioner and one local PersistentVolume on the real node."""
    storage = client.StorageV1Api(api)
    core = client.CoreV1Api(api)
    path = Path("/var/tmp") / f"gp-pv-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o777)
    storage.create_storage_class(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": "gp-test-local"},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
        }
    )
    pv_name = path.name
    core.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "gp-test-local",
                "local": {"path": str(path)},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "In",
                                        "values": [real_node["name"]],
                                    }
                                ]
                            }
                        ]
                    }
                },
            },
        }
    )
    try:
        yield path
    finally:
        core.delete_persistent_volume(pv_name)
        storage.delete_storage_class("gp-test-local")
        for f in path.iterdir():
            f.unlink()
        path.rmdir()


def test_persistent_storage_is_a_statefulset_with_a_bound_claim(
    daemon: Daemon,
    chain_proc: ChainProcess,
    real_node: dict[str, Any],
    api: client.ApiClient,
    local_volume: Path,
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    text = _sdl(
        {
            "db": {
                "image": real_node["busybox"],
                "script": f"echo persisted-$HOSTNAME > /data/marker && cat /data/marker && {FOREVER}",
                "params": {"storage": {"data": {"mount": "/data"}}},
            }
        },
        storage=[
            {"size": "64Mi"},
            {"name": "data", "size": "128Mi", "attributes": {"persistent": True, "class": "beta2"}},
        ],
    )

    async def go() -> None:
        tenant = await tenant_client(chain_proc, Key.generate("tenant"))
        lease = await lease_on(tenant, text, 701, daemon.key.address)
        await tenant_ops.send_manifest(tenant, text.encode(), "db.yaml", 701)
        ns = namespace_for(BidId.parse(lease))

        await poll(lease_ready(daemon, jose_token(tenant.key), 701))
        assert [s.metadata.name for s in apps.list_namespaced_stateful_set(ns).items] == ["db"]
        assert apps.list_namespaced_deployment(ns).items == []
        (claim,) = core.list_namespaced_persistent_volume_claim(ns).items
        assert claim.status.phase == "Bound" and claim.spec.storage_class_name == "gp-test-local"
        assert claim.spec.volume_name == local_volume.name
        # the tenant's process wrote through the claim onto the node's disk
        assert (local_volume / "marker").read_text().startswith("persisted-db-0")
        await tenant_ops.close(tenant, 701)
        await tenant.aclose()

    run(go())


def test_an_updated_manifest_rolls_forward_in_place(
    daemon: Daemon, chain_proc: ChainProcess, real_node: dict[str, Any], api: client.ApiClient
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)

    def version(tag: str) -> str:
        return _sdl({"app": {"image": real_node["busybox"], "script": f"echo running-{tag}; {FOREVER}"}})

    async def go() -> None:
        tenant = await tenant_client(chain_proc, Key.generate("tenant"))
        assert tenant.key is not None
        lease = await lease_on(tenant, version("v1"), 801, daemon.key.address)
        await tenant_ops.send_manifest(tenant, version("v1").encode(), "v1.yaml", 801)
        ns = namespace_for(BidId.parse(lease))
        token = jose_token(tenant.key)

        async def running(tag: str) -> Any:
            body = get(f"{daemon.url}/lease/801/1/1/status", token).json()
            return body if body.get("state") == "ready" and f"running-{tag}" in _logs(core, ns, "app") else None

        first = await poll(lambda: running("v1"))
        uid = apps.read_namespaced_deployment("app", ns).metadata.uid
        updated = await tenant_ops.update(tenant, version("v2").encode(), "v2.yaml", 801)
        second = await poll(lambda: running("v2"))
        assert second["version"] == updated["version"] != first["version"]
        dep = apps.read_namespaced_deployment("app", ns)
        assert dep.metadata.uid == uid  # the same object, updated in place
        assert dep.metadata.generation == 2

        async def settled() -> bool:
            pods = [p for p in core.list_namespaced_pod(ns).items if not p.metadata.deletion_timestamp]
            return len(pods) == 1

        await poll(settled, 90)
        await tenant_ops.close(tenant, 801)
        await tenant.aclose()

    run(go())


def test_an_unschedulable_request_shows_the_schedulers_message(
    daemon: Daemon, chain_proc: ChainProcess, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    text = _sdl({"app": {"image": "registry.invalid/kwok-never-pulls:1", "script": "true"}}, model="rtx4090")
    cordoned: list[str] = []

    async def go() -> None:
        tenant = await tenant_client(chain_proc, Key.generate("tenant"))
        assert tenant.key is not None
        await lease_on(tenant, text, 901, daemon.key.address)
        # after the lease, every node with the model is cordoned: the pods have nowhere to go
        for node in core.list_node(label_selector=f"{POOL_LABEL}=rtx4090").items:
            core.patch_node(node.metadata.name, {"spec": {"unschedulable": True}})
            cordoned.append(node.metadata.name)
        assert cordoned
        await tenant_ops.send_manifest(tenant, text.encode(), "t.yaml", 901)

        async def told() -> Any:
            body = get(f"{daemon.url}/lease/901/1/1/status", jose_token(tenant.key)).json()  # type: ignore[arg-type]
            return [e for e in body.get("errors", []) if e["reason"] == "unschedulable"]

        (error,) = await poll(told, 120)
        assert error["service"] == "app"
        assert "nodes are available" in error["message"] and "unschedulable" in error["message"], error
        await tenant_ops.close(tenant, 901)
        await tenant.aclose()

    try:
        run(go())
    finally:
        for name in cordoned:
            core.patch_node(name, {"spec": {"unschedulable": False}})


def test_a_pod_the_cluster_will_not_create_shows_why(
    kubeconfig: Path, chain_proc: ChainProcess, real_node: dict[str, Any], tmp_path: Path
) -> None:
    """A provider-side misconfiguration (a RuntimeClass the cluster lacks): the workload gets no pod, and
    the controller's refusal reaches the tenant's status instead of an endless, silent "deploying"."""
    text = _sdl({"app": {"image": "registry.invalid/kwok-never-pulls:1", "script": "true"}}, model="rtx4090")
    with daemon_running(kubeconfig, chain_proc, real_node, tmp_path, deploy_extra={"runtime_class": "gone"}) as d:

        async def go() -> None:
            tenant = await tenant_client(chain_proc, Key.generate("tenant"))
            assert tenant.key is not None
            await lease_on(tenant, text, 951, d.key.address)
            await tenant_ops.send_manifest(tenant, text.encode(), "t.yaml", 951)

            async def told() -> Any:
                body = get(f"{d.url}/lease/951/1/1/status", jose_token(tenant.key)).json()  # type: ignore[arg-type]
                return [(body["state"], e) for e in body.get("errors", []) if e["reason"] == "FailedCreate"]

            ((state, error),) = await poll(told, 120)
            assert state == "deploying" and error["service"] == "app"
            assert 'RuntimeClass "gone" not found' in error["message"], error
            await tenant_ops.close(tenant, 951)
            await tenant.aclose()

        run(go())
