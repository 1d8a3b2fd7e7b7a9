"""The watch cache against the dev cluster: it follows our objects (and only ours) through list + watch,
reports changed namespaces, gives the same observation as asking the API server, and recovers when the
API server restarts under it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provider.chain.types import LeaseId, OrderId
from provider.deploy import naming
from provider.deploy.builder import DeploySettings, LeaseRef, base_labels
from provider.deploy.deployer import Deployer, path_of
from provider.deploy.watch import WatchCache
from provider.devcluster import DevCluster
from provider.errors import KubeError
from provider.kube import Kube
from tests.cluster.waiting import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def lease(kubeconfig: Path) -> Iterator[tuple[Kube, LeaseId, str]]:
    kube = Kube(str(kubeconfig))
    lease = LeaseId(OrderId("gp1" + uuid.uuid4().hex[:40].ljust(40, "0"), 7, 1, 1), "gp1" + "c" * 40)
    ns = naming.namespace_for(lease)
    yield kube, lease, ns
    if _exists(kube, ns):
        kube.request("DELETE", f"/api/v1/namespaces/{ns}", what="cleanup")


def _exists(kube: Kube, ns: str) -> bool:
    try:
        kube.request("GET", f"/api/v1/namespaces/{ns}")
    except KubeError:
        return False
    return True


def _objects(lease: LeaseId, ns: str) -> list[dict[str, Any]]:
    labels = {**base_labels(LeaseRef(lease, "gpu-devnet-1", "g")), naming.SERVICE_LABEL: "web"}
    pod_labels = {naming.MANAGED_BY[0]: naming.MANAGED_BY[1], naming.SERVICE_LABEL: "web"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {naming.SERVICE_LABEL: "web"}},
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {
                        "nodeSelector": {"type": "kwok"},  # KWOK runs it (no image is pulled)
                        "containers": [{"name": "web", "image": "registry.invalid/web:1"}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web-np", "namespace": ns, "labels": labels},
            "spec": {
                "type": "NodePort",
                "selector": {naming.SERVICE_LABEL: "web"},
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}],
            },
        },
    ]


def test_the_cache_follows_our_objects_and_matches_the_api(lease: tuple[Kube, LeaseId, str]) -> None:
    kube, lease_id, ns = lease
    changed: list[str] = []
    lock = threading.Lock()

    def note(namespace: str) -> None:
        with lock:
            changed.append(namespace)

    cache = WatchCache(kube, on_change=note, watch_seconds=5)  # short watches: resumes are exercised too
    cache.start()
    try:
        assert cache.wait_synced(30)
        for obj in _objects(lease_id, ns):
            kube.apply(path_of(obj), obj, naming.FIELD_MANAGER)
        # someone else's pod in the same namespace (not ours by label) is never cached
        stranger = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "stranger", "namespace": ns},
            "spec": {"nodeSelector": {"type": "kwok"}, "containers": [{"name": "c", "image": "x.invalid/y:1"}]},
        }
        kube.request("POST", f"/api/v1/namespaces/{ns}/pods", stranger, what="creating a stranger pod")

        def available() -> Any:
            (dep,) = cache.get("deployments", ns) or [None]
            return dep if dep and dep["status"].get("availableReplicas") == 2 else None

        wait_for(available, 60, "two available replicas in the cache")
        assert ns in changed
        assert len(cache.get("pods", ns)) == 2
        assert {p["metadata"]["name"] for p in cache.get("pods", ns)}.isdisjoint({"stranger"})
        with_cache = Deployer(kube, DeploySettings(cluster_public_hostname="gpu.example"), "unused")
        with_cache.cache = cache
        without = Deployer(kube, DeploySettings(cluster_public_hostname="gpu.example"), "unused")
        seen, asked = with_cache.observe(lease_id, None), without.observe(lease_id, None)
        assert seen == asked and seen.services["web"].available == 2
        assert seen.services["web"].ports[0]["port"] == 8080

        # deletion goes through the cache as well
        kube.request("DELETE", f"/apis/apps/v1/namespaces/{ns}/deployments/web", what="deleting")
        wait_for(lambda: cache.get("deployments", ns) == [], 60, "the deletion")
        assert cache.events > 0
    finally:
        cache.stop()


def test_the_cache_recovers_from_an_api_server_restart(
    lease: tuple[Kube, LeaseId, str], devcluster: DevCluster | None
) -> None:
    assert devcluster is not None, "this test restarts the session's own API server"
    kube, lease_id, ns = lease
    cache = WatchCache(kube, watch_seconds=30)
    cache.start()
    try:
        assert cache.wait_synced(30)
        devcluster.restart("kube-apiserver")
        for obj in _objects(lease_id, ns):  # made after the restart: only a resumed or new watch sees them
            kube.apply(path_of(obj), obj, naming.FIELD_MANAGER)
        wait_for(lambda: cache.synced and len(cache.get("pods", ns)) == 2, 120, "the cache to see the new pods")
        assert cache.get("namespaces", ns)
    finally:
        cache.stop()
