"""The session's Kubernetes cluster: the real dev cluster, brought up once (or the one KUBECONFIG names).

Cluster tests never skip: if the toolchain or the cluster is missing, they fail with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from provider.devcluster import DevCluster, DevClusterError

OPT_IN = "GPU_PROVIDER_TESTS_USE_KUBECONFIG"  # =1: run against the cluster KUBECONFIG names (it must be disposable)


@pytest.fixture(scope="session")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
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
        yield Path(named)
        return
    cluster = DevCluster(tmp_path_factory.mktemp("devcluster") / "state")
    try:
        path = cluster.up(timeout=300)
    except DevClusterError as e:
        pytest.fail(f"the dev cluster could not start: {e}", pytrace=False)
    try:
        yield path
    finally:
        cluster.down()


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
