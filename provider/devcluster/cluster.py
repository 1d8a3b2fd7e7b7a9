"""The dev cluster's control plane and KWOK pool, and its lifecycle (up, down, status).

Real kube-apiserver, kube-controller-manager, kube-scheduler and etcd (built from the Go modules pinned
in hack/devcluster), all on loopback, with generated certificates, client-certificate authentication,
RBAC authorization and the default admission plugins. KWOK plays the kubelets of simulated nodes. With
``real_node`` one real worker node joins (provider.devcluster.realnode), with a local registry
(provider.devcluster.registry) and an ingress controller (provider.devcluster.ingress).
"""

from __future__ import annotations

import json
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from provider.devcluster import pki, procs
from provider.devcluster.build import KWOK_STAGES, build_binaries
from provider.devcluster.errors import DevClusterError
from provider.devcluster.pool import DEFAULT_POOL, NodePlan, parse_pool
from provider.files import write_private

DEFAULT_STATE = Path.home() / ".cache" / "gpu-provider" / "devcluster" / "state"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
MARKER = ".gpu-provider-devcluster"  # in every state directory `up` created; `down` deletes nothing else


@dataclass
class State:
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    pool: str = DEFAULT_POOL
    taint: bool = False
    bin_dir: str = ""
    commands: dict[str, str] = field(default_factory=dict)  # component -> the binary it was started from
    real_node: dict[str, Any] = field(default_factory=dict)  # empty: no real node (see realnode.RealNodeInfo)


class DevCluster:
    def __init__(self, state_dir: Path = DEFAULT_STATE) -> None:
        self.dir = state_dir
        self.pki = state_dir / "pki"
        self.logs = state_dir / "logs"
        self.state_file = state_dir / "state.json"
        self.kubeconfig = state_dir / "admin.kubeconfig"
        self.audit_log = self.logs / "audit.log"  # service-account requests (tests prove RBAC from it)

    # state ------------------------------------------------------------------------------------
    def load(self) -> State | None:
        try:
            return State(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, state: State) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_private(self.state_file, json.dumps(asdict(state), indent=2).encode())

    # api --------------------------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
        state = self.load()
        if state is None:
            raise DevClusterError("the dev cluster is not up; run: gpu-provider devcluster up")
        url = f"https://127.0.0.1:{state.ports['apiserver']}{path}"
        data = None if body is None else json.dumps(body).encode()
        content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=timeout) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw.startswith(b"{") else raw.decode()
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw.startswith(b"{") else raw.decode(errors="replace")

    def ensure(self, path: str, obj: dict[str, Any]) -> None:
        """Create ``obj`` by POSTing to the collection ``path``; an existing object is left as it is."""
        status, body = self.api("POST", path, obj)
        if status not in (200, 201, 409):
            name = obj.get("metadata", {}).get("name")
            raise DevClusterError(f"creating {obj.get('kind')} {name} failed ({status}): {body}")

    def _ready(self) -> bool:
        try:
            status, _ = self.api("GET", "/readyz", timeout=3)
        except (OSError, DevClusterError):
            return False
        return status == 200

    # processes ----------------------------------------------------------------------------------
    def start(self, state: State, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        state.pids[name] = procs.start(argv, self.logs / f"{name}.log", env)
        state.commands[name] = argv[0]
        self.save(state)

    def restart(self, component: str, timeout: float = 120.0) -> None:
        """Stop one running component and start it again with the same command line and environment
        (tests use it to prove the provider recovers from an API server restart)."""
        state = self.load()
        if state is None or not self.ours(state, component):
            raise DevClusterError(f"{component} is not running in this dev cluster")
        argv, env = procs.argv_and_env(state.pids[component])
        self.stop(state, [component])
        state.pids[component] = procs.start(argv, self.logs / f"{component}.log", env)
        self.save(state)
        if component == "kube-apiserver":
            self.wait(self._ready, timeout, "the restarted API server to become ready", component)

    @staticmethod
    def ours(state: State, component: str) -> bool:
        """Is the recorded process alive and still the one we started (not a PID reused since)?"""
        pid = state.pids.get(component)
        if not pid or not procs.alive(pid):
            return False
        expected = state.commands.get(component)
        return bool(expected) and procs.command_of(pid) == expected

    def running(self) -> dict[str, bool]:
        state = self.load()
        if state is None:
            return dict.fromkeys(COMPONENTS, False)
        names = list(COMPONENTS) + [c for c in state.pids if c not in COMPONENTS]
        return {c: self.ours(state, c) for c in names}

    def stop(self, state: State, names: list[str]) -> None:
        """Stop the named components (those still ours), TERM then KILL."""
        pids = [state.pids[n] for n in names if n in state.pids and self.ours(state, n)]
        survivors = procs.stop(pids)
        if survivors:
            raise DevClusterError(f"processes {survivors} survived SIGKILL; see {self.logs}")
        for n in names:
            state.pids.pop(n, None)
        self.save(state)

    def wait(self, check: Callable[[], bool], timeout: float, what: str, component: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            state = self.load() or State()
            # within one `up` a recorded PID is the process just started (it may still be exec-ing)
            dead = [c for c, pid in state.pids.items() if not procs.alive(pid)]
            if dead:
                raise DevClusterError(f"{', '.join(dead)} exited; see {self.logs}/{dead[0]}.log:\n{self.tail(dead[0])}")
            time.sleep(0.2)
        hint = f"; see {self.logs / (component + '.log')}:\n{self.tail(component)}" if component else ""
        raise DevClusterError(f"timed out after {timeout:.0f}s waiting for {what}{hint}")

    def tail(self, component: str, lines: int = 15) -> str:
        try:
            return "\n".join((self.logs / f"{component}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # lifecycle ----------------------------------------------------------------------------------
    def _made_by_us(self) -> bool:
        """Our marker, or (from versions before the marker) our own state file beside our pki."""
        return (self.dir / MARKER).exists() or (self.state_file.is_file() and self.pki.is_dir())

    def up(
        self,
        pool: str = DEFAULT_POOL,
        taint: bool = False,
        timeout: float = 180.0,
        real_node: bool = False,
        real_node_gpus: str = "h200:2",
        progress: bool = False,
    ) -> Path:
        plans = parse_pool(pool)
        if self.dir.exists() and any(self.dir.iterdir()) and not self._made_by_us():
            raise DevClusterError(
                f"{self.dir} exists and was not made by the dev cluster; choose an empty or new --state-dir"
            )
        state = self.load()
        if state is not None and all(self.running().values()) and bool(state.real_node) == real_node:
            # already running: a slow /readyz under load is no reason to restart it
            self.wait(self._ready, timeout, "the running API server to answer /readyz", "kube-apiserver")
            self._ensure_nodes(plans, taint)
            self._wait_nodes_ready(plans, timeout)
            return self.kubeconfig
        if state is not None:
            self.down()
        node = None
        if real_node:
            from provider.devcluster.realnode import RealNode

            node = RealNode(self, real_node_gpus)
            node.preflight()  # before the long build: refuse early when the host cannot run one
        bin_dir = build_binaries(real_node=real_node, progress=progress)
        state = State(
            ports={k: procs.free_port() for k in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler")},
            pool=pool,
            taint=taint,
            bin_dir=str(bin_dir),
        )
        for d in (self.dir, self.pki, self.logs):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            d.chmod(0o700)
        (self.dir / MARKER).write_text("made by gpu-provider devcluster up; `down` removes this directory\n")
        self.save(state)
        self._write_pki(state)
        try:
            self._start_control_plane(state, bin_dir)
            self.wait(self._ready, timeout, "the API server to become ready", "kube-apiserver")
            self._ensure_nodes(plans, taint)
            self._wait_nodes_ready(plans, timeout)
            if node is not None:
                node.up(state, bin_dir, timeout)
        except BaseException:
            self.down()
            raise
        return self.kubeconfig

    def _write_pki(self, state: State) -> None:
        ca_key = pki.key()
        ca = pki.cert("gpu-provider-devcluster-ca", ca_key, None)
        (self.pki / "ca.crt").write_bytes(pki.pem_cert(ca))
        write_private(self.pki / "ca.key", pki.pem_key(ca_key))
        issuer = (ca, ca_key)
        server_key = pki.key()
        sans = ("127.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "10.96.0.1")
        server = pki.cert("kube-apiserver", server_key, issuer, server=True, sans=sans)
        (self.pki / "apiserver.crt").write_bytes(pki.pem_cert(server))
        write_private(self.pki / "apiserver.key", pki.pem_key(server_key))
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_private(self.pki / "sa.key", pki.pem_key(sa_key))
        (self.pki / "sa.pub").write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        # the API server's client certificate towards kubelets (logs, exec, port-forward, nodes/proxy)
        kc_key = pki.key()
        kc = pki.cert("kube-apiserver-kubelet-client", kc_key, issuer, orgs=("system:masters",))
        (self.pki / "kubelet-client.crt").write_bytes(pki.pem_cert(kc))
        write_private(self.pki / "kubelet-client.key", pki.pem_key(kc_key))
        users = {
            "admin": ("devcluster-admin", ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
            "kwok": ("devcluster-kwok", ("system:masters",)),
        }
        for name, (cn, orgs) in users.items():
            path = self.kubeconfig if name == "admin" else self.dir / f"{name}.kubeconfig"
            self.client_identity(state, name, cn, orgs, path)

    def client_identity(self, state: State, name: str, cn: str, orgs: tuple[str, ...], path: Path) -> None:
        """A client certificate for ``cn`` (in groups ``orgs``) signed by the cluster CA, and its kubeconfig."""
        ca = pki.load_ca(self.pki)
        key = pki.key()
        cert = pki.pem_cert(pki.cert(cn, key, ca, orgs=orgs))
        (self.pki / f"{name}.crt").write_bytes(cert)
        write_private(self.pki / f"{name}.key", pki.pem_key(key))
        server_url = f"https://127.0.0.1:{state.ports['apiserver']}"
        ca_pem = (self.pki / "ca.crt").read_bytes()
        write_private(path, pki.kubeconfig(server_url, ca_pem, cert, pki.pem_key(key), cn).encode())

    def _audit_policy(self) -> Path:
        """Metadata of every request made with a service account outside kube-system (the control plane's
        own controllers use kube-system accounts), nothing else: enough to prove which verbs an installed
        workload used and that none was denied, without logging the cluster's own chatter."""
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [
                {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
                {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
                {"level": "None"},
            ],
        }
        path = self.dir / "audit-policy.json"
        path.write_text(json.dumps(policy, indent=2))
        return path

    def audit_events(self, user: str) -> list[dict[str, Any]]:
        """The audit log's events for one user (``system:serviceaccount:NS:NAME``), oldest first."""
        events = []
        rotated = sorted(self.logs.glob("audit-*.log"), key=lambda p: p.stat().st_mtime)  # lumberjack's names
        for path in [*rotated, self.audit_log]:
            try:
                lines = path.read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                event = json.loads(line)
                if event.get("user", {}).get("username") == user:
                    events.append(event)
        return events

    def _start_control_plane(self, state: State, bin_dir: Path) -> None:
        p, pki_dir, d = state.ports, self.pki, self.dir
        etcd_url = f"http://127.0.0.1:{p['etcd']}"
        peer_url = f"http://127.0.0.1:{p['etcd-peer']}"
        self.start(
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
        self.start(
            state,
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={p['apiserver']}",
                f"--cert-dir={d / 'apiserver-certs'}",
                f"--tls-cert-file={pki_dir / 'apiserver.crt'}",
                f"--tls-private-key-file={pki_dir / 'apiserver.key'}",
                f"--client-ca-file={pki_dir / 'ca.crt'}",
                f"--kubelet-client-certificate={pki_dir / 'kubelet-client.crt'}",
                f"--kubelet-client-key={pki_dir / 'kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--service-account-key-file={pki_dir / 'sa.pub'}",
                f"--service-account-signing-key-file={pki_dir / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
                f"--audit-policy-file={self._audit_policy()}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=200",
                "--audit-log-maxbackup=1",
                "--v=1",
            ],
        )
        self.wait(self._ready, 120, "the API server to become ready", "kube-apiserver")
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
                    f"--service-account-private-key-file={pki_dir / 'sa.key'}",
                    f"--root-ca-file={pki_dir / 'ca.crt'}",
                    f"--cluster-signing-cert-file={pki_dir / 'ca.crt'}",
                    f"--cluster-signing-key-file={pki_dir / 'ca.key'}",
                    "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
                ]
            self.start(state, name, argv)
        self.start(
            state,
            "kwok",
            [str(bin_dir / "kwok"), f"--kubeconfig={d / 'kwok.kubeconfig'}", f"--config={KWOK_STAGES}"],
        )

    def _ensure_nodes(self, plans: list[NodePlan], taint: bool) -> None:
        # what the NVIDIA GPU operator installs on a real GPU cluster, so GPU pods are admitted here too
        # (the real node's containerd maps the handler to runc; KWOK nodes run no containers at all)
        self.ensure(
            "/apis/node.k8s.io/v1/runtimeclasses",
            {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": "nvidia"},
                "handler": "nvidia",
            },
        )
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
            ready = {n["metadata"]["name"] for n in self.nodes() if node_ready(n)}
            return wanted <= ready

        self.wait(all_ready, timeout, f"{len(wanted)} simulated nodes to become Ready", "kwok")

    def down(self) -> None:
        """Take the real node down (undoing what it changed on the host), stop the processes this cluster
        started (checked against /proc/PID/cmdline, so a PID reused after a reboot is never signalled) and
        delete its state directory (only one `up` created)."""
        if self.dir.exists() and not self._made_by_us():
            raise DevClusterError(f"{self.dir} was not created by `devcluster up` (no {MARKER}); not deleting it")
        state = self.load()
        if state is not None and state.real_node:
            from provider.devcluster.realnode import RealNode

            RealNode(self).down(state)
        if state is not None:
            self.stop(state, list(reversed(state.pids)))  # newest first; the real node's are gone already
        if self.dir.exists():
            shutil.rmtree(self.dir)

    def status(self) -> dict[str, Any]:
        state = self.load()
        if state is None:
            return {"up": False, "state_dir": str(self.dir)}
        out: dict[str, Any] = {
            "up": self._ready(),
            "state_dir": str(self.dir),
            "kubeconfig": str(self.kubeconfig),
            "server": f"https://127.0.0.1:{state.ports.get('apiserver')}",
            "components": {c: ("running" if ok else "stopped") for c, ok in self.running().items()},
        }
        if state.real_node:
            out["real_node"] = state.real_node
        if out["up"]:
            out["nodes"] = [
                {
                    "name": n["metadata"]["name"],
                    "ready": node_ready(n),
                    "gpu_product": n["metadata"].get("labels", {}).get("nvidia.com/gpu.product", ""),
                    "gpus": n["status"].get("allocatable", {}).get("nvidia.com/gpu", "0"),
                }
                for n in self.nodes()
            ]
        return out


def node_ready(node: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in node.get("status", {}).get("conditions", [])
    )
