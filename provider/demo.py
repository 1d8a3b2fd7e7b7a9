"""``gpu-provider demo`` (``make demo``): the whole market flow on one machine, narrated as it happens.

The dev cluster (real control plane, simulated GPU nodes), a fresh mock chain and a real provider daemon
(`gpu-provider run`, as its own process); then, as a tenant: deploy an SDL (by default
sdl/examples/llm-inference.yaml: one H100 80GB SXM, persistent model storage), take the provider's
bid, send the manifest, watch the pods come up, show the lease status, close, and show the escrow
settled to the unit. The chain and the daemon stop at the end; the dev cluster keeps running (like
``make run``; ``gpu-provider devcluster down`` removes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

import sdl
from provider import tenant as tenant_ops
from provider.chain.client import ChainClient
from provider.chain.keys import Keyring
from provider.chain.port import ChainError
from provider.deploy.naming import namespace_for
from provider.devcluster import DevCluster
from provider.devcluster.procs import free_port
from provider.errors import KubeError, ProviderError
from provider.kube import Kube
from provider.money import Dec

EXAMPLE = Path(__file__).resolve().parents[1] / "sdl" / "examples" / "llm-inference.yaml"


class DemoError(ProviderError):
    """The demo could not go on; the message says where it stopped and where the logs are."""


class Narrator:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self, step: str, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {step:<9} {text}", flush=True)


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _storage(kube: Kube, name: str, gib: int) -> list[str]:
    """A StorageClass without a provisioner and one PersistentVolume for the SDL's persistent volume, both
    named for this run (a leftover of another run can never take them). KWOK "runs" the pod, so nothing
    is mounted; the claim binds as it would on a real cluster."""
    sc = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "WaitForFirstConsumer",
    }
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": f"{gib}Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": name,
            "hostPath": {"path": "/var/tmp/gpu-provider-demo"},
        },
    }
    paths = [f"/apis/storage.k8s.io/v1/storageclasses/{name}", f"/api/v1/persistentvolumes/{name}"]
    for path, obj in zip(paths, (sc, pv), strict=True):
        kube.apply(path, obj, "gpu-provider-demo")
    return paths


def _gone(kube: Kube, path: str) -> bool:
    try:
        kube.request("GET", path)
    except KubeError as e:
        return e.status == 404
    return False


def _table(status: dict[str, Any]) -> str:
    rows = [("SERVICE", "AVAILABLE", "READY", "URIS / PORTS")]
    for name, svc in status.get("services", {}).items():
        ports = [
            f"{p['externalPort']}->{p['port']}/{p['proto']}" for p in status.get("forwarded_ports", {}).get(name, [])
        ]
        rows.append(
            (name, f"{svc['available']}/{svc['total']}", str(svc["ready_replicas"]), ", ".join(svc["uris"] + ports))
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append(f"  state: {status.get('state')}  errors: {status.get('errors') or 'none'}")
    return "\n".join(lines)


async def _tenant(say: Narrator, chain_url: str, keyring: Keyring, sdl_path: Path, kube: Kube, api: str) -> None:
    text = sdl_path.read_bytes()
    parsed = sdl.parse(text, source=str(sdl_path))
    tenant = ChainClient(chain_url, keyring.get("tenant"))
    me = tenant.address
    try:
        before = Dec.parse((await tenant.account(me))["balances"].get("uact", "0"))
        deposit = Dec.parse(5_000_000)
        made = await tenant_ops.deploy(tenant, text, sdl_path.name, deposit, None, wait=0)
        dseq = int(made["dseq"])
        try:
            await _flow(say, tenant, text, sdl_path, parsed, dseq, deposit, before, kube, api)
        except BaseException:
            with contextlib.suppress(Exception):  # leave nothing running: the daemon tears the lease down
                await tenant_ops.close(tenant, dseq)
                await asyncio.sleep(5)
            raise
    finally:
        await tenant.aclose()


async def _flow(
    say: Narrator,
    tenant: ChainClient,
    text: bytes,
    sdl_path: Path,
    parsed: sdl.Deployment,
    dseq: int,
    deposit: Dec,
    before: Dec,
    kube: Kube,
    api: str,
) -> None:
    me = tenant.address
    group = parsed.groups_json()[0]
    say("order", f"deployment {dseq} from {sdl_path.name}: group {group['name']!r}, escrow {deposit} uact")
    bids = await _poll(lambda: tenant.bids(owner=me, dseq=dseq, state="open"), 60, "a bid")
    bid = bids[0]
    say("bid", f"provider {bid.id.provider[:14]}... bids {bid.price.amount} uact per block")
    await tenant_ops.accept(tenant, str(bid.id))
    say("lease", f"lease {bid.id.order.dseq}/{bid.id.order.gseq}/{bid.id.order.oseq} active")
    sent = await tenant_ops.send_manifest(tenant, text, sdl_path.name, dseq)
    say("manifest", f"accepted at {sent[0]}")
    lease = f"{dseq}/1/1"
    last = ""
    deadline = time.monotonic() + 180
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = await tenant_ops.lease_call(tenant, lease, "status")
        summary = ", ".join(f"{n} {s['available']}/{s['total']}" for n, s in status["services"].items())
        line = f"{status['state']}: {summary or 'no pods yet'}"
        if line != last:
            say("pods", line)
            last = line
        if status["state"] == "ready":
            break
        await asyncio.sleep(0.5)
    else:
        raise DemoError(f"the lease did not become ready in 180s; last status {json.dumps(status)[:500]}")
    say("ready", f"status URL: {api}/lease/{lease}/status (a JWT from `gpu-provider tenant token`)")
    print(_table(status), flush=True)
    await asyncio.sleep(3)  # a few blocks of rent
    await tenant_ops.close(tenant, dseq)
    ns = namespace_for(bid.id)
    await _poll(lambda: asyncio.to_thread(_gone, kube, f"/api/v1/namespaces/{ns}"), 120, "the namespace to go")
    say("closed", f"lease closed; namespace {ns[:12]}... deleted")
    (row,) = await tenant.lease_rows(owner=me, dseq=dseq)
    paid = before - Dec.parse((await tenant.account(me))["balances"].get("uact", "0"))
    received = Dec.parse(row["withdrawn"])
    blocks = row["closed_height"] - row["created_height"]
    check = "settled to the unit" if paid == received else "NOT SETTLED"
    say(
        "escrow",
        f"{blocks} blocks x {row['price']} uact: tenant paid {paid}, provider received {received}, "
        f"refund {deposit - paid} uact ({check})",
    )
    if paid != received:
        raise DemoError("the escrow did not settle to the unit")


async def _poll(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = await check()
        except ChainError:
            value = None
        if value:
            return value
        await asyncio.sleep(0.3)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_demo(sdl_path: Path = EXAMPLE, cluster_state: Path | None = None) -> int:
    say = Narrator()
    work = Path(tempfile.mkdtemp(prefix="gpu-provider-demo-"))
    say("cluster", "dev cluster: a real control plane with simulated GPU nodes (the first run builds it)")
    cluster = DevCluster(cluster_state) if cluster_state else DevCluster()
    running = cluster.load()
    kubeconfig = cluster.up(progress=True, real_node=bool(running and running.real_node))  # as it runs now
    kube = Kube(str(kubeconfig))
    procs: list[subprocess.Popen[bytes]] = []
    storage: list[str] = []
    ok = False
    try:
        chain_port, api_port = free_port(), free_port()
        chain_url, api = f"http://127.0.0.1:{chain_port}", f"http://127.0.0.1:{api_port}"
        with open(work / "chain.log", "ab") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "provider.cli", "chain", "serve", "--db", str(work / "chain.sqlite"),
                     "--port", str(chain_port), "--block-interval", "1"],
                    stdout=log, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        _wait(lambda: _answers(chain_url + "/status"), 30, "the mock chain")
        say("chain", f"mock chain on {chain_url} (a block a second)")
        keyring = Keyring(work / "keyring.json")
        for name in ("provider", "tenant"):
            keyring.add(name)

        async def fund() -> None:
            c = ChainClient(chain_url, keyring.get("provider"))
            await c.fund(keyring.get("provider").address, "uakt", Dec.parse(100_000_000))
            await c.fund(keyring.get("tenant").address, "uact", Dec.parse(100_000_000))
            await c.aclose()

        asyncio.run(fund())
        storage_class = f"gpu-provider-demo-{secrets.token_hex(3)}"
        storage = _storage(kube, storage_class, 200)
        config = {
            "chain": {"url": chain_url, "key": "provider", "keyring": str(work / "keyring.json")},
            "provider": {"host_uri": api, "state_dir": str(work / "state"), "metrics_address": ""},
            "inventory": {"kubeconfig": str(kubeconfig), "storage_capacity": {"beta3": "1Ti", "default": "1Ti"}},
            "api": {"address": f"127.0.0.1:{api_port}", "insecure_http": True},
            "deploy": {
                "namespace": "gpu-provider-demo",
                "storage_classes": {"beta3": storage_class},
                "ingress_domain": "ingress.localhost",
            },
        }
        (work / "provider.yaml").write_text(yaml.safe_dump(config))
        cli = [sys.executable, "-m", "provider.cli"]
        subprocess.run([*cli, "setup", "--config", str(work / "provider.yaml")], check=True, capture_output=True)
        with open(work / "daemon.log", "ab") as log:
            procs.append(
                subprocess.Popen(
                    [*cli, "run", "--config", str(work / "provider.yaml")], stdout=log, stderr=subprocess.STDOUT
                )
            )
        _wait(lambda: _answers(api + "/readyz"), 90, "the provider daemon")
        say("provider", f"daemon up: API {api}, bidding from {keyring.get('provider').address[:14]}...")
        asyncio.run(_tenant(say, chain_url, keyring, sdl_path, kube, api))
        ok = True
        say("done", "the whole flow ran: order -> bid -> lease -> manifest -> pods -> ready -> close -> settled")
        return 0
    except (ProviderError, subprocess.CalledProcessError) as e:
        print(f"demo stopped: {e}\nlogs: {work}/daemon.log, {work}/chain.log", file=sys.stderr)
        return 1
    finally:
        for p in reversed(procs):
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(30)
            if p.poll() is None:
                p.kill()
        for path in storage:
            with contextlib.suppress(KubeError):
                kube.request("DELETE", path, what="removing the demo's storage")
        if ok:
            shutil.rmtree(work, ignore_errors=True)
