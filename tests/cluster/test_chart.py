"""The Helm chart against the pinned helm and the dev cluster's real API server: it lints strictly, its
schema names a mistyped value, every object it renders is accepted by a server-side dry-run, its CRD is
the one the daemon checks for, its provider.yaml is a valid daemon config, and the RBAC it installs grants
its ServiceAccounts exactly the requests the code makes (read back from the API server with each
ServiceAccount's own token) and nothing else."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from provider.config import load
from provider.deploy.deployer import crd
from provider.devcluster import DevCluster
from provider.errors import KubeError
from provider.kube import Kube
from tests.conftest import REPO

pytestmark = pytest.mark.cluster

CHART = REPO / "charts" / "gpu-provider"
KUBE_VERSION = "1.36.3"  # the dev cluster's (docs/devcluster.md)
REQUIRED = ["--set", "chain.keySecret.name=provider-key"]

Rule = tuple[str, str, str, str]  # (apiGroup, resource, verb, resourceName or "")

# Exactly the requests the daemon makes (see charts/gpu-provider/templates/rbac.yaml for why each).
PROVIDER_CLUSTER: set[Rule] = {
    *{("", "namespaces", v, "") for v in ("get", "list", "watch", "create", "patch", "delete")},
    ("", "nodes", "list", ""),
    ("", "pods", "list", ""),
    ("", "pods", "watch", ""),
    ("", "pods/log", "get", ""),
    ("", "events", "list", ""),
    ("", "events", "watch", ""),
    *{("", "services", v, "") for v in ("list", "watch", "create", "patch")},
    ("", "secrets", "create", ""),
    ("", "secrets", "patch", ""),
    *{("apps", r, v, "") for r in ("deployments", "statefulsets") for v in ("list", "watch", "create", "patch")},
    ("networking.k8s.io", "networkpolicies", "create", ""),
    ("networking.k8s.io", "networkpolicies", "patch", ""),
    *{("networking.k8s.io", "ingresses", v, "") for v in ("list", "create", "patch")},
    ("apiextensions.k8s.io", "customresourcedefinitions", "get", "manifests.gpu-provider.io"),
}
PROVIDER_RELEASE_NS: set[Rule] = {
    *{("gpu-provider.io", "manifests", v, "") for v in ("get", "list", "create", "patch", "delete")},
    ("", "secrets", "get", ""),
    ("", "secrets", "delete", ""),
    *{("coordination.k8s.io", "leases", v, "") for v in ("get", "create", "update")},
}
AGENT_CLUSTER: set[Rule] = {("", "nodes", "get", ""), ("", "nodes", "patch", "")}


def path_of(obj: dict[str, Any]) -> str:
    """Any object's URL (the kinds the chart renders): the plural is the lowercased kind plus "s" (a
    final "y" becomes "ies": ValidatingAdmissionPolicy -> validatingadmissionpolicies)."""
    api, kind, meta = obj["apiVersion"], obj["kind"], obj["metadata"]
    prefix = "/api/v1" if api == "v1" else f"/apis/{api}"
    where = f"/namespaces/{meta['namespace']}" if meta.get("namespace") else ""
    lower = kind.lower()
    plural = lower[:-1] + "ies" if lower.endswith("y") else lower + "s"
    return f"{prefix}{where}/{plural}/{meta['name']}"


def helm(cluster: DevCluster, *args: str) -> subprocess.CompletedProcess[str]:
    state = cluster.load()
    assert state is not None
    return subprocess.run(
        [str(Path(state.bin_dir) / "helm"), *args], capture_output=True, text=True, check=False, timeout=120
    )


def render(cluster: DevCluster, release: str, namespace: str, *extra: str) -> list[dict[str, Any]]:
    done = helm(
        cluster, "template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION, *REQUIRED, *extra
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture
def chart_cluster(devcluster: DevCluster | None) -> DevCluster:
    if devcluster is None:
        pytest.fail("the chart tests need the session's own dev cluster (its pinned helm)", pytrace=False)
    return devcluster


def test_the_chart_lints_strictly_and_its_schema_names_a_typo(chart_cluster: DevCluster) -> None:
    done = helm(chart_cluster, "lint", "--strict", str(CHART), *REQUIRED)
    assert done.returncode == 0, done.stdout + done.stderr
    typo = helm(chart_cluster, "lint", "--strict", str(CHART), *REQUIRED, "--set", "ha.leaseSecond=3")
    assert typo.returncode != 0 and "leaseSecond" in typo.stdout + typo.stderr
    missing = helm(chart_cluster, "template", "x", str(CHART), "--kube-version", KUBE_VERSION)
    assert missing.returncode != 0 and "chain.keySecret.name is required" in missing.stderr


def test_every_rendered_object_passes_a_server_side_dry_run(
    chart_cluster: DevCluster, kubeconfig: Path, namespace: str
) -> None:
    kube = Kube(str(kubeconfig))
    objs = render(
        chart_cluster,
        "dry",
        namespace,
        "--set",
        "config.deploy.ingress_domain=ingress.example.com",
        "--set",
        "config.bidding.hold_blocks=60",
    )
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "DaemonSet", "Service", "ConfigMap", "Secret", "CustomResourceDefinition"} <= kinds
    assert {
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "PodDisruptionBudget",
    } <= kinds
    for obj in objs:
        kube.apply(path_of(obj), obj, "gpu-provider-chart-test", dry_run=True)


def test_the_chart_crd_is_the_daemons_and_its_config_is_valid(
    chart_cluster: DevCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = render(chart_cluster, "cfg", "gp-system", "--set", "config.bidding.hold_blocks=60")
    (chart_crd,) = [o for o in objs if o["kind"] == "CustomResourceDefinition"]
    assert chart_crd["spec"] == crd()["spec"] and chart_crd["metadata"]["name"] == crd()["metadata"]["name"]
    assert chart_crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # uninstall keeps manifests
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap"]
    (path := tmp_path / "provider.yaml").write_text(cm["data"]["provider.yaml"])
    monkeypatch.delenv("KUBECONFIG", raising=False)
    config = load(path)
    assert config.ha.enabled and config.deploy.namespace == "gp-system" and config.bidding.hold_blocks == 60
    assert config.api.tls_cert is not None and not config.api.insecure_http
    (deployment,) = [o for o in objs if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert (
        pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"] and not sc["allowPrivilegeEscalation"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment["spec"]["replicas"] == 2
    (ds,) = [o for o in objs if o["kind"] == "DaemonSet"]
    agent = ds["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in agent["containers"][0]["env"]}
    assert agent["runtimeClassName"] == "nvidia" and env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and "NODE_NAME" in env


def test_on_akash_the_chart_mounts_the_key_where_the_config_reads_it(
    chart_cluster: DevCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    akash = ("--set", "chain.kind=akash", "--set", "chain.keySecret.key=mnemonic",
             "--set", "chain.akash.rpc=http://node:26657", "--set", "chain.akash.rest=http://node:1317",
             "--set-string", "chain.akash.gasPrice=0.03")  # fmt: skip
    objs = render(chart_cluster, "ak", "gp-akash", *akash, "--set", "provider.hostURI=https://p.example.com:8443")
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap"]
    (path := tmp_path / "provider.yaml").write_text(cm["data"]["provider.yaml"])
    monkeypatch.delenv("KUBECONFIG", raising=False)
    config = load(path)  # the daemon's own validation, https host URI included
    assert config.chain.kind == "akash" and config.chain.akash.rpc == "http://node:26657"
    assert config.chain.akash.chain_id == "akashnet-2" and str(config.chain.akash.gas_price) == "0.03"
    (deployment,) = [o for o in objs if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "key"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "key"]
    (item,) = volume["secret"]["items"]
    assert item["key"] == "mnemonic" and Path(mount["mountPath"]) / item["path"] == config.chain.akash.key_file
    # the schema names a wrong chain kind and a malformed gas price
    for bad, word in (("chain.kind=cosmos", "kind"), ("chain.akash.gasPrice=cheap", "gasPrice")):
        done = helm(chart_cluster, "lint", "--strict", str(CHART), *REQUIRED, "--set-string", bad)
        assert done.returncode != 0 and word in done.stdout + done.stderr, bad


@pytest.fixture
def installed_rbac(chart_cluster: DevCluster, kubeconfig: Path, api: client.ApiClient) -> Iterator[tuple[str, str]]:
    """The chart's ServiceAccounts and RBAC, applied for real under a unique release; removed afterwards."""
    kube = Kube(str(kubeconfig))
    release = f"rbac-{uuid.uuid4().hex[:6]}"
    namespace = f"{release}-ns"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    rbac_kinds = {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    objs = [o for o in render(chart_cluster, release, namespace) if o["kind"] in rbac_kinds]
    # a ServiceAccount with no RBAC of its own: what every authenticated account may do anyway
    objs.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody", "namespace": namespace}})
    for obj in objs:
        kube.apply(path_of(obj), obj, "gpu-provider-chart-test")
    try:
        yield release, namespace
    finally:
        for obj in objs:
            if not obj["metadata"].get("namespace"):  # cluster-scoped: the namespace does not take it along
                kube.request("DELETE", path_of(obj))
        core.delete_namespace(namespace)


def as_service_account(api: client.ApiClient, namespace: str, name: str, pod: str = "") -> client.ApiClient:
    """A client that authenticates with this ServiceAccount's own token (bound to ``pod`` when given,
    as the kubelet binds a pod's token: the API server then knows the pod's node)."""
    spec: dict[str, Any] = {"expirationSeconds": 600}
    if pod:
        spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": pod}
    token = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, {"spec": spec}).status.token
    conf = client.Configuration()
    base = api.configuration
    conf.host, conf.ssl_ca_cert, conf.verify_ssl = base.host, base.ssl_ca_cert, base.verify_ssl
    conf.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(conf)


def rules_of(api: client.ApiClient, namespace: str, service_account: str, in_namespace: str) -> set[Rule]:
    """What the API server says this ServiceAccount may do in ``in_namespace``, asked with its own token."""
    with as_service_account(api, namespace, service_account) as as_sa:
        review = client.AuthorizationV1Api(as_sa).create_self_subject_rules_review(
            {"spec": {"namespace": in_namespace}}
        )
    out: set[Rule] = set()
    for rule in review.status.resource_rules:
        for group in rule.api_groups or [""]:
            for resource in rule.resources or []:
                for verb in rule.verbs:
                    for name in rule.resource_names or [""]:
                        out.add((group, resource, verb, name))
    return out


def test_rbac_grants_exactly_what_the_code_uses(api: client.ApiClient, installed_rbac: tuple[str, str]) -> None:
    release, namespace = installed_rbac
    provider_sa, agent_sa = f"{release}-gpu-provider", f"{release}-gpu-provider-agent"
    everyone = rules_of(api, namespace, "nobody", namespace)
    in_release = rules_of(api, namespace, provider_sa, namespace) - everyone
    assert in_release == PROVIDER_CLUSTER | PROVIDER_RELEASE_NS, sorted(
        in_release ^ (PROVIDER_CLUSTER | PROVIDER_RELEASE_NS)
    )
    # in any other namespace (a lease's) only the cluster-wide part applies: no manifests, no secret reads
    elsewhere = rules_of(api, namespace, provider_sa, "default") - rules_of(api, namespace, "nobody", "default")
    assert elsewhere == PROVIDER_CLUSTER, sorted(elsewhere ^ PROVIDER_CLUSTER)
    agent = rules_of(api, namespace, agent_sa, namespace) - everyone
    assert agent == AGENT_CLUSTER, sorted(agent ^ AGENT_CLUSTER)


def test_plain_manifests_are_the_chart_rendered(chart_cluster: DevCluster, kubeconfig: Path) -> None:
    """manifests/ (kubectl apply -k) is the chart rendered with manifests/values.yaml: equal to a fresh
    render (run hack/render-manifests.sh after a chart change), and accepted by the API server."""
    done = helm(
        chart_cluster,
        "template",
        "gpu-provider",
        str(CHART),
        "--namespace",
        "gpu-provider",
        "--kube-version",
        KUBE_VERSION,
        "--values",
        str(REPO / "manifests" / "values.yaml"),
    )
    assert done.returncode == 0, done.stderr
    assert (REPO / "manifests" / "install.yaml").read_text() == done.stdout, "run hack/render-manifests.sh"
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {"namespace.yaml", "install.yaml"}
    kube = Kube(str(kubeconfig))
    ns_path = f"/api/v1/namespaces/{kustomization['namespace']}"
    try:  # namespaced objects are only dry-run into a namespace that exists
        kube.request("GET", ns_path)
        created = False
    except KubeError:
        kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": kustomization["namespace"]}})
        created = True
    try:
        for name in kustomization["resources"]:
            for obj in yaml.safe_load_all((REPO / "manifests" / name).read_text()):
                if obj:
                    if obj["metadata"].get("namespace"):
                        assert obj["metadata"]["namespace"] == kustomization["namespace"]
                    kube.apply(path_of(obj), obj, "gpu-provider-chart-test", dry_run=True)
    finally:
        if created:
            kube.request("DELETE", ns_path)


def test_a_node_agent_may_change_only_its_own_nodes_metadata(
    api: client.ApiClient, installed_rbac: tuple[str, str]
) -> None:
    """The chart's ValidatingAdmissionPolicy, like the kubelet's NodeRestriction."""
    release, namespace = installed_rbac
    agent_sa = f"{release}-gpu-provider-agent"
    core = client.CoreV1Api(api)
    own, other = (n.metadata.name for n in core.list_node(label_selector="type=kwok").items[:2])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "agent"},
        "spec": {
            "nodeName": own,
            "serviceAccountName": agent_sa,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "agent", "image": "registry.invalid/kwok-never-pulls:1"}],
        },
    }
    core.create_namespaced_pod(namespace, pod)
    label = {"metadata": {"labels": {"gpu-provider.io/agent-test": release}}}
    with as_service_account(api, namespace, agent_sa, pod="agent") as as_agent:
        agent = client.CoreV1Api(as_agent)
        # the API server loads a new policy within moments: wait until it denies the other node
        denied: client.ApiException | None = None
        deadline = time.monotonic() + 60
        while denied is None and time.monotonic() < deadline:
            try:
                agent.patch_node(other, label)
                time.sleep(0.5)
            except client.ApiException as e:
                denied = e
        assert denied is not None, "the agent could still change another node after 60 s"
        assert denied.status == 403 and "only change the Node its pod runs on" in str(denied.body)
        agent.patch_node(own, label)  # its own node: allowed
        with pytest.raises(client.ApiException) as spec_change:
            agent.patch_node(own, {"spec": {"unschedulable": True}})
        assert spec_change.value.status == 403 and "labels and annotations" in str(spec_change.value.body)
    with as_service_account(api, namespace, agent_sa) as unbound:  # a token not bound to a pod on a node
        with pytest.raises(client.ApiException) as nowhere:
            client.CoreV1Api(unbound).patch_node(own, label)
        assert nowhere.value.status == 403
    for name in (own, other):
        core.patch_node(name, {"metadata": {"labels": {"gpu-provider.io/agent-test": None}}})
