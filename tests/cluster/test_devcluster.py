"""The dev cluster is a real Kubernetes: scheduling on GPU nodes, API validation, RBAC, helm."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from provider.devcluster import DevCluster, build_binaries, parse_pool
from provider.devcluster.procs import alive as _alive
from tests.cluster.waiting import wait_for

pytestmark = pytest.mark.cluster
H100 = "NVIDIA-H100-80GB-HBM3"


def gpu_deployment(name: str, gpus: int, product: str | None = None, limits: int | None = None) -> client.V1Deployment:
    affinity = None
    if product:
        term = client.V1NodeSelectorTerm(
            match_expressions=[
                client.V1NodeSelectorRequirement(key="nvidia.com/gpu.product", operator="In", values=[product])
            ]
        )
        affinity = client.V1Affinity(
            node_affinity=client.V1NodeAffinity(
                required_during_scheduling_ignored_during_execution=client.V1NodeSelector(node_selector_terms=[term])
            )
        )
    container = client.V1Container(
        name="main",
        image="nvcr.io/nvidia/cuda:12.4.1-base-ubuntu22.04",
        resources=client.V1ResourceRequirements(
            requests={"nvidia.com/gpu": str(gpus), "cpu": "1", "memory": "1Gi"},
            limits={"nvidia.com/gpu": str(limits if limits is not None else gpus), "cpu": "1", "memory": "1Gi"},
        ),
    )
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[container], affinity=affinity),
            ),
        ),
    )


def test_nodes_match_the_default_pool(api: client.ApiClient) -> None:
    nodes = client.CoreV1Api(api).list_node().items
    by_name = {n.metadata.name: n for n in nodes}
    for plan in parse_pool("h100:4x8,a100:2x8,rtx4090:2x4,cpu:1"):
        node = by_name[plan.name]
        assert node.status.allocatable.get("nvidia.com/gpu", "0") == str(plan.gpus)
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True"
        if plan.model == "h100":
            assert node.metadata.labels["nvidia.com/gpu.product"] == H100
            assert node.metadata.labels["nvidia.com/gpu.memory"] == "81559"
            assert node.metadata.labels["nvidia.com/gpu.count"] == "8"


def test_gpu_deployment_lands_on_an_h100_node(api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, gpu_deployment("h100-job", 1, H100))

    def available() -> bool:
        d = apps.read_namespaced_deployment("h100-job", namespace)
        return any(c.type == "Available" and c.status == "True" for c in d.status.conditions or [])

    wait_for(available, 90, "the deployment to become Available")
    (pod,) = core.list_namespaced_pod(namespace, label_selector="app=h100-job").items
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.product"] == H100
    assert pod.status.phase == "Running"


def test_nine_gpus_per_pod_stays_pending_unschedulable(api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, gpu_deployment("too-big", 9))

    def unschedulable() -> client.V1Pod | None:
        for pod in core.list_namespaced_pod(namespace, label_selector="app=too-big").items:
            for c in pod.status.conditions or []:
                if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
                    return pod
        return None

    pod = wait_for(unschedulable, 90, "the pod to be marked Unschedulable")
    assert pod.status.phase == "Pending"
    assert "nvidia.com/gpu" in next(c.message for c in pod.status.conditions if c.type == "PodScheduled")


def test_gpu_requests_must_equal_limits(api: client.ApiClient, namespace: str) -> None:
    pod = gpu_deployment("mismatch", 1, limits=2).spec.template
    body = client.V1Pod(metadata=client.V1ObjectMeta(name="mismatch"), spec=pod.spec)
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(api).create_namespaced_pod(namespace, body)
    assert info.value.status == 422
    assert "nvidia.com/gpu" in info.value.body and "must be equal to" in info.value.body


def test_rbac_is_enforced_across_namespaces(api: client.ApiClient, namespace: str, kubeconfig: Path) -> None:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    other = f"{namespace}-other"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    try:
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
        )
        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="secret-reader"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["get", "list"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="secret-reader"),
                role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="secret-reader"),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
            ),
        )
        token = core.create_namespaced_service_account_token(
            "reader", namespace, client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
        ).status.token
        cfg = client.Configuration()
        cfg.host = api.configuration.host
        cfg.ssl_ca_cert = api.configuration.ssl_ca_cert
        cfg.api_key = {"authorization": f"Bearer {token}"}
        as_reader = client.CoreV1Api(client.ApiClient(cfg))
        assert as_reader.list_namespaced_secret(namespace).items is not None  # allowed in its own namespace
        with pytest.raises(ApiException) as info:
            as_reader.list_namespaced_secret(other)
        assert info.value.status == 403
    finally:
        core.delete_namespace(other)


def test_helm_lint_and_install(kubeconfig: Path, namespace: str, api: client.ApiClient) -> None:
    helm = build_binaries() / "helm"
    chart = Path(__file__).parent / "testchart"
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": "/tmp/helm-cache",
        "HELM_CONFIG_HOME": "/tmp/helm-config",
    }
    lint = subprocess.run(
        [str(helm), "lint", str(chart)], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    install = subprocess.run(
        [str(helm), "install", "greet", str(chart), "-n", namespace, "--wait", "--timeout", "60s"],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    cm = client.CoreV1Api(api).read_namespaced_config_map("greet-greeting", namespace)
    assert cm.data == {"message": "hello from helm"}


def test_down_leaves_no_process_and_no_state(tmp_path: Path) -> None:
    cluster = DevCluster(tmp_path / "second")
    cluster.up(pool="cpu:1", timeout=180)
    try:
        state = cluster.load()
        assert state is not None
        pids = list(state.pids.values())
        assert len(pids) == 5 and all(_alive(p) for p in pids)
        # private keys and kubeconfigs are the owner's only, in directories only the owner can enter
        for d in (cluster.dir, cluster.pki):
            assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        secrets = [*cluster.pki.glob("*.key"), *cluster.dir.glob("*.kubeconfig")]
        assert {p.name for p in secrets} >= {"ca.key", "sa.key", "apiserver.key", "admin.key", "admin.kubeconfig"}
        for secret in secrets:
            assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
        assert cluster.up(pool="cpu:1", timeout=60) == cluster.kubeconfig  # up twice is safe
        assert cluster.load() == state
    finally:
        cluster.down()  # also when an assertion above failed: no orphaned control plane
    assert not any(_alive(p) for p in pids)
    assert not (tmp_path / "second").exists()
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "second")], check=False, capture_output=True, text=True)
    assert leftovers.stdout == ""
