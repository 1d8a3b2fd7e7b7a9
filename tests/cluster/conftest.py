"""The session's Kubernetes cluster: the real dev cluster, brought up once (or the one KUBECONFIG names).

Cluster tests never skip: if the toolchain or the cluster is missing, they fail with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from provider.devcluster import DevCluster, DevClusterError
from provider.devcluster.cluster import MARKER
from provider.devcluster.image import ImageBuilder
from tests.conftest import REPO

OPT_IN = "GPU_PROVIDER_TESTS_USE_KUBECONFIG"  # =1: run against the cluster KUBECONFIG names (it must be disposable)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that bring a real node up and down themselves run first, before the session's cluster (which
    has the host's one real node) exists."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("host_cycle") else 1)


@pytest.fixture(scope="session")
def devcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster | None]:
    """The session's dev cluster, with a real node; with KUBECONFIG (and the opt-in), that cluster: a dev
    cluster of ours when it is one (left running afterwards), else None."""
    named = os.environ.get("KUBECONFIG")
    if named:
        # these tests create and delete Nodes: never against a cluster this session did not create
        if os.environ.get(OPT_IN) != "1":
            pytest.fail(
                f"KUBECONFIG={named} names a cluster this test session did not create, and the cluster tests "
                f"create and delete Nodes in it. Unset KUBECONFIG to use a fresh dev cluster, or set {OPT_IN}=1 "
                "if that cluster is disposable.",
                pytrace=False,
            )
        ours = Path(named).parent
        # a dev cluster started by hand (gpu-provider devcluster up --state-dir DIR): its tools and logs too
        yield DevCluster(ours) if (ours / MARKER).is_file() else None
        return
    cluster = DevCluster(tmp_path_factory.mktemp("devcluster") / "state")
    try:
        cluster.up(timeout=300, real_node=True, real_node_gpus="h200:4")  # room for two leases at once
    except DevClusterError as e:
        pytest.fail(f"the dev cluster could not start: {e}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def kubeconfig(devcluster: DevCluster | None) -> Path:
    return devcluster.kubeconfig if devcluster is not None else Path(os.environ["KUBECONFIG"])


@pytest.fixture(scope="session")
def devcluster_state(devcluster: DevCluster | None) -> Path:
    if devcluster is None:
        pytest.fail("this test needs the session's own dev cluster (unset KUBECONFIG)", pytrace=False)
    return devcluster.dir


@pytest.fixture(scope="session")
def real_node(devcluster: DevCluster | None) -> dict[str, Any]:
    """What the session cluster's real node offers: name, ip, gpus, registry, ingress URL, busybox image."""
    state = devcluster.load() if devcluster is not None else None
    if state is None or not state.real_node.get("busybox"):
        pytest.fail("these tests need the session's dev cluster with its real node (unset KUBECONFIG)", pytrace=False)
    return state.real_node


@pytest.fixture(scope="session")
def api(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture(scope="session")
def builder() -> ImageBuilder:
    return ImageBuilder(REPO)


@pytest.fixture(scope="session")
def provider_image(builder: ImageBuilder) -> str:
    """The provider's image, built once per session from the real Dockerfile (buildah, no Docker)."""
    return builder.build("test")
