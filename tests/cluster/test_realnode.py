"""Workloads really run on the dev cluster's real node: images from the local registry, logs, Services
through kube-proxy, DNS through CoreDNS, Ingress through Traefik, memory limits, image pull errors, GPU
requests through the kubelet's device-plugin API, NetworkPolicy, and a host left as it was by `down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from provider.devcluster import DevCluster, DevClusterError
from provider.devcluster.realnode import RUN_ROOT, VAR_ROOT, RealNode
from tests.cluster.waiting import wait_for

pytestmark = pytest.mark.cluster
REAL = {"gpu-provider.dev/real-node": "true"}


def pod(
    name: str,
    image: str,
    command: list[str],
    *,
    labels: dict[str, str] | None = None,
    resources: dict[str, str] | None = None,
    runtime_class: str | None = None,
    restart: str = "Never",
) -> client.V1Pod:
    res = client.V1ResourceRequirements(requests=resources, limits=resources) if resources else None
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {"app": name}),
        spec=client.V1PodSpec(
            node_selector=REAL,
            restart_policy=restart,
            runtime_class_name=runtime_class,
            termination_grace_period_seconds=1,
            containers=[client.V1Container(name="main", image=image, command=command, resources=res)],
        ),
    )


def phase(core: client.CoreV1Api, ns: str, name: str) -> str:
    p = core.read_namespaced_pod(name, ns)
    return str(p.status.phase)


def running(core: client.CoreV1Api, ns: str, name: str) -> client.V1Pod:
    def ready() -> client.V1Pod | None:
        p = core.read_namespaced_pod(name, ns)
        ok = any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        return p if ok else None

    result: client.V1Pod = wait_for(ready, 120, f"pod {name} to be Ready")
    return result


def finished(core: client.CoreV1Api, ns: str, name: str) -> str:
    result: str = wait_for(
        lambda: (ph := phase(core, ns, name)) in ("Succeeded", "Failed") and ph, 120, f"pod {name} to finish"
    )
    return result


def http_get(url: str, host: str | None = None, timeout: float = 5) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def web_server(core: client.CoreV1Api, ns: str, name: str, image: str, text: str) -> client.V1Pod:
    script = f"mkdir -p /srv && echo '{text}' > /srv/index.html && exec httpd -f -p 8080 -h /srv"
    p = pod(name, image, ["/bin/sh", "-c", script], restart="Always")
    p.spec.containers[0].ports = [client.V1ContainerPort(container_port=8080, name="http")]
    p.spec.containers[0].readiness_probe = client.V1Probe(
        tcp_socket=client.V1TCPSocketAction(port=8080), period_seconds=1
    )
    core.create_namespaced_pod(ns, p)
    return running(core, ns, name)


def service(
    core: client.CoreV1Api, ns: str, name: str, kind: str = "ClusterIP", selector: str | None = None
) -> client.V1Service:
    spec = client.V1ServiceSpec(
        type=kind,
        selector={"app": selector or name},
        ports=[client.V1ServicePort(port=80, target_port=8080, name="http")],
    )
    created: client.V1Service = core.create_namespaced_service(
        ns, client.V1Service(metadata=client.V1ObjectMeta(name=name), spec=spec)
    )
    return created


def web_service(core: client.CoreV1Api, ns: str, name: str, image: str, text: str) -> client.V1Service:
    """A web server pod answering ``text`` and a ClusterIP Service named after it."""
    web_server(core, ns, name, image, text)
    return service(core, ns, name)


# -- the node ------------------------------------------------------------------------------------------


def test_the_real_node_is_ready_with_fake_gpus_and_gfd_labels(api: client.ApiClient, real_node: dict[str, Any]) -> None:
    node = client.CoreV1Api(api).read_node(real_node["name"])
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    assert node.status.allocatable["nvidia.com/gpu"] == str(real_node["gpus"])
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H200"
    assert "kwok.x-k8s.io/node" not in (node.metadata.annotations or {})
    assert node.status.node_info.kubelet_version.startswith("v1.")
    assert node.status.node_info.container_runtime_version.startswith("containerd://2.")
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["InternalIP"] == real_node["ip"]


def test_a_pod_from_the_local_registry_runs_and_its_logs_come_back(
    api: client.ApiClient, namespace: str, real_node: dict[str, Any]
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(
        namespace, pod("hello", real_node["busybox"], ["/bin/sh", "-c", "echo hello from $(hostname); id -u"])
    )
    assert finished(core, namespace, "hello") == "Succeeded"
    logs = core.read_namespaced_pod_log("hello", namespace)
    assert logs.splitlines() == ["hello from hello", "0"]
    p = core.read_namespaced_pod("hello", namespace)
    assert p.spec.node_name == real_node["name"]
    assert p.status.pod_ip.startswith(real_node["pod_subnet"].rsplit(".", 2)[0])


def test_image_built_from_a_directory_runs(
    api: client.ApiClient, namespace: str, real_node: dict[str, Any], devcluster_state: Path, tmp_path: Path
) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (root / "bin" / "busybox").chmod(0o755)
    (root / "greeting.txt").write_text("built without docker\n")
    cli = [str(Path(sys.executable).parent / "gpu-provider"), "devcluster", "image", "build"]
    out = subprocess.run(
        [*cli, "tools/greeter:1", str(root), "--entrypoint=/bin/busybox,cat", "--cmd=/greeting.txt",
         f"--state-dir={devcluster_state}"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    ref = out.stdout.strip()
    assert ref.startswith(f"{real_node['registry']}/tools/greeter@sha256:")
    core = client.CoreV1Api(api)
    p = pod("greeter", ref, [])
    p.spec.containers[0].command = None
    core.create_namespaced_pod(namespace, p)
    assert finished(core, namespace, "greeter") == "Succeeded"
    assert core.read_namespaced_pod_log("greeter", namespace) == "built without docker\n"


def test_clusterip_and_nodeport_services_answer(
    api: client.ApiClient, namespace: str, real_node: dict[str, Any]
) -> None:
    core = client.CoreV1Api(api)
    cluster_ip = web_service(core, namespace, "web", real_node["busybox"], "served by web")
    node_port = service(core, namespace, "web-np", "NodePort", selector="web")
    url = f"http://{cluster_ip.spec.cluster_ip}/"
    assert wait_for(lambda: http_get(url) == (200, "served by web\n"), 60, f"{url} to answer")
    port = node_port.spec.ports[0].node_port
    url = f"http://{real_node['ip']}:{port}/"
    assert wait_for(lambda: http_get(url) == (200, "served by web\n"), 60, f"{url} to answer")


def test_a_pod_resolves_another_service_by_name(
    api: client.ApiClient, namespace: str, real_node: dict[str, Any]
) -> None:
    core = client.CoreV1Api(api)
    svc = web_service(core, namespace, "backend", real_node["busybox"], "backend")
    # the short name through the pod's search path (busybox's nslookup also reports the search domains
    # that miss, and exits 1 for them), then the absolute name, which must resolve
    lookup = f"nslookup backend; echo ---; nslookup backend.{namespace}.svc.cluster.local."
    core.create_namespaced_pod(namespace, pod("resolver", real_node["busybox"], ["/bin/sh", "-c", lookup]))
    outcome = finished(core, namespace, "resolver")
    logs = core.read_namespaced_pod_log("resolver", namespace)
    assert outcome == "Succeeded", logs
    short, absolute = logs.split("---")
    for answer in (short, absolute):
        assert f"Name:\tbackend.{namespace}.svc.cluster.local" in answer, logs
        assert f"Address: {svc.spec.cluster_ip}" in answer, logs


def test_an_ingress_with_a_host_routes_to_the_pod(
    api: client.ApiClient, namespace: str, real_node: dict[str, Any]
) -> None:
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    web_service(core, namespace, "site", real_node["busybox"], "through the ingress")
    host = f"site.{namespace}.ingress.test"
    backend = client.V1IngressBackend(
        service=client.V1IngressServiceBackend(name="site", port=client.V1ServiceBackendPort(number=80))
    )
    rule = client.V1IngressRule(
        host=host,
        http=client.V1HTTPIngressRuleValue(
            paths=[client.V1HTTPIngressPath(path="/", path_type="Prefix", backend=backend)]
        ),
    )
    ing = net.create_namespaced_ingress(
        namespace, client.V1Ingress(metadata=client.V1ObjectMeta(name="site"), spec=client.V1IngressSpec(rules=[rule]))
    )
    assert ing.spec.ingress_class_name == "traefik"  # the default class
    url = real_node["ingress"] + "/"
    assert wait_for(lambda: http_get(url, host) == (200, "through the ingress\n"), 60, "the ingress to route")
    assert http_get(url, "unknown.ingress.test")[0] == 404


def test_a_pod_over_its_memory_limit_is_oomkilled(
    api: client.ApiClient, namespace: str, real_node: dict[str, Any]
) -> None:
    core = client.CoreV1Api(api)
    hog = pod(
        "hog",
        real_node["busybox"],
        ["/bin/sh", "-c", "dd if=/dev/zero of=/dev/null bs=96M count=1"],
        resources={"memory": "32Mi", "cpu": "100m"},
    )
    core.create_namespaced_pod(namespace, hog)
    assert finished(core, namespace, "hog") == "Failed"
    state = core.read_namespaced_pod("hog", namespace).status.container_statuses[0].state
    assert state.terminated is not None and state.terminated.reason == "OOMKilled"
    assert state.terminated.exit_code == 137


def test_a_missing_image_reports_the_registry_error(
    api: client.ApiClient, namespace: str, real_node: dict[str, Any]
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, pod("ghost", f"{real_node['registry']}/does-not-exist:1", ["/bin/true"]))

    def waiting() -> Any:
        statuses = core.read_namespaced_pod("ghost", namespace).status.container_statuses or []
        w = statuses[0].state.waiting if statuses else None
        return w if w is not None and w.reason in ("ErrImagePull", "ImagePullBackOff") else None

    w = wait_for(waiting, 60, "an image pull error")
    assert phase(core, namespace, "ghost") == "Pending"
    assert "does-not-exist" in w.message and "not found" in w.message.lower()


def test_gpu_pods_go_through_the_device_plugin(
    api: client.ApiClient, namespace: str, real_node: dict[str, Any]
) -> None:
    core = client.CoreV1Api(api)
    gpus = real_node["gpus"]
    one = pod(
        "gpu-one",
        real_node["busybox"],
        ["/bin/sh", "-c", "echo devices=$NVIDIA_VISIBLE_DEVICES fake=$GPU_PROVIDER_FAKE_GPU"],
        resources={"nvidia.com/gpu": "1"},
        runtime_class="nvidia",
    )
    core.create_namespaced_pod(namespace, one)
    assert finished(core, namespace, "gpu-one") == "Succeeded"
    logs = core.read_namespaced_pod_log("gpu-one", namespace).strip()
    assert logs.startswith(f"devices=GPU-fake-{real_node['name']}-") and logs.endswith("fake=1"), logs
    too_many = pod(
        "gpu-too-many",
        real_node["busybox"],
        ["/bin/true"],
        resources={"nvidia.com/gpu": str(gpus + 1)},
        runtime_class="nvidia",
    )
    core.create_namespaced_pod(namespace, too_many)

    def unschedulable() -> str | None:
        for c in core.read_namespaced_pod("gpu-too-many", namespace).status.conditions or []:
            if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
                return str(c.message)
        return None

    message = wait_for(unschedulable, 60, "the scheduler to refuse")
    assert "nvidia.com/gpu" in message
    assert phase(core, namespace, "gpu-too-many") == "Pending"


def test_a_network_policy_denying_ingress_blocks_a_connection(
    api: client.ApiClient, namespace: str, real_node: dict[str, Any]
) -> None:
    core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
    server = web_server(core, namespace, "guarded", real_node["busybox"], "guarded")
    probe = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {server.status.pod_ip} 8080 | grep guarded"

    def attempt(name: str) -> str:
        core.create_namespaced_pod(namespace, pod(name, real_node["busybox"], ["/bin/sh", "-c", probe]))
        return finished(core, namespace, name)

    assert attempt("before") == "Succeeded"
    policy = client.V1NetworkPolicy(
        metadata=client.V1ObjectMeta(name="deny-ingress"),
        spec=client.V1NetworkPolicySpec(
            pod_selector=client.V1LabelSelector(match_labels={"app": "guarded"}), policy_types=["Ingress"]
        ),
    )
    net.create_namespaced_network_policy(namespace, policy)
    # enforcement is asynchronous: the policy holds once a fresh connection fails
    deadline = time.monotonic() + 60
    tries = 0
    while True:
        tries += 1
        if attempt(f"after-{tries}") == "Failed":
            break
        assert time.monotonic() < deadline, "the NetworkPolicy was never enforced"
    net.delete_namespaced_network_policy("deny-ingress", namespace)
    wait_for(lambda: attempt(f"lifted-{time.monotonic_ns()}") == "Succeeded", 60, "the connection to work again")


def test_a_second_cluster_cannot_take_the_real_node(real_node: dict[str, Any], tmp_path: Path) -> None:
    other = DevCluster(tmp_path / "other")
    with pytest.raises(DevClusterError, match="one"):
        RealNode(other).preflight()
    assert not (tmp_path / "other").exists()


# -- host hygiene ---------------------------------------------------------------------------------------


def host_snapshot() -> dict[str, Any]:
    """What a real node could leave behind: processes, mounts, interfaces, nftables, sysctls, paths, cgroups."""

    def lines(argv: list[str]) -> list[str]:
        return sorted(subprocess.run(argv, capture_output=True, text=True, check=False).stdout.splitlines())

    exes = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                exes.add(os.readlink(f"/proc/{entry}/exe"))
            except OSError:
                continue
    with open("/proc/self/mountinfo") as f:
        mounts = sorted(line.split()[4] for line in f)
    sysctls = {}
    for name in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables", "net/ipv4/conf/all/route_localnet",
                 "net/netfilter/nf_conntrack_max"):  # fmt: skip
        try:
            sysctls[name] = Path("/proc/sys", name).read_text().strip()
        except OSError:
            sysctls[name] = "(absent)"
    paths = {
        p: os.path.lexists(p)
        for p in (str(VAR_ROOT), str(RUN_ROOT), "/var/log/containers", "/var/log/pods", "/var/lib/cni", "/run/netns",
                  "/var/run/nri", "/etc/cni", "/opt/cni", "/opt/containerd", "/var/lib/kubelet", "/etc/containerd")
    }  # fmt: skip
    cgroups = sorted(str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods*")) + sorted(
        str(p) for p in Path("/sys/fs/cgroup").glob("kubepods*")
    )
    return {
        # the dev cluster's processes (its build cache, its state trees), not other tools of ours running
        # meanwhile (the Akash devnet's node runs from ~/.cache/gpu-provider/akash in the other test session)
        "processes": sorted(e for e in exes if "devcluster" in e),
        "mounts": mounts,
        "links": [line.split(":")[1].strip().split("@")[0] for line in lines(["ip", "-o", "link"])],
        "nft": lines(["nft", "list", "ruleset"]),
        "ipsets": lines(["ipset", "list", "-n"]),
        "sysctls": sysctls,
        "paths": paths,
        "cgroups": cgroups,
    }


@pytest.mark.host_cycle
def test_two_up_down_cycles_leave_the_host_as_it_was(tmp_path: Path) -> None:
    """Runs before the session's cluster (see conftest): no real node may exist while it does."""
    before = host_snapshot()
    for cycle in (1, 2):
        cluster = DevCluster(tmp_path / f"cycle-{cycle}")
        cluster.up(pool="cpu:1", timeout=240, real_node=True)
        state = cluster.load()
        assert state is not None and state.real_node["name"]
        core = client.CoreV1Api(_api(cluster))
        core.create_namespaced_pod("default", pod("sleeper", state.real_node["busybox"], ["/bin/sleep", "3600"]))
        running(core, "default", "sleeper")
        during = host_snapshot()
        assert during["links"] != before["links"] and during["nft"] != before["nft"]
        cluster.down()
        after = host_snapshot()
        for key in before:
            assert after[key] == before[key], (
                f"cycle {cycle}: {key} differs after down:\n{json.dumps(_diff(before[key], after[key]))}"
            )
        assert not cluster.dir.exists()


def _api(cluster: DevCluster) -> client.ApiClient:
    from kubernetes import config

    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


def _diff(a: Any, b: Any) -> Any:
    if isinstance(a, list) and isinstance(b, list):
        return {"gone": [x for x in a if x not in b], "new": [x for x in b if x not in a]}
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
    return [a, b]
