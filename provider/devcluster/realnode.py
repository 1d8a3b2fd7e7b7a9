"""One real worker node in the dev cluster, beside the KWOK pool.

kubelet (webhook authentication and authorization, its own client and serving certificates), containerd
v2 with Debian's runc, the CNI bridge/host-local/loopback/portmap plugins, kube-proxy (nftables mode),
CoreDNS as the cluster DNS, kube-router's network-policy controller enforcing NetworkPolicy, fakegpu (our test double of
the NVIDIA device plugin, advertising ``nvidia.com/gpu`` through the kubelet's real device-plugin API,
with the GPU Feature Discovery labels of a known model and RuntimeClass ``nvidia`` mapped to runc), a
registry on loopback and Traefik as the default ingress class. Only the GPU itself is missing.

The kubelet and containerd use fixed host paths and kube-proxy owns nftables tables in the root network
namespace, so a host runs one real node: a second cluster asking for one is refused. Everything it changes
on the host is recorded in a ledger (provider.devcluster.host) and undone by ``down``.

Facts this rests on (checked on the 2-core CI VM): root there lacks CAP_SYS_RESOURCE, so containerd runs
with ``restrict_oom_score_adj`` and kubelet/kube-proxy with ``oomScoreAdj: 0``; cgroups are a v1+v2
hybrid, so the kubelet uses cgroupfs with ``failCgroupV1: false``; no image can be pulled from the
internet, so the pause image is built from the kubernetes module's pause.c and served by the registry.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from provider.devcluster import ingress, pki, procs
from provider.devcluster.cluster import DevCluster, State, node_ready
from provider.devcluster.errors import DevClusterError
from provider.devcluster.host import Host, cgroup_hierarchies, cgroup_procs, run
from provider.devcluster.pool import GPU_MODELS, POOL_LABEL, gfd_labels
from provider.devcluster.registry import BUSYBOX, Registry, answers
from provider.files import write_private

VAR_ROOT = Path("/var/lib/gpu-provider-devcluster")
RUN_ROOT = Path("/run/gpu-provider-devcluster")
OWNER = RUN_ROOT / "owner"
CONTAINERD_SOCK = RUN_ROOT / "containerd" / "containerd.sock"
KUBELET_ROOT = VAR_ROOT / "kubelet"
POD_LOGS = Path("/var/log/containers")  # the kubelet links container logs here (a fixed path)
CNI_CACHE = Path("/var/lib/cni")  # libcni's result cache (a fixed path)
DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")  # the kubelet's, whatever its --root-dir (fixed)
NODE_BRIDGE, NODE_ADDRESS = "gpdev0", "10.250.0.1/24"
NODE_IP = NODE_ADDRESS.split("/", maxsplit=1)[0]
POD_BRIDGE, POD_SUBNET = "gpdevcni0", "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
RUNC = Path("/usr/sbin/runc")
PAUSE_TAG = "pause:3.10"
DEFAULT_GPUS = "h200:2"
COMPONENTS = (
    "registry",
    "containerd",
    "kubelet",
    "fakegpu",
    "kube-proxy",
    "apiserver-proxy",
    "coredns",
    "netpol",
    "traefik",
)
SOCAT = Path("/usr/bin/socat")
SYSTEM = "kube-system"


@dataclass
class RealNodeInfo:
    """What `up` tells tests and the demo about the real node (kept in state.json)."""

    name: str
    ip: str
    model: str
    gpus: int
    registry: str  # 127.0.0.1:PORT
    ingress: str  # http://127.0.0.1:PORT (the Traefik web entry point)
    busybox: str  # a pull reference for a busybox-static image in the registry
    pod_subnet: str = POD_SUBNET


def parse_gpus(spec: str) -> tuple[str, int]:
    model, _, count = spec.partition(":")
    if model not in GPU_MODELS or not count.isdigit() or not 1 <= int(count) <= 16:
        raise DevClusterError(
            f"real node GPUs {spec!r}: write MODEL:COUNT (1-16), MODEL one of {', '.join(GPU_MODELS)}"
        )
    return model, int(count)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            status: int = resp.status
            return 200 <= status < 300
    except (OSError, urllib.error.URLError):
        return False


def registry_of(state: State) -> Registry:
    """The registry of a cluster's real node (the `image build` command and the benchmarks push to it)."""
    if not state.real_node.get("registry"):
        raise DevClusterError("no registry: start the dev cluster with `gpu-provider devcluster up --real-node`")
    return Registry(Path(state.bin_dir) / "crane", state.ports["node-registry"])


def _answers(url: str) -> Callable[[], bool]:
    return lambda: _http_ok(url)


class RealNode:
    def __init__(self, cluster: DevCluster, gpus: str = DEFAULT_GPUS) -> None:
        self.cluster = cluster
        self.model, self.gpus = parse_gpus(gpus)
        self.dir = cluster.dir / "node"
        self.host = Host(cluster.dir / "host.json")

    # checks -------------------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Refuse early, with the reason, when this host cannot run a real node for this cluster."""
        if os.geteuid() != 0:
            raise DevClusterError("--real-node needs root (it runs kubelet, containerd and kube-proxy)")
        missing = [t for t in ("nft", "ip", "ipset", "iptables", "umount") if shutil.which(t) is None]
        missing += [str(p) for p in (RUNC, BUSYBOX, SOCAT) if not p.is_file()]
        if missing:
            raise DevClusterError(
                f"--real-node needs {', '.join(missing)}: run hack/devcluster/host-packages.sh (Debian packages "
                "runc nftables iptables ipset conntrack iproute2 busybox-static socat)"
            )
        if not cgroup_hierarchies():
            raise DevClusterError("--real-node needs cgroups mounted under /sys/fs/cgroup")
        owner = self._owner()
        if owner is not None and owner != self.cluster.dir:
            other = DevCluster(owner)
            state = other.load()
            if state is not None and other.ours(state, "kubelet"):
                raise DevClusterError(
                    f"this host already runs the dev cluster's real node, for {owner}: the kubelet and containerd "
                    "use fixed host paths and kube-proxy owns nftables tables in the root network namespace, so a "
                    f"host runs one. Take that one down (gpu-provider devcluster down --state-dir {owner}) or "
                    "start this cluster without --real-node."
                )
            if state is not None and state.real_node:
                RealNode(other).down(state)  # left behind by a crashed run: undo it with its own ledger
        if owner is None and RUN_ROOT.exists():
            raise DevClusterError(f"{RUN_ROOT} exists without an owner file; remove it by hand if nothing uses it")
        if owner is None:
            foreign = [str(h / "kubepods") for h in cgroup_hierarchies() if (h / "kubepods").exists()]
            if foreign:
                raise DevClusterError(
                    f"another kubelet runs on this host ({foreign[0]} exists); it cannot host a real node"
                )
            for subnet in (NODE_ADDRESS, POD_SUBNET):
                out = run(["ip", "-o", "-4", "addr", "show", "to", subnet], check=False).stdout.splitlines()
                if out:
                    raise DevClusterError(f"{subnet} is already used on this host: {out[0]}")

    @staticmethod
    def _owner() -> Path | None:
        try:
            return Path(OWNER.read_text().strip())
        except OSError:
            return None

    # up -----------------------------------------------------------------------------------------------
    def up(self, state: State, bin_dir: Path, timeout: float) -> None:
        name = f"real-{self.model}-0"
        ports = {k: procs.free_port() for k in ("registry", "kubelet", "kubelet-healthz", "proxy-healthz",
                                                  "proxy-metrics", "dns-health", "dns-ready", "netpol-metrics",
                                                  "ingress", "ingress-admin", "apiserver")}  # fmt: skip
        state.ports.update({f"node-{k}": v for k, v in ports.items()})
        state.real_node = {"name": name}  # from here on, `down` undoes the node
        self.cluster.save(state)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self._host_setup()
        registry = Registry(bin_dir / "crane", ports["registry"])
        self._start_registry(state, registry)
        pause = f"{registry.host}/{PAUSE_TAG}"
        registry.push_binary(PAUSE_TAG, bin_dir / "pause")
        busybox = registry.push_busybox()
        self._start_containerd(state, bin_dir, registry, pause)
        self._cluster_objects()
        self._start_kubelet(state, bin_dir, name, ports, timeout)
        self._start_fakegpu(state, bin_dir, name, timeout)
        self._start_proxy(state, bin_dir, name, ports)
        self._publish_api(state, ports["apiserver"])
        self._start_coredns(state, bin_dir, ports)
        self._start_netpol(state, bin_dir, name, ports)
        self._start_traefik(state, bin_dir, ports)
        info = RealNodeInfo(
            name=name,
            ip=NODE_IP,
            model=self.model,
            gpus=self.gpus,
            registry=registry.host,
            ingress=f"http://127.0.0.1:{ports['ingress']}",
            busybox=busybox,
        )
        checks = {
            "kube-proxy": f"http://127.0.0.1:{ports['proxy-healthz']}/healthz",
            "coredns": f"http://127.0.0.1:{ports['dns-ready']}/ready",
            "netpol": f"http://127.0.0.1:{ports['netpol-metrics']}/metrics",
            "traefik": f"http://127.0.0.1:{ports['ingress-admin']}/ping",
        }
        for component, url in checks.items():
            self.cluster.wait(_answers(url), timeout, f"{component} to answer {url}", component)
        state.real_node = asdict(info)
        self.cluster.save(state)

    def _host_setup(self) -> None:
        self.host.own_tree(RUN_ROOT)
        OWNER.write_text(str(self.cluster.dir))
        self.host.own_tree(VAR_ROOT)
        self.host.snapshot_nft()
        for fixed in (POD_LOGS, CNI_CACHE, DEVICE_PLUGINS):
            self.host.make_dir(fixed)  # recorded only when we create it
        self.host.own_cgroup("kubepods")  # preflight made sure no other kubelet has one
        self.host.sysctl("net.ipv4.ip_forward", "1")
        self.host.sysctl("net.bridge.bridge-nf-call-iptables", "1")
        self.host.bridge(NODE_BRIDGE, NODE_ADDRESS)
        self.host.own_link(POD_BRIDGE)  # the CNI bridge plugin creates it with the first pod

    def _start_registry(self, state: State, registry: Registry) -> None:
        storage = VAR_ROOT / "registry"
        storage.mkdir(parents=True, exist_ok=True)
        self.cluster.start(state, "registry", registry.argv(storage))
        self.cluster.wait(lambda: answers(registry.port), 30, "the registry to listen", "registry")

    def _start_containerd(self, state: State, bin_dir: Path, registry: Registry, pause: str) -> None:
        hosts = self.dir / "certs.d" / registry.host
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts.toml").write_text(
            f'server = "http://{registry.host}"\n\n[host."http://{registry.host}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        cni_conf = self.dir / "net.d"
        cni_conf.mkdir(exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "gpu-provider-dev",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": POD_BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(VAR_ROOT / "cni" / "networks"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (cni_conf / "10-gpu-provider-dev.conflist").write_text(json.dumps(conflist, indent=2))
        runtimes = ""
        for handler in ("runc", "nvidia"):  # nvidia: the test double of the NVIDIA container runtime
            table = f'plugins."io.containerd.cri.v1.runtime".containerd.runtimes.{handler}'
            runtimes += (
                f'  [{table}]\n    runtime_type = "io.containerd.runc.v2"\n'
                f'    [{table}.options]\n      BinaryName = "{RUNC}"\n'
            )
        config = f"""version = 4
root = "{VAR_ROOT / "containerd"}"
state = "{RUN_ROOT / "containerd"}"
oom_score = 0
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp"]

[plugins."io.containerd.server.v1.grpc"]
  address = "{CONTAINERD_SOCK}"

[plugins."io.containerd.server.v1.ttrpc"]
  address = "{CONTAINERD_SOCK}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{VAR_ROOT / "opt"}"

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
{runtimes}  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{(bin_dir / "cni").resolve()}"]
    conf_dir = "{cni_conf}"

[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{pause}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{self.dir / "certs.d"}"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"""
        (self.dir / "containerd.toml").write_text(config)
        path = f"{bin_dir}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        self.cluster.start(
            state,
            "containerd",
            [str(bin_dir / "containerd"), f"--config={self.dir / 'containerd.toml'}", "--log-level=warn"],
            env={"PATH": path},
        )
        self.cluster.wait(CONTAINERD_SOCK.exists, 60, "containerd to listen", "containerd")

    def _cluster_objects(self) -> None:
        c = self.cluster
        c.ensure("/apis/networking.k8s.io/v1/ingressclasses", ingress.ingress_class())
        roles: dict[str, list[dict[str, Any]]] = {
            "coredns": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
            "kube-router": [
                {
                    "apiGroups": [""],
                    "resources": ["pods", "namespaces", "nodes", "services", "endpoints"],
                    "verbs": ["get", "list", "watch"],
                },
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
            "traefik": ingress.RBAC_RULES,
        }
        for name, rules in roles.items():
            role = f"devcluster:{name}"
            c.ensure(
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": role},
                    "rules": rules,
                },
            )
            subject = {"kind": "ServiceAccount", "name": name, "namespace": SYSTEM}
            if name in ("coredns", "kube-router"):  # client certificates
                subject = {"kind": "User", "name": f"devcluster-{name}", "apiGroup": "rbac.authorization.k8s.io"}
            else:
                c.ensure(
                    f"/api/v1/namespaces/{SYSTEM}/serviceaccounts",
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
                )
            c.ensure(
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": role},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": [subject],
                },
            )

    def _token(self, account: str) -> str:
        status, body = self.cluster.api(
            "POST",
            f"/api/v1/namespaces/{SYSTEM}/serviceaccounts/{account}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 30 * 86400},
            },
        )
        if status != 201:
            raise DevClusterError(f"a token for {account} was refused ({status}): {body}")
        token: str = body["status"]["token"]
        return token

    def _start_kubelet(self, state: State, bin_dir: Path, name: str, ports: dict[str, int], timeout: float) -> None:
        c, pki_dir = self.cluster, self.cluster.pki
        c.client_identity(state, "kubelet", f"system:node:{name}", ("system:nodes",), self.dir / "kubelet.kubeconfig")
        ca = pki.load_ca(pki_dir)
        serving_key = pki.key()
        serving = pki.cert(name, serving_key, ca, server=True, sans=(name, NODE_IP))
        (self.dir / "kubelet-serving.crt").write_bytes(pki.pem_cert(serving))
        write_private(self.dir / "kubelet-serving.key", pki.pem_key(serving_key))
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": NODE_IP,
            "port": ports["kubelet"],
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": ports["kubelet-healthz"],
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki_dir / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(self.dir / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(self.dir / "kubelet-serving.key"),
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": False,
            "failSwapOn": False,
            "oomScoreAdj": 0,
            "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCK}",
            "clusterDNS": [NODE_IP],
            "clusterDomain": "cluster.local",
            "resolvConf": "/etc/resolv.conf",
            "podLogsDir": str(VAR_ROOT / "pod-logs"),
            "volumePluginDir": str(VAR_ROOT / "volume-plugins"),
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "serializeImagePulls": False,
            "maxPods": 110,
            "shutdownGracePeriod": "0s",
            "registerNode": True,
        }
        (self.dir / "kubelet.yaml").write_text(json.dumps(config, indent=2))
        labels = {**gfd_labels(self.model, self.gpus), POOL_LABEL: "real", "gpu-provider.dev/real-node": "true"}
        c.start(
            state,
            "kubelet",
            [
                str(bin_dir / "kubelet"),
                f"--config={self.dir / 'kubelet.yaml'}",
                f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}",
                f"--root-dir={KUBELET_ROOT}",
                f"--hostname-override={name}",
                f"--node-ip={NODE_IP}",
                "--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
                "--v=1",
            ],
        )

        def ready() -> bool:
            status, body = c.api("GET", f"/api/v1/nodes/{name}")
            return status == 200 and node_ready(body)

        c.wait(ready, timeout, f"the real node {name} to become Ready", "kubelet")

    def _start_fakegpu(self, state: State, bin_dir: Path, name: str, timeout: float) -> None:
        self.cluster.start(
            state,
            "fakegpu",
            [
                str(bin_dir / "fakegpu"),
                f"--dir={DEVICE_PLUGINS}",
                f"--count={self.gpus}",
                f"--id-prefix=GPU-fake-{name}",
            ],
        )

        def advertised() -> bool:
            status, body = self.cluster.api("GET", f"/api/v1/nodes/{name}")
            return status == 200 and body["status"].get("allocatable", {}).get("nvidia.com/gpu") == str(self.gpus)

        self.cluster.wait(advertised, timeout, f"the kubelet to advertise {self.gpus} nvidia.com/gpu", "fakegpu")

    def _start_proxy(self, state: State, bin_dir: Path, name: str, ports: dict[str, int]) -> None:
        kubeconfig = self.dir / "kube-proxy.kubeconfig"
        self.cluster.client_identity(state, "kube-proxy", "system:kube-proxy", (), kubeconfig)
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "mode": "nftables",
            "clusterCIDR": CLUSTER_CIDR,
            "hostnameOverride": name,
            "bindAddress": NODE_IP,
            "healthzBindAddress": f"127.0.0.1:{ports['proxy-healthz']}",
            "metricsBindAddress": f"127.0.0.1:{ports['proxy-metrics']}",
            "nodePortAddresses": [f"{NODE_IP}/32"],
            "oomScoreAdj": 0,
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        (self.dir / "kube-proxy.yaml").write_text(json.dumps(config, indent=2))
        self.cluster.start(
            state, "kube-proxy", [str(bin_dir / "kube-proxy"), f"--config={self.dir / 'kube-proxy.yaml'}", "--v=1"]
        )

    def _publish_api(self, state: State, port: int) -> None:
        """Make the ``kubernetes`` Service (10.96.0.1:443) reach the API server from pods, as on any
        cluster. The API server listens on loopback only, which no pod can reach, so a socat forwarder on
        the node's address relays to it (TLS passes through: pods see the API server's own certificate,
        whose names include 10.96.0.1 and kubernetes.default.svc), and the Service's endpoints name that
        forwarder. The API server does not publish them itself (``--endpoint-reconciler-type=none``: it
        would advertise its loopback address)."""
        target = f"127.0.0.1:{state.ports['apiserver']}"
        self.cluster.start(
            state,
            "apiserver-proxy",
            [str(SOCAT), f"TCP-LISTEN:{port},bind={NODE_IP},reuseaddr,fork", f"TCP:{target}"],
        )
        self.cluster.wait(lambda: answers(port, NODE_IP), 30, "the API forwarder to listen", "apiserver-proxy")
        labels = {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "devcluster"}
        self.cluster.ensure(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": "kubernetes", "labels": labels},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            },
        )
        self.cluster.ensure(  # the legacy Endpoints too (some clients read them); not mirrored again
            "/api/v1/namespaces/default/endpoints",
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": [{"addresses": [{"ip": NODE_IP}], "ports": [{"name": "https", "port": port}]}],
            },
        )

    def _start_coredns(self, state: State, bin_dir: Path, ports: dict[str, int]) -> None:
        kubeconfig = self.dir / "coredns.kubeconfig"
        self.cluster.client_identity(state, "coredns", "devcluster-coredns", (), kubeconfig)
        corefile = f""".:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{ports["dns-health"]}
    ready 127.0.0.1:{ports["dns-ready"]}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} devcluster
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 30
}}
"""
        (self.dir / "Corefile").write_text(corefile)
        self.cluster.start(state, "coredns", [str(bin_dir / "coredns"), "-conf", str(self.dir / "Corefile")])

    def _start_netpol(self, state: State, bin_dir: Path, name: str, ports: dict[str, int]) -> None:
        """kube-router with only its network-policy controller: iptables chains and ipsets per policy."""
        kubeconfig = self.dir / "kube-router.kubeconfig"
        self.cluster.client_identity(state, "kube-router", "devcluster-kube-router", (), kubeconfig)
        self.cluster.start(
            state,
            "netpol",
            [
                str(bin_dir / "kube-router"),
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={name}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--run-loadbalancer=false",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--health-port=0",
                "--metrics-addr=127.0.0.1",
                f"--metrics-port={ports['netpol-metrics']}",
                "--v=1",
            ],
            env={"PATH": f"/usr/sbin:/sbin:{os.environ.get('PATH', '/usr/bin:/bin')}"},
        )

    def _start_traefik(self, state: State, bin_dir: Path, ports: dict[str, int]) -> None:
        config = self.dir / "traefik.yaml"
        ingress.write_config(
            config,
            web_port=ports["ingress"],
            admin_port=ports["ingress-admin"],
            api_url=f"https://127.0.0.1:{state.ports['apiserver']}",
            token=self._token("traefik"),
            ca=self.cluster.pki / "ca.crt",
        )
        self.cluster.start(state, "traefik", [str(bin_dir / "traefik"), f"--configFile={config}"])

    # down ---------------------------------------------------------------------------------------------
    def down(self, state: State) -> None:
        """Drain the node through the kubelet (so CNI DEL runs for every pod), stop its components, kill
        what outlives them (containerd shims, container processes) and undo every recorded host change."""
        c = self.cluster
        name = state.real_node.get("name", "")
        if name and c.ours(state, "kubelet") and c.ours(state, "kube-apiserver"):
            self._drain(name)
        c.stop(state, [n for n in reversed(COMPONENTS) if n in state.pids and n != "registry"])
        shim = str(Path(state.bin_dir) / "containerd-shim-runc-v2")
        procs.kill_all(procs.pids_running(shim))
        if "kubepods" in self.host.ledger.cgroup_roots:  # only pods of ours live there
            procs.kill_all(cgroup_procs("kubepods"))
        c.stop(state, ["registry"])
        problems = self.host.undo()
        state.real_node = {}
        c.save(state)
        if problems:
            raise DevClusterError("the real node left these behind on the host:\n  " + "\n  ".join(problems))

    def _drain(self, name: str, timeout: float = 60.0) -> None:
        c = self.cluster
        c.api("PATCH", f"/api/v1/nodes/{name}", {"spec": {"unschedulable": True}})
        selector = f"spec.nodeName={name}"
        status, body = c.api("GET", f"/api/v1/pods?fieldSelector={selector}")
        if status != 200:
            return
        for pod in body["items"]:
            meta = pod["metadata"]
            c.api(
                "DELETE",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 1},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = c.api("GET", f"/api/v1/pods?fieldSelector={selector}")
            if status != 200 or not body["items"]:
                return
            time.sleep(0.5)
