"""The chart installed for real on the dev cluster, its provider pods from the image built from our
Dockerfile, running on the real node against a mock chain served on the node's bridge:

- the previous chart version installs; both replicas run and serve, one leads, the agent publishes its node;
- the provider completes a lease with nothing but the chart's ServiceAccount (the API server's audit log
  shows every request it made, none denied) and is denied what it does not need;
- a real Prometheus finds both replicas through the pods' annotations (kubernetes_sd) and scrapes them;
- killing the leader's process hands over to the standby: one bid transaction per order across both
  replicas (counted in their own logs, the killed container's included), one set of objects per lease;
- ``helm upgrade`` to this chart with new pricing rolls both replicas, keeps every lease serving (none
  re-deployed or rolled, none closed on chain), and the new prices are bid;
- ``helm uninstall`` leaves the tenants' workloads and stored manifests in place.

The tests run in order on one installation (each step builds on the one before)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import sdl
from provider import tenant as tenant_ops
from provider.chain.client import ChainClient, provider_request
from provider.chain.keys import Key, Keyring
from provider.chain.port import ChainError
from provider.chain.types import BidId
from provider.deploy.deployer import crd
from provider.deploy.naming import namespace_for
from provider.devcluster import DevCluster
from provider.devcluster.image import ImageBuilder
from provider.kube import Kube
from provider.money import Dec
from tests.cluster.lifecycle_kit import gpu_sdl, poll
from tests.cluster.test_chart import CHART, as_service_account, helm
from tests.conftest import REPO
from tests.market.conftest import ChainProcess, free_port, funded

pytestmark = pytest.mark.cluster

HA = {"leaseSeconds": 6, "renewSeconds": 4, "retrySeconds": 1}  # quicker than the chart's, same rules
DEPOSIT = Dec.parse(10_000_000)  # uact per deployment (the tenant is funded with 100M)
NEW_H200_PRICE = "4400"  # USD per GPU-month, twice the default (provider.config.DEFAULT_GPU_PRICES)


def previous_chart(dest: Path) -> tuple[str, Path]:
    """The last committed chart whose version differs from the working tree's: (version, its directory)."""
    current = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    commits = subprocess.run(
        ["git", "log", "--format=%H", "--", "charts/gpu-provider/Chart.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for commit in commits:
        text = subprocess.run(
            ["git", "show", f"{commit}:charts/gpu-provider/Chart.yaml"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        version = yaml.safe_load(text)["version"] if text else current
        if version != current:
            archive = dest / "previous.tar"
            subprocess.run(
                ["git", "archive", "--output", str(archive), commit, "charts/gpu-provider"], cwd=REPO, check=True
            )
            with tarfile.open(archive) as tar:
                tar.extractall(dest, filter="data")
            return str(version), dest / "charts" / "gpu-provider"
    pytest.fail(f"no earlier chart version than {current} in the git history (a shallow clone?)", pytrace=False)


@dataclass
class Install:
    cluster: DevCluster
    api: client.ApiClient
    chain: ChainProcess
    key: Key
    namespace: str
    release: str
    values: Path
    dir: Path
    tenant: ChainClient | None = None
    leases: list[str] = field(default_factory=list)  # lease ids, in the order they were won
    prices: dict[int, Dec] = field(default_factory=dict)  # dseq -> our bid's price

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.release}-gpu-provider"

    def helm(self, *args: str) -> None:
        done = helm(self.cluster, *args, "-n", self.namespace, "--kubeconfig", str(self.cluster.kubeconfig))
        assert done.returncode == 0, done.stdout + done.stderr

    def charts(self) -> list[str]:
        """The chart (name-version) of each release in the namespace, as `helm list` says."""
        done = helm(
            self.cluster, "list", "-n", self.namespace, "-o", "json", "--kubeconfig", str(self.cluster.kubeconfig)
        )
        assert done.returncode == 0, done.stderr
        return [r["chart"] for r in json.loads(done.stdout)]

    def pods(self, component: str = "provider") -> list[Any]:
        selector = f"app.kubernetes.io/instance={self.release},app.kubernetes.io/component={component}"
        items: list[Any] = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        return [p for p in items if p.metadata.deletion_timestamp is None]

    def tls(self) -> ssl.SSLContext:
        """Trust exactly the chart's generated certificate (as a tenant pins a provider's certificate)."""
        secret = self.core.read_namespaced_secret(f"{self.release}-gpu-provider-tls", self.namespace)
        ctx = ssl.create_default_context(cadata=base64.b64decode(secret.data["tls.crt"]).decode())
        ctx.check_hostname = False  # the test reaches pods and the Service by IP
        return ctx

    def url(self, pod: Any | None = None) -> str:
        if pod is not None:
            return f"https://{pod.status.pod_ip}:8443"
        svc = self.core.read_namespaced_service(f"{self.release}-gpu-provider", self.namespace)
        return f"https://{svc.spec.cluster_ip}:8443"

    def status(self, pod: Any | None = None) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(self.url(pod) + "/status", verify=self.tls(), timeout=10).json()
        return body

    def leader(self) -> str:
        """The pod whose process holds the leader Lease ("" when nobody does)."""
        lease = client.CoordinationV1Api(self.api).read_namespaced_lease(
            f"{self.release}-gpu-provider-leader", self.namespace
        )
        holder = lease.spec.holder_identity or ""
        return holder.rsplit("_", 1)[0]

    async def call(self, method: str, path: str, scope: str, body: str | None = None) -> Any:
        assert self.tenant is not None and self.tenant.key is not None
        token = tenant_ops.token(self.tenant, [scope])
        return await provider_request(method, self.url() + path, token, body, verify=self.tls())

    async def lease(self, dseq: int) -> str:
        """Deploy the GPU SDL as dseq, accept our bid, send the manifest through the Service; the lease."""
        assert self.tenant is not None
        text = gpu_sdl(self.busybox)
        await tenant_ops.deploy(self.tenant, text.encode(), "test.yaml", DEPOSIT, dseq, wait=0)
        bid = await self.bid_on(dseq)
        await tenant_ops.accept(self.tenant, str(bid.id))
        manifest = json.dumps(sdl.parse(text.encode()).manifest_json())
        await self.call("PUT", f"/deployment/{dseq}/manifest", "send-manifest", manifest)
        self.leases.append(str(bid.id))
        return str(bid.id)

    async def bid_on(self, dseq: int) -> Any:
        assert self.tenant is not None

        async def ours() -> Any:
            assert self.tenant is not None
            bids = await self.tenant.bids(owner=self.tenant.address, dseq=dseq)
            return next((b for b in bids if b.id.provider == self.key.address), None)

        bid = await poll(ours, 120, 0.5)
        self.prices[dseq] = bid.price.amount
        return bid

    async def ready(self, dseq: int) -> bool:
        try:
            body = await self.call("GET", f"/lease/{dseq}/1/1/status", "status")
        except ChainError:  # not yet (a rollout in progress, a standby catching up)
            return False
        return bool(body.get("state") == "ready")

    busybox: str = ""


RUNNER = asyncio.Runner()  # one event loop for the module: the tenant's client lives across the tests


def run(coro: Any) -> Any:
    return RUNNER.run(coro)


@pytest.fixture(scope="module")
def install(
    devcluster: DevCluster | None,
    api: client.ApiClient,
    real_node: dict[str, Any],
    builder: ImageBuilder,
    provider_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Install]:
    if devcluster is None:
        pytest.fail("the install tests need a dev cluster of ours (its helm, registry and audit log)", pytrace=False)
    tmp = tmp_path_factory.mktemp("chart-install")
    release = f"gp{uuid.uuid4().hex[:6]}"
    namespace = f"{release}-system"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    Kube(str(devcluster.kubeconfig)).apply(  # as `gpu-provider setup` does (other tests may have made it)
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/manifests.gpu-provider.io", crd(), "gpu-provider"
    )
    chain = ChainProcess(tmp / "chain.sqlite", free_port(), block_interval=0.2, host=str(real_node["ip"]))
    chain.start()
    key = Keyring(tmp / "keyring.json").add("provider")
    run(funded(chain.url, key))
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="provider-key"),
            string_data={"keyring.json": (tmp / "keyring.json").read_text()},
        ),
    )
    image = builder.push(provider_image, str(real_node["registry"]))
    repository, digest = image.split("@")
    on_real_node = {"gpu-provider.dev/real-node": "true"}
    values = {
        "image": {"repository": repository, "digest": digest},
        "chain": {"url": chain.url, "keySecret": {"name": "provider-key"}},
        "provider": {"hostURI": f"https://{release}-gpu-provider.{namespace}.svc:8443"},
        "ha": HA,
        "crds": {"install": False},
        "nodeSelector": on_real_node,
        "agent": {"nodeSelector": on_real_node, "intervalSeconds": 5},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "config": {"deploy": {"dns_cidrs": [f"{real_node['ip']}/32"]}},
    }
    values_file = tmp / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    inst = Install(devcluster, api, chain, key, namespace, release, values_file, tmp, busybox=str(real_node["busybox"]))
    try:
        yield inst
    finally:
        chain.stop()  # first: a failing step below must not leave the chain process behind
        with contextlib.ExitStack() as cleanup:  # every step runs, whichever of them fails
            cleanup.callback(RUNNER.close)
            cleanup.callback(core.delete_namespace, namespace)
            for lease in inst.leases:
                cleanup.callback(_delete_namespace, core, namespace_for(BidId.parse(lease)))
            if inst.tenant is not None:
                cleanup.callback(run, inst.tenant.aclose())
            kubeconfig = str(devcluster.kubeconfig)
            cleanup.callback(
                helm, devcluster, "uninstall", release, "-n", namespace, "--kubeconfig", kubeconfig, "--wait"
            )


def _delete_namespace(core: client.CoreV1Api, name: str) -> None:
    with contextlib.suppress(ApiException):  # a lease's namespace may be gone already
        core.delete_namespace(name)


def _kill_process_of(pod: Any) -> int:
    """SIGKILL the provider's process in this pod from the host (no grace, no release), like a crash."""
    uid = pod.metadata.uid
    marks = (f"pod{uid}", f"pod{uid.replace('-', '_')}")
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroup = (entry / "cgroup").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if any(m in cgroup for m in marks) and b"gpu-provider" in cmdline:
            os.kill(int(entry.name), signal.SIGKILL)
            killed += 1
    return killed


def _bid_transactions(inst: Install) -> int:
    """Bid transactions sent, from every provider container's own log (a restarted one's previous too)."""
    sent = 0
    for pod in inst.pods():
        logs = inst.core.read_namespaced_pod_log(pod.metadata.name, inst.namespace)
        with contextlib.suppress(ApiException):  # 400 when it never restarted
            logs += inst.core.read_namespaced_pod_log(pod.metadata.name, inst.namespace, previous=True)
        sent += logs.count("bid placed order=") + logs.count("bid refused order=")
    return sent


def test_the_previous_chart_installs_and_runs_on_the_real_node(install: Install, real_node: dict[str, Any]) -> None:
    version, chart = previous_chart(install.dir)
    install.helm("install", install.release, str(chart), "-f", str(install.values), "--wait", "--timeout", "5m")
    assert install.charts() == [f"gpu-provider-{version}"]
    pods = install.pods()
    assert len(pods) == 2 and {p.spec.node_name for p in pods} == {real_node["name"]}
    assert all(p.status.phase == "Running" for p in pods)
    leading = [install.status(p)["leader"]["leading"] for p in pods]
    assert sorted(leading) == [False, True]  # both serve the API; one leads
    assert install.leader() in {p.metadata.name for p in pods}
    assert install.status()["address"] == install.key.address  # through the Service
    # the agent runs on the GPU node and publishes what NVML says there (no driver on this host: an error)
    (agent,) = install.pods("agent")
    assert agent.spec.node_name == real_node["name"]

    async def published() -> Any:
        node = install.core.read_node(real_node["name"])
        raw = (node.metadata.annotations or {}).get("gpu-provider.io/gpus")
        return json.loads(raw) if raw else None

    facts = run(poll(published, 120))
    assert facts["gpus"] == [] and facts["error"], facts


def test_a_lease_completes_with_only_the_charts_service_account(
    install: Install, api: client.ApiClient, real_node: dict[str, Any]
) -> None:
    async def go() -> str:
        install.tenant = await funded(install.chain.url, Key.generate("tenant"))
        lease = await install.lease(1)
        await poll(lambda: install.ready(1), 180)
        return lease

    lease = run(go())
    ns = namespace_for(BidId.parse(lease))
    (deployment,) = client.AppsV1Api(api).list_namespaced_deployment(ns).items
    assert deployment.spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    (pod,) = install.core.list_namespaced_pod(ns).items
    assert pod.spec.node_name == real_node["name"] and pod.status.phase == "Running"
    # every request the provider and the agent made was with their ServiceAccounts, and none was denied
    for user in (install.service_account, f"{install.service_account}-agent"):
        events = install.cluster.audit_events(user)
        assert events, f"no request by {user} in the audit log"
        denied = [e for e in events if e.get("responseStatus", {}).get("code") == 403]
        assert denied == [], [(e["verb"], e["requestURI"]) for e in denied]
    verbs = {
        (e["verb"], e["objectRef"].get("resource"))
        for e in install.cluster.audit_events(install.service_account)
        if "objectRef" in e
    }
    for needed in (("patch", "deployments"), ("patch", "namespaces"), ("update", "leases"), ("patch", "manifests")):
        assert needed in verbs or ("create", needed[1]) in verbs, (needed, sorted(verbs))
    # and it may not do what it never needs: read another namespace's secrets, delete nodes
    with as_service_account(api, install.namespace, f"{install.release}-gpu-provider") as as_sa:
        for call in (
            lambda: client.CoreV1Api(as_sa).list_namespaced_secret("kube-system"),
            lambda: client.CoreV1Api(as_sa).delete_node(real_node["name"]),
        ):
            with pytest.raises(ApiException) as refused:
                call()
            assert refused.value.status == 403


def test_prometheus_finds_and_scrapes_both_replicas_through_their_annotations(install: Install, tmp_path: Path) -> None:
    state = install.cluster.load()
    assert state is not None
    pki = install.cluster.pki
    port = free_port()
    tls = {"ca_file": str(pki / "ca.crt"), "cert_file": str(pki / "admin.crt"), "key_file": str(pki / "admin.key")}
    scrape = {
        "job_name": "kubernetes-pods",
        "kubernetes_sd_configs": [
            {
                "role": "pod",
                "api_server": f"https://127.0.0.1:{state.ports['apiserver']}",
                "tls_config": tls,
                "namespaces": {"names": [install.namespace]},
            }
        ],
        "relabel_configs": [  # the common prometheus.io/* annotation convention
            {
                "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                "action": "keep",
                "regex": "true",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                "target_label": "__metrics_path__",
                "regex": "(.+)",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_ip", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
                "target_label": "__address__",
                "regex": "(.+);(.+)",
                "replacement": "$1:$2",
            },
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        ],
    }
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [scrape]}))
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(state.bin_dir) / "prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def query(expr: str) -> list[dict[str, Any]]:
        body = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def both_scraped() -> list[dict[str, Any]]:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            found = query('up{job="kubernetes-pods"} == 1')
        except httpx.HTTPError:
            return []
        return found if len(found) == 2 else []

    try:
        up = run(poll(both_scraped, 120))
        assert {s["metric"]["pod"] for s in up} == {p.metadata.name for p in install.pods()}
        leader = query("gpu_provider_leader")
        assert sorted(s["value"][1] for s in leader) == ["0", "1"]
        (top,) = [s for s in leader if s["value"][1] == "1"]
        assert top["metric"]["pod"] == install.leader()
        assert query('gpu_provider_leases{state="ready"} == 1')  # the lease deployed above
    finally:
        proc.terminate()
        proc.wait(30)


def test_killing_the_leader_hands_over_with_one_bid_per_order(install: Install, api: client.ApiClient) -> None:
    pods = {p.metadata.name: p for p in install.pods()}
    old = install.leader()
    (standby,) = [name for name in pods if name != old]
    assert _kill_process_of(pods[old]) == 1

    async def go() -> None:
        await poll(lambda: _async(install.leader() == standby), 60, 0.2)
        await poll(lambda: _async(install.status(pods[standby])["leader"]["leading"]), 30, 0.2)
        assert await install.ready(1)  # the first lease lived through it
        await install.lease(2)
        await poll(lambda: install.ready(2), 180)

    run(go())
    # the killed container came back, as a standby of the same pod
    restarted = install.core.read_namespaced_pod(old, install.namespace)
    assert restarted.status.container_statuses[0].restart_count >= 1
    # one bid transaction per order across both replicas, and one set of objects per lease
    assert _bid_transactions(install) == 2
    for lease in install.leases:
        (deployment,) = client.AppsV1Api(api).list_namespaced_deployment(namespace_for(BidId.parse(lease))).items
        assert deployment.metadata.name == "app"


async def _async(value: Any) -> Any:
    return value


def test_helm_upgrade_to_this_chart_with_new_pricing_keeps_the_leases(install: Install, api: client.ApiClient) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    before = {p.metadata.uid for p in install.pods()}

    def workloads() -> dict[str, tuple[str, int, list[str]]]:
        """Per lease: its Deployment's uid and generation (a rollout bumps it) and its pods' uids."""
        out = {}
        for lease in install.leases:
            ns = namespace_for(BidId.parse(lease))
            d = apps.read_namespaced_deployment("app", ns)
            pods = sorted(p.metadata.uid for p in core.list_namespaced_pod(ns).items)
            out[lease] = (d.metadata.uid, d.metadata.generation, pods)
        return out

    uids = workloads()
    install.helm(
        "upgrade",
        install.release,
        str(CHART),
        "-f",
        str(install.values),
        "--set-string",
        f"config.pricing.linear.gpu.h200={NEW_H200_PRICE}",
        "--set",
        "podLabels.example\\.com/team=gpu",
        "--set",
        "chain.kind=mock",  # chain.kind came in 0.3.0: an upgrade from an older chart learns it
        "--wait",
        "--timeout",
        "5m",
    )
    current = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert install.charts() == [f"gpu-provider-{current}"]
    after = install.pods()
    assert len(after) == 2 and not before & {p.metadata.uid for p in after}  # both replicas replaced
    assert all(p.metadata.labels.get("example.com/team") == "gpu" for p in after)

    async def go() -> None:
        await poll(lambda: _async(install.leader() in {p.metadata.name for p in after}), 60, 0.5)
        for dseq in (1, 2):
            await poll(lambda: install.ready(dseq), 120)  # noqa: B023 - awaited at once
        assert install.tenant is not None
        text = gpu_sdl(install.busybox)
        await tenant_ops.deploy(install.tenant, text.encode(), "test.yaml", DEPOSIT, 3, wait=0)
        await install.bid_on(3)

        for lease in install.leases:  # every lease is still active on chain: none closed by the upgrade
            found = await install.tenant.lease(BidId.parse(lease))
            assert found is not None and found.state == "active", (lease, found)

    run(go())
    # the same SDL as dseq 2 now bids the GPU at twice the price: the new pricing took effect
    assert install.prices[3] > install.prices[2], install.prices
    # the workloads were left alone: not re-created, not rolled, the same pods serving
    assert workloads() == uids


def test_helm_uninstall_leaves_the_tenants_workloads_and_manifests(install: Install, api: client.ApiClient) -> None:
    install.helm("uninstall", install.release, "--wait", "--timeout", "2m")
    assert install.pods() == [] and install.pods("agent") == []
    apps = client.AppsV1Api(api)
    for lease in install.leases:
        deployment = apps.read_namespaced_deployment("app", namespace_for(BidId.parse(lease)))
        assert deployment.status.available_replicas == 1
    stored = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "gpu-provider.io", "v1", install.namespace, "manifests"
    )["items"]
    assert len(stored) == len(install.leases) == 2
