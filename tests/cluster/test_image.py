"""The provider's image: the real Dockerfile lints clean, builds with buildah (no Docker engine, the base
assembled from Debian packages), is non-root with OCI labels and no NVML library inside, and runs on the
dev cluster's real node under the restricted securityContext the chart uses, pulled from the cluster's
registry like any image."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from provider.devcluster.image import ImageBuilder
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


def test_the_image_runs_on_the_real_node_restricted(
    builder: ImageBuilder, provider_image: str, real_node: dict[str, Any], api: client.ApiClient, namespace_on_node: str
) -> None:
    ref = builder.push(provider_image, str(real_node["registry"]))
    core = client.CoreV1Api(api)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "provider-image"},
        "spec": {
            "nodeName": real_node["name"],
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "provider",
                    "image": ref,
                    "command": ["sh", "-c", f"gpu-provider --version && gpu-provider sdl check {EXAMPLE} && id -u"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace_on_node, pod)
    deadline = time.monotonic() + 300
    phase = ""
    while time.monotonic() < deadline:
        phase = core.read_namespaced_pod("provider-image", namespace_on_node).status.phase
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(1)
    logs = core.read_namespaced_pod_log("provider-image", namespace_on_node) if phase else ""
    assert phase == "Succeeded", f"phase {phase!r}; logs:\n{logs}"
    assert logs.startswith("gpu-provider 0.1.0") and logs.strip().endswith("65532"), logs
