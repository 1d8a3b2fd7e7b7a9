"""The provider's image: the real Dockerfile lints clean, builds with buildah (no Docker engine, the base
assembled from Debian packages), is non-root with OCI labels and no NVML library inside, and runs on the
dev cluster's real node under the restricted securityContext the chart uses, pulled from the cluster's
registry like any image."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from provider.devcluster.akash import DevnetState
from provider.devcluster.image import ImageBuilder
from tests.akash.test_node_conditions import status_of
from tests.conftest import REPO

pytestmark = pytest.mark.cluster

EXAMPLE = "/opt/gpu-provider/lib/python3.11/site-packages/sdl/examples/llm-inference.yaml"


def test_the_dockerfile_lints_clean() -> None:
    done = subprocess.run(
        [str(REPO / ".venv" / "bin" / "hadolint"), "--failure-threshold", "info", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_non_root_labelled_and_carries_no_nvml(builder: ImageBuilder, provider_image: str) -> None:
    config = builder.inspect(provider_image)["OCIv1"]["config"]
    user = config["User"].split(":")
    assert user[0].isdigit() and int(user[0]) != 0 and int(user[1]) != 0
    assert config["Entrypoint"] == ["gpu-provider"] and config["Cmd"] == ["run"]
    labels = config["Labels"]
    for key in ("title", "version", "revision", "source", "licenses"):
        assert labels[f"org.opencontainers.image.{key}"], key
    container = builder.buildah("from", "--pull-never", provider_image)
    try:
        found = builder.buildah(
            "run",
            "--isolation",
            "chroot",
            container,
            "--",
            "sh",
            "-c",
            "find / -xdev -name 'libnvidia-ml*' 2>/dev/null; ls /opt/gpu-provider/lib/python3.11/site-packages",
        )
    finally:
        builder.buildah("rm", container)
    assert "libnvidia-ml" not in found  # the NVIDIA runtime injects it on GPU nodes
    assert "provider" in found.split() and "setuptools" not in found  # build tools stayed in the build stage


def test_a_build_keeps_only_its_own_layers(builder: ImageBuilder, provider_image: str) -> None:
    """vfs storage copies the whole root file system per layer: older builds' layers and the containers of
    interrupted builds are removed after each build, and the layers this one used are kept as its cache."""
    assert builder.used_layers, "the build output named no layers"
    for image in builder.dangling():
        assert any(u.startswith(image) or image.startswith(u) for u in builder.used_layers), image
    assert builder.buildah("containers", "--quiet") == ""


@pytest.fixture
def namespace_on_node(api: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(api)
    name = f"img-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


def restricted_pod(name: str, image: str, node: str, command: list[str], **spec: Any) -> dict[str, Any]:
    """A pod under the restricted securityContext the chart uses, run once on ``node``."""
    container: dict[str, Any] = {
        "name": "provider",
        "image": image,
        "command": command,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if "volumeMounts" in spec:
        container["volumeMounts"] = spec.pop("volumeMounts")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            **spec,
        },
    }


def run_to_completion(core: client.CoreV1Api, namespace: str, pod: dict[str, Any]) -> str:
    """Create ``pod``, wait (generously) for it to end, assert it succeeded; its log."""
    name = pod["metadata"]["name"]
    core.create_namespaced_pod(namespace, pod)
    deadline = time.monotonic() + 300
    phase = ""
    while time.monotonic() < deadline:
        phase = core.read_namespaced_pod(name, namespace).status.phase
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(1)
    logs: str = core.read_namespaced_pod_log(name, namespace) if phase else ""
    assert phase == "Succeeded", f"phase {phase!r}; logs:\n{logs}"
    return logs


def test_the_image_runs_on_the_real_node_restricted(
    builder: ImageBuilder, provider_image: str, real_node: dict[str, Any], api: client.ApiClient, namespace_on_node: str
) -> None:
    ref = builder.push(provider_image, str(real_node["registry"]))
    core = client.CoreV1Api(api)
    command = ["sh", "-c", f"gpu-provider --version && gpu-provider sdl check {EXAMPLE} && id -u"]
    pod = restricted_pod("provider-image", ref, real_node["name"], command)
    logs = run_to_completion(core, namespace_on_node, pod)
    assert logs.startswith("gpu-provider 0.1.0") and logs.strip().endswith("65532"), logs


REACH_AKASH = """
import asyncio, json
from pathlib import Path
from provider.app import build_chain
from provider.config import load

async def main():
    chain, _ = build_chain(load(Path("/etc/gp/provider.yaml")))
    status = await chain.status()
    orders = await chain.orders()
    print(json.dumps({"chain_id": status.chain_id, "genesis": status.genesis, "address": chain.address,
                      "orders": len(orders)}))

asyncio.run(main())
"""


def test_the_image_runs_chain_kind_akash_and_reaches_the_devnet(
    builder: ImageBuilder, provider_image: str, real_node: dict[str, Any], api: client.ApiClient,
    namespace_on_node: str, chain: DevnetState,
) -> None:  # fmt: skip
    """The Akash adapter's generated types are committed, so the image of a clean clone has them: on the real
    node it loads a `chain.kind: akash` config as the daemon does and asks the devnet (host network: the
    devnet listens on loopback)."""
    tracked = subprocess.run(
        ["git", "ls-files", "provider/chain/akash/pb"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "provider/chain/akash/pb/akash/market/v1beta5/bidmsg_pb2.py" in tracked  # in every clean clone
    ref = builder.push(provider_image, str(real_node["registry"]))
    core = client.CoreV1Api(api)
    config = {
        "chain": {
            "kind": "akash",
            "akash": {"rpc": chain.rpc, "rest": chain.rest, "chain_id": chain.chain_id, "key_file": "/etc/gp/key"},
        },
        "provider": {"host_uri": "https://provider.example:8443"},
    }
    core.create_namespaced_config_map(
        namespace_on_node,
        {
            "metadata": {"name": "gp"},
            "data": {"provider.yaml": yaml.safe_dump(config), "key": chain.mnemonics["provider"] + "\n"},
        },
    )
    pod = restricted_pod(
        "provider-akash",
        ref,
        real_node["name"],
        ["python3", "-c", REACH_AKASH],
        hostNetwork=True,
        volumes=[{"name": "gp", "configMap": {"name": "gp", "defaultMode": 0o444}}],
        volumeMounts=[{"name": "gp", "mountPath": "/etc/gp", "readOnly": True}],
    )
    logs = run_to_completion(core, namespace_on_node, pod)
    found = json.loads(logs.strip().splitlines()[-1])
    assert found["chain_id"] == chain.chain_id and found["address"] == chain.keys["provider"]
    assert found["genesis"] == status_of(chain).genesis
