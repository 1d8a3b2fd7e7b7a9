"""The dev cluster: a real local Kubernetes control plane with KWOK-simulated GPU nodes.

Real kube-apiserver, kube-controller-manager, kube-scheduler and etcd (built from the Go modules pinned
in hack/devcluster), all on loopback, with generated certificates, client-certificate authentication,
RBAC authorization and the default admission plugins. KWOK plays the kubelets of simulated nodes that
carry the labels NVIDIA GPU Feature Discovery puts on real ones. Used by the cluster tests and the demo.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provider.errors import ProviderError
from provider.files import write_private

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "hack" / "devcluster" / "build.sh"
KWOK_STAGES = REPO / "hack" / "devcluster" / "kwok-stages.yaml"
DEFAULT_STATE = Path.home() / ".cache" / "gpu-provider" / "devcluster" / "state"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
POOL_LABEL = "gpu-provider.dev/pool"


class DevClusterError(ProviderError):
    """Something the operator of the dev cluster must fix; the message says what."""


@dataclass(frozen=True, slots=True)
class GpuModel:
    """What GPU Feature Discovery reports for one GPU model (values seen on real nodes)."""

    product: str  # nvidia.com/gpu.product (NVML name, spaces -> '-')
    memory_mib: int  # nvidia.com/gpu.memory
    family: str
    compute: tuple[int, int]
    machine: str
    cpu: int
    memory_gib: int


GPU_MODELS: dict[str, GpuModel] = {
    "h100": GpuModel("NVIDIA-H100-80GB-HBM3", 81559, "hopper", (9, 0), "PowerEdge-XE9680", 192, 2048),
    "h200": GpuModel("NVIDIA-H200", 143771, "hopper", (9, 0), "PowerEdge-XE9680", 192, 2048),
    "a100": GpuModel("NVIDIA-A100-SXM4-80GB", 81920, "ampere", (8, 0), "DGX-A100", 256, 2048),
    "rtx4090": GpuModel("NVIDIA-GeForce-RTX-4090", 24564, "ada-lovelace", (8, 9), "SYS-4029GP-TRT", 64, 256),
}
DEFAULT_POOL = "h100:4x8,a100:2x8,rtx4090:2x4,cpu:1"
DRIVER = (580, 159, 4)
CUDA = (13, 0)


@dataclass(frozen=True, slots=True)
class NodePlan:
    name: str
    model: str | None  # None: CPU-only
    gpus: int

    def manifest(self, taint: bool) -> dict[str, Any]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": f"sim-{self.model or 'cpu'}",
            POOL_LABEL: self.model or "cpu",
            "type": "kwok",
        }
        cpu, mem_gib = 32, 128
        if self.model is not None:
            g = GPU_MODELS[self.model]
            cpu, mem_gib = g.cpu, g.memory_gib
            labels.update(
                {
                    "nvidia.com/gpu.present": "true",
                    "nvidia.com/gpu.product": g.product,
                    "nvidia.com/gpu.memory": str(g.memory_mib),
                    "nvidia.com/gpu.count": str(self.gpus),
                    "nvidia.com/gpu.replicas": "1",
                    "nvidia.com/gpu.sharing-strategy": "none",
                    "nvidia.com/gpu.family": g.family,
                    "nvidia.com/gpu.compute.major": str(g.compute[0]),
                    "nvidia.com/gpu.compute.minor": str(g.compute[1]),
                    "nvidia.com/gpu.machine": g.machine,
                    "nvidia.com/gpu.mode": "compute",
                    "nvidia.com/mig.capable": "true" if g.compute[0] >= 8 and self.model != "rtx4090" else "false",
                    "nvidia.com/mps.capable": "false",
                    "nvidia.com/cuda.driver-version.major": str(DRIVER[0]),
                    "nvidia.com/cuda.driver-version.minor": str(DRIVER[1]),
                    "nvidia.com/cuda.driver-version.revision": f"{DRIVER[2]:02d}",
                    "nvidia.com/cuda.driver-version.full": ".".join(
                        f"{v:02d}" if i == 2 else str(v) for i, v in enumerate(DRIVER)
                    ),
                    "nvidia.com/cuda.runtime-version.major": str(CUDA[0]),
                    "nvidia.com/cuda.runtime-version.minor": str(CUDA[1]),
                    "nvidia.com/cuda.runtime-version.full": f"{CUDA[0]}.{CUDA[1]}",
                }
            )
        resources = {
            "cpu": str(cpu),
            "memory": f"{mem_gib}Gi",
            "ephemeral-storage": "3500Gi",
            "pods": "110",
        }
        if self.gpus:
            resources["nvidia.com/gpu"] = str(self.gpus)
        spec: dict[str, Any] = {}
        if taint and self.model is not None:
            spec["taints"] = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
            "spec": spec,
            "status": {"capacity": resources, "allocatable": resources},
        }


def parse_pool(spec: str) -> list[NodePlan]:
    """``"h100:4x8,a100:2x8,rtx4090:2x4,cpu:1"`` -> node plans (model:NODESxGPUS, cpu:NODES)."""
    plans: list[NodePlan] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        model, sep, shape = item.partition(":")
        if not sep:
            raise DevClusterError(f"pool entry {item!r}: write MODEL:NODESxGPUS (e.g. h100:4x8) or cpu:NODES")
        try:
            if model == "cpu":
                nodes, gpus = int(shape), 0
            else:
                if model not in GPU_MODELS:
                    raise DevClusterError(
                        f"pool entry {item!r}: unknown GPU model {model!r}; known: {', '.join(GPU_MODELS)}, cpu"
                    )
                n, _, g = shape.partition("x")
                nodes, gpus = int(n), int(g)
        except ValueError:
            raise DevClusterError(f"pool entry {item!r}: counts must be whole numbers") from None
        if nodes < 0 or gpus < 0 or (model != "cpu" and gpus == 0):
            raise DevClusterError(f"pool entry {item!r}: counts must be positive")
        for i in range(nodes):
            plans.append(NodePlan(f"sim-{model}-{i}", None if model == "cpu" else model, gpus))
    return plans


# -- certificates ------------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: Any) -> bytes:
    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem


def _cert(
    subject_cn: str,
    key: Any,
    issuer: tuple[x509.Certificate, Any] | None,
    *,
    orgs: tuple[str, ...] = (),
    server: bool = False,
    sans: tuple[str, ...] = (),
) -> x509.Certificate:
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        + [x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]
    )
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            entries: list[x509.GeneralName] = []
            for san in sans:
                try:
                    entries.append(x509.IPAddress(ipaddress.ip_address(san)))
                except ValueError:
                    entries.append(x509.DNSName(san))
            builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _kubeconfig(server: str, ca: bytes, cert: bytes, key: bytes, user: str) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "devcluster", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
            "users": [{"name": user, "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
            "contexts": [{"name": "devcluster", "context": {"cluster": "devcluster", "user": user}}],
            "current-context": "devcluster",
        },
        indent=2,
    )


# -- the cluster -----------------------------------------------------------------------------------


@dataclass
class State:
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    pool: str = DEFAULT_POOL
    taint: bool = False
    bin_dir: str = ""
    commands: dict[str, str] = field(default_factory=dict)  # component -> the binary it was started from


MARKER = ".gpu-provider-devcluster"  # in every state directory `up` created; `down` deletes nothing else


def _command_of(pid: int) -> str:
    """The executable a process was started as (argv[0] from /proc), "" when it cannot be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: Iterable[int], timeout: float) -> bool:
    """Wait until none of ``pids`` is alive, reaping those that are our children. True when all are gone."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        for pid in pending:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        pending = [p for p in pending if _alive(p)]
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def build_binaries() -> Path:
    """Build (once per pin set) the real components; returns their directory."""
    if not BUILD_SCRIPT.is_file():
        raise DevClusterError(f"{BUILD_SCRIPT} not found: the dev cluster needs a checkout of the repository")
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False, timeout=3600)
    if proc.returncode != 0:
        raise DevClusterError(f"building the components failed:\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


class DevCluster:
    def __init__(self, state_dir: Path = DEFAULT_STATE) -> None:
        self.dir = state_dir
        self.pki = state_dir / "pki"
        self.logs = state_dir / "logs"
        self.state_file = state_dir / "state.json"
        self.kubeconfig = state_dir / "admin.kubeconfig"

    # state ------------------------------------------------------------------------------------
    def _load(self) -> State | None:
        try:
            return State(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _save(self, state: State) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_file)

    # api --------------------------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        state = self._load()
        if state is None:
            raise DevClusterError("the dev cluster is not up; run: gpu-provider devcluster up")
        url = f"https://127.0.0.1:{state.ports['apiserver']}{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw.startswith(b"{") else raw.decode()
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw.startswith(b"{") else raw.decode(errors="replace")

    def _ready(self) -> bool:
        try:
            status, _ = self.api("GET", "/readyz", timeout=3)
        except (OSError, DevClusterError):
            return False
        return status == 200

    # lifecycle ----------------------------------------------------------------------------------
    def running(self) -> dict[str, bool]:
        state = self._load()
        if state is None:
            return dict.fromkeys(COMPONENTS, False)
        return {c: self._ours(state, c) for c in COMPONENTS}

    def _made_by_us(self) -> bool:
        """Our marker, or (from versions before the marker) our own state file beside our pki."""
        return (self.dir / MARKER).exists() or (self.state_file.is_file() and self.pki.is_dir())

    @staticmethod
    def _ours(state: State, component: str) -> bool:
        """Is the recorded process alive and still the one we started (not a PID reused since)?"""
        pid = state.pids.get(component)
        if not pid or not _alive(pid):
            return False
        expected = state.commands.get(component)
        return bool(expected) and _command_of(pid) == expected

    def up(self, pool: str = DEFAULT_POOL, taint: bool = False, timeout: float = 180.0) -> Path:
        plans = parse_pool(pool)
        if self.dir.exists() and any(self.dir.iterdir()) and not self._made_by_us():
            raise DevClusterError(
                f"{self.dir} exists and was not made by the dev cluster; choose an empty or new --state-dir"
            )
        state = self._load()
        if state is not None and all(self.running().values()):
            # already running: a slow /readyz under load is no reason to restart it
            self._wait(self._ready, timeout, "the running API server to answer /readyz", "kube-apiserver")
            self._ensure_nodes(plans, taint)
            self._wait_nodes_ready(plans, timeout)
            return self.kubeconfig
        if state is not None:
            self.down()
        bin_dir = build_binaries()
        for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
            if not (bin_dir / name).is_file():
                raise DevClusterError(f"{bin_dir / name} is missing; remove {bin_dir.parent} and run up again")
        state = State(
            ports={k: _free_port() for k in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler")},
            pool=pool,
            taint=taint,
            bin_dir=str(bin_dir),
        )
        for d in (self.dir, self.pki, self.logs):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            d.chmod(0o700)
        (self.dir / MARKER).write_text("made by gpu-provider devcluster up; `down` removes this directory\n")
        self._save(state)
        self._write_pki(state)
        try:
            self._start_all(state, bin_dir)
            self._wait(self._ready, timeout, "the API server to become ready", "kube-apiserver")
            self._ensure_nodes(plans, taint)
            self._wait_nodes_ready(plans, timeout)
        except BaseException:
            self.down()
            raise
        return self.kubeconfig

    def _write_pki(self, state: State) -> None:
        ca_key = _key()
        ca = _cert("gpu-provider-devcluster-ca", ca_key, None)
        (self.pki / "ca.crt").write_bytes(_pem_cert(ca))
        write_private(self.pki / "ca.key", _pem_key(ca_key))
        issuer = (ca, ca_key)
        server_key = _key()
        sans = ("127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "10.96.0.1")
        server = _cert("kube-apiserver", server_key, issuer, server=True, sans=sans)
        (self.pki / "apiserver.crt").write_bytes(_pem_cert(server))
        write_private(self.pki / "apiserver.key", _pem_key(server_key))
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_private(self.pki / "sa.key", _pem_key(sa_key))
        (self.pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        server_url = f"https://127.0.0.1:{state.ports['apiserver']}"
        users = {
            "admin": ("devcluster-admin", ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
            "kwok": ("devcluster-kwok", ("system:masters",)),
        }
        ca_pem = _pem_cert(ca)
        for name, (cn, orgs) in users.items():
            key = _key()
            cert = _pem_cert(_cert(cn, key, issuer, orgs=orgs))
            (self.pki / f"{name}.crt").write_bytes(cert)
            write_private(self.pki / f"{name}.key", _pem_key(key))
            path = self.kubeconfig if name == "admin" else self.dir / f"{name}.kubeconfig"
            write_private(path, _kubeconfig(server_url, ca_pem, cert, _pem_key(key), cn).encode())

    def _start(self, state: State, name: str, argv: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child process
        try:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            log.close()
        state.pids[name] = proc.pid
        state.commands[name] = argv[0]
        self._save(state)

    def _start_all(self, state: State, bin_dir: Path) -> None:
        p, pki, d = state.ports, self.pki, self.dir
        etcd_url = f"http://127.0.0.1:{p['etcd']}"
        peer_url = f"http://127.0.0.1:{p['etcd-peer']}"
        self._start(
            state,
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=devcluster",
                f"--data-dir={d / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=devcluster={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._start(
            state,
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={p['apiserver']}",
                f"--cert-dir={d / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
            ],
        )
        self._wait(self._ready, 120, "the API server to become ready", "kube-apiserver")
        for name, port_key, cn in (
            ("kube-controller-manager", "controller-manager", "controller-manager"),
            ("kube-scheduler", "scheduler", "scheduler"),
        ):
            kubeconfig = d / f"{cn}.kubeconfig"
            argv = [
                str(bin_dir / name),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={p[port_key]}",
                "--leader-elect=false",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--v=1",
            ]
            if name == "kube-controller-manager":
                argv += [
                    "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={pki / 'ca.crt'}",
                    f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                    f"--cluster-signing-key-file={pki / 'ca.key'}",
                    "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
                ]
            self._start(state, name, argv)
        self._start(
            state,
            "kwok",
            [str(bin_dir / "kwok"), f"--kubeconfig={d / 'kwok.kubeconfig'}", f"--config={KWOK_STAGES}"],
        )

    def _wait(self, check: Any, timeout: float, what: str, component: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            dead = [c for c, ok in self.running().items() if not ok and c in (self._load() or State()).pids]
            if dead:
                raise DevClusterError(
                    f"{', '.join(dead)} exited; see {self.logs}/{dead[0]}.log:\n{self._tail(dead[0])}"
                )
            time.sleep(0.2)
        hint = f"; see {self.logs / (component + '.log')}:\n{self._tail(component)}" if component else ""
        raise DevClusterError(f"timed out after {timeout:.0f}s waiting for {what}{hint}")

    def _tail(self, component: str) -> str:
        try:
            return "\n".join((self.logs / f"{component}.log").read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return "(no log)"

    def _ensure_nodes(self, plans: list[NodePlan], taint: bool) -> None:
        for plan in plans:
            status, body = self.api("POST", "/api/v1/nodes", plan.manifest(taint))
            if status not in (201, 409):
                raise DevClusterError(f"creating node {plan.name} failed ({status}): {body}")

    def nodes(self) -> list[dict[str, Any]]:
        status, body = self.api("GET", "/api/v1/nodes")
        if status != 200:
            raise DevClusterError(f"listing nodes failed ({status}): {body}")
        items: list[dict[str, Any]] = body["items"]
        return items

    def _wait_nodes_ready(self, plans: list[NodePlan], timeout: float) -> None:
        wanted = {p.name for p in plans}

        def all_ready() -> bool:
            ready = {n["metadata"]["name"] for n in self.nodes() if _node_ready(n)}
            return wanted <= ready

        self._wait(all_ready, timeout, f"{len(wanted)} simulated nodes to become Ready", "kwok")

    def down(self) -> None:
        """Stop the processes this cluster started (checked against /proc/PID/cmdline, so a PID reused
        after a reboot is never signalled) and delete its state directory (only one `up` created)."""
        if self.dir.exists() and not self._made_by_us():
            raise DevClusterError(f"{self.dir} was not created by `devcluster up` (no {MARKER}); not deleting it")
        state = self._load()
        pids = {c: pid for c, pid in (state.pids if state else {}).items() if state and self._ours(state, c)}
        for name in reversed(COMPONENTS):
            pid = pids.get(name)
            if pid and _alive(pid):
                try:
                    os.killpg(pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        _wait_gone(pids.values(), 15)
        for pid in pids.values():
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        if not _wait_gone(pids.values(), 10):
            raise DevClusterError(
                f"processes {[p for p in pids.values() if _alive(p)]} survived SIGKILL; see {self.logs}"
            )
        if self.dir.exists():
            shutil.rmtree(self.dir)

    def status(self) -> dict[str, Any]:
        state = self._load()
        if state is None:
            return {"up": False, "state_dir": str(self.dir)}
        out: dict[str, Any] = {
            "up": self._ready(),
            "state_dir": str(self.dir),
            "kubeconfig": str(self.kubeconfig),
            "server": f"https://127.0.0.1:{state.ports.get('apiserver')}",
            "components": {c: ("running" if ok else "stopped") for c, ok in self.running().items()},
        }
        if out["up"]:
            out["nodes"] = [
                {
                    "name": n["metadata"]["name"],
                    "ready": _node_ready(n),
                    "gpu_product": n["metadata"].get("labels", {}).get("nvidia.com/gpu.product", ""),
                    "gpus": n["status"].get("allocatable", {}).get("nvidia.com/gpu", "0"),
                }
                for n in self.nodes()
            ]
        return out


def _node_ready(node: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in node.get("status", {}).get("conditions", [])
    )


def cli_command(args: argparse.Namespace) -> int:
    """Runs ``gpu-provider devcluster up|down|status``."""
    cluster = DevCluster(Path(args.state_dir) if args.state_dir else DEFAULT_STATE)
    if args.devcluster_command == "up":
        started = time.monotonic()
        path = cluster.up(args.pool or DEFAULT_POOL, taint=args.taint, timeout=args.timeout)
        print(path)
        print(
            f"devcluster: ready in {time.monotonic() - started:.1f}s; export KUBECONFIG={path}",
            file=sys.stderr,
        )
        return 0
    if args.devcluster_command == "down":
        cluster.down()
        return 0
    status = cluster.status()
    print(json.dumps(status, indent=2))
    return 0 if status.get("up") else 1
