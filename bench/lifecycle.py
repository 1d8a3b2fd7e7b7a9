"""Benchmark the lease lifecycle on a KWOK dev cluster of its own, with a real daemon and mock chain.

1. lease won -> all replicas Available, p50/p99, for N concurrent one-GPU leases (tenant accepts every
   bid at once, then sends every manifest), against the floor: the same objects (the builder's output)
   applied straight to the API server by 16 threads, waiting for Available, from one common start;
2. GET /lease/.../status latency p50/p99 and throughput with C concurrent clients (one event loop);
3. the daemon's resident memory (VmRSS) idle, and with M active leases (CPU-only, the same lease
   machinery: a GPU adds no per-lease state).

Prints figures; asserts nothing about time. Usage: python bench/lifecycle.py [--leases 100] [--clients
200] [--rss-leases 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import yaml  # noqa: E402

import sdl  # noqa: E402
from provider import tenant as tenant_ops  # noqa: E402
from provider.chain.client import ChainClient  # noqa: E402
from provider.chain.keys import Keyring  # noqa: E402
from provider.chain.types import LeaseId, OrderId  # noqa: E402
from provider.deploy import naming  # noqa: E402
from provider.deploy.builder import DeploySettings, LeaseRef, build_objects  # noqa: E402
from provider.deploy.deployer import path_of  # noqa: E402
from provider.devcluster import DevCluster  # noqa: E402
from provider.devcluster.procs import free_port  # noqa: E402
from provider.kube import Kube  # noqa: E402
from provider.money import Dec  # noqa: E402
from sdl.manifest import manifest_from_json  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def say(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


def sdl_text(gpus: int) -> bytes:
    gpu = {"units": gpus, "attributes": {"vendor": {"nvidia": [{"model": "h100"}]}}} if gpus else {"units": 0}
    doc = {
        "version": "2.0",
        "services": {"app": {"image": "registry.invalid/app:1", "expose": [{"port": 8080, "to": [{"global": True}]}]}},
        "profiles": {
            "compute": {
                "app": {
                    "resources": {
                        "cpu": {"units": 0.1},
                        "memory": {"size": "64Mi"},
                        "storage": {"size": "64Mi"},
                        "gpu": gpu,
                    }
                }
            },
            "placement": {"dc": {"pricing": {"app": {"denom": "uact", "amount": 1_000_000}}}},
        },
        "deployment": {"app": {"dc": {"profile": "app", "count": 1}}},
    }
    return json.dumps(doc).encode()


class AvailableWatch:
    """Records when each lease namespace's workload first reports all replicas available (a watch)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:  # the cluster went down at the end of the run
            return

    def _follow(self) -> None:
        selector = f"{naming.MANAGED_BY[0]}={naming.MANAGED_BY[1]}"
        version = self.kube.request("GET", "/apis/apps/v1/deployments", query=[("labelSelector", selector)])[
            "metadata"
        ]["resourceVersion"]
        while not self._stop.is_set():
            for ev in self.kube.watch(
                "/apis/apps/v1/deployments", [("labelSelector", selector), ("resourceVersion", version)], 30
            ):
                obj = ev.get("object", {})
                version = obj.get("metadata", {}).get("resourceVersion", version)
                ns = obj.get("metadata", {}).get("namespace", "")
                want = obj.get("spec", {}).get("replicas", 1)
                if ns and ns not in self.at and obj.get("status", {}).get("availableReplicas", 0) >= want:
                    self.at[ns] = time.monotonic()

    def wait(self, names: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not names <= set(self.at) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not names <= set(self.at):
            raise SystemExit(f"only {len(names & set(self.at))}/{len(names)} became available in {timeout:.0f}s")


class Bench:
    def __init__(self, work: Path, pool: str) -> None:
        self.work = work
        self.cluster = DevCluster(work / "cluster")
        t0 = time.monotonic()
        self.kubeconfig = self.cluster.up(pool=pool, timeout=600)
        say(f"KWOK dev cluster ({pool}) up in {time.monotonic() - t0:.0f}s")
        self.kube = Kube(str(self.kubeconfig))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.chain_url = f"http://127.0.0.1:{free_port()}"
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.keyring = Keyring(work / "keyring.json")
        for name in ("provider", "tenant"):
            self.keyring.add(name)

    def start(self) -> None:
        cli = [sys.executable, "-m", "provider.cli"]
        port = self.chain_url.rsplit(":", 1)[1]
        with open(self.work / "chain.log", "ab") as log:
            self.procs.append(
                subprocess.Popen([*cli, "chain", "serve", "--db", str(self.work / "chain.sqlite"), "--port", port,
                                  "--block-interval", "1", "--bid-timeout-blocks", "600"],
                                 stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
            )  # fmt: skip
        wait_http(self.chain_url + "/status", 30)

        async def fund() -> None:
            c = ChainClient(self.chain_url, self.keyring.get("provider"))
            await c.fund(self.keyring.get("provider").address, "uakt", Dec.parse(10**12))
            await c.fund(self.keyring.get("tenant").address, "uact", Dec.parse(10**13))
            await c.aclose()

        asyncio.run(fund())
        config = {
            "chain": {"url": self.chain_url, "key": "provider", "keyring": str(self.work / "keyring.json")},
            "provider": {"host_uri": self.api, "state_dir": str(self.work / "state"), "metrics_address": ""},
            "inventory": {"kubeconfig": str(self.kubeconfig)},
            "bidding": {"hold_blocks": 600},
            "api": {
                "address": f"127.0.0.1:{self.api_port}",
                "insecure_http": True,
                "client_rate": 10_000,
                "account_rate": 10_000,
            },
            "deploy": {"withdrawal_period_seconds": 0, "manifest_timeout_blocks": 100_000, "runtime_class": ""},
        }
        (self.work / "provider.yaml").write_text(yaml.safe_dump(config))
        subprocess.run([*cli, "setup", "--config", str(self.work / "provider.yaml")], check=True, cwd=REPO)
        with open(self.work / "daemon.log", "ab") as log:
            self.daemon = subprocess.Popen(
                [*cli, "run", "--config", str(self.work / "provider.yaml"), "--log-level", "info"],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        self.procs.append(self.daemon)
        wait_http(self.api + "/readyz", 120)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.daemon.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """The daemon's CPU time so far (user + system, all threads)."""
        fields = Path(f"/proc/{self.daemon.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.cluster.down()

    async def leases(
        self, count: int, gpus: int, first_dseq: int
    ) -> tuple[list[LeaseId], dict[str, float], dict[str, float]]:
        """Create ``count`` deployments, accept the provider's bids all at once, send every manifest; the
        leases, each one's won time (its lease.create answered) and its manifest time (the PUT answered)."""
        tenant = ChainClient(self.chain_url, self.keyring.get("tenant"))
        me = tenant.address
        text = sdl_text(gpus)
        dseqs = list(range(first_dseq, first_dseq + count))
        for d in dseqs:
            await tenant_ops.deploy(tenant, text, "bench.yaml", Dec.parse(10**9), d, wait=0)
        provider = self.keyring.get("provider").address
        deadline = time.monotonic() + 600
        while True:
            bids = [b for b in await tenant.bids(owner=me, state="open", provider=provider) if b.id.order.dseq in dseqs]
            if len(bids) >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        if len(bids) < count:
            raise SystemExit(f"only {len(bids)}/{count} bids arrived; see {self.work}/daemon.log")
        won: dict[str, float] = {}
        sem = asyncio.Semaphore(32)

        async def take(bid: Any) -> None:
            async with sem:
                await tenant_ops.accept(tenant, str(bid.id))
                won[naming.namespace_for(bid.id)] = time.monotonic()

        await asyncio.gather(*(take(b) for b in bids))

        sent: dict[str, float] = {}
        by_dseq = {b.id.order.dseq: naming.namespace_for(b.id) for b in bids}

        async def send(d: int) -> None:
            async with sem:
                await tenant_ops.send_manifest(tenant, text, "bench.yaml", d, timeout=120)
                sent[by_dseq[d]] = time.monotonic()

        await asyncio.gather(*(send(d) for d in dseqs))
        await tenant.aclose()
        return [b.id for b in bids], won, sent

    def floor(self, count: int, gpus: int) -> list[float]:
        """The same objects, applied directly by 16 threads from one start; seconds to Available."""
        group = manifest_from_json(sdl.parse(sdl_text(gpus)).manifest_json())[0]
        refs = [
            LeaseRef(LeaseId(OrderId("gp1" + "f" * 40, 900_000 + i, 1, 1), "gp1" + "e" * 40), "bench", "floor")
            for i in range(count)
        ]
        watch = AvailableWatch(self.kube)
        settings = DeploySettings(runtime_class="")
        start = time.monotonic()

        def apply(ref: LeaseRef) -> None:
            for obj in build_objects(ref, group, settings):
                self.kube.apply(path_of(obj), obj, naming.FIELD_MANAGER)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(apply, refs))
        names = {naming.namespace_for(r.id) for r in refs}
        watch.wait(names, 600)
        out = [watch.at[n] - start for n in names]
        for n in names:
            self.kube.request("DELETE", f"/api/v1/namespaces/{n}")
        deadline = time.monotonic() + 600  # their GPUs must be free again before the daemon bids
        while time.monotonic() < deadline:
            left = self.kube.request("GET", "/api/v1/pods", query=[("labelSelector", "gpu-provider.io/lease.dseq")])
            if not [p for p in left["items"] if p["metadata"]["namespace"] in names]:
                break
            time.sleep(1)
        return out


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout:.0f}s")


async def status_load(bench: Bench, leases: list[LeaseId], clients: int, seconds: float) -> tuple[list[float], int]:
    tenant = ChainClient(bench.chain_url, bench.keyring.get("tenant"))
    token = tenant_ops.token(tenant, ["status"], lifetime=900)
    await tenant.aclose()
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=bench.api, limits=limits, timeout=30) as http:
        end = time.monotonic() + seconds

        async def client(i: int) -> None:
            nonlocal errors
            n = i
            while time.monotonic() < end:
                o = leases[n % len(leases)].order
                t0 = time.perf_counter()
                r = await http.get(
                    f"/lease/{o.dseq}/{o.gseq}/{o.oseq}/status", headers={"Authorization": f"Bearer {token}"}
                )
                latencies.append(time.perf_counter() - t0)
                errors += r.status_code != 200
                n += clients

        await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leases", type=int, default=100, help="concurrent GPU leases for the deploy figures")
    ap.add_argument("--clients", type=int, default=200, help="concurrent clients on the status API")
    ap.add_argument("--seconds", type=float, default=15, help="how long the status load runs")
    ap.add_argument("--rss-leases", type=int, default=1000, help="active leases for the memory figure")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (daemon and chain logs)")
    args = ap.parse_args()
    n, m = args.leases, args.rss_leases
    gpu_nodes = (n + 7) // 8
    cpu_nodes = max(1, (m + 99) // 100)
    pool = f"h100:{gpu_nodes}x8,cpu:{cpu_nodes}"
    tmp = tempfile.mkdtemp(prefix="gp-bench-lifecycle-")
    try:
        bench = Bench(Path(tmp), pool)
        try:
            bench.start()
            idle = bench.rss_kib()
            say(f"floor: {n} leases' objects applied directly")
            floor = bench.floor(n, 1)
            watch = AvailableWatch(bench.kube)
            say(f"daemon: {n} one-GPU leases won at once")
            leases, won, sent = asyncio.run(bench.leases(n, 1, 1000))
            watch.wait(set(won), 900)
            took = [watch.at[ns] - t for ns, t in won.items()]
            after_manifest = [watch.at[ns] - t for ns, t in sent.items()]
            say(f"status API: {args.clients} clients for {args.seconds:.0f}s")
            cpu0 = bench.cpu_seconds()
            lat, errors = asyncio.run(status_load(bench, leases, args.clients, args.seconds))
            cpu_ms = (bench.cpu_seconds() - cpu0) / max(1, len(lat)) * 1000
            with_n = bench.rss_kib()
            say(f"memory: {m} active leases (CPU-only)")
            extra = max(0, m - n)
            more, won_more, _ = asyncio.run(bench.leases(extra, 0, 100_000)) if extra else ([], {}, {})
            watch.wait(set(won_more), 1800)
            time.sleep(5)
            with_m = bench.rss_kib()
        finally:
            bench.stop()
    finally:
        if args.keep:
            say(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"lease lifecycle on a KWOK dev cluster ({pool}), 2-core VM")
    print(f"  won -> Available, {n} leases at once: p50 {pct(took, 0.5):.2f}s  p99 {pct(took, 0.99):.2f}s  "
          f"mean {statistics.mean(took):.2f}s")  # fmt: skip
    print(
        f"  manifest accepted -> Available: p50 {pct(after_manifest, 0.5):.2f}s  p99 {pct(after_manifest, 0.99):.2f}s"
    )
    print(f"  floor (same objects applied directly): p50 {pct(floor, 0.5):.2f}s  p99 {pct(floor, 0.99):.2f}s")
    print(
        f"  ratio to the floor: p50 {pct(took, 0.5) / pct(floor, 0.5):.2f}x  p99 {pct(took, 0.99) / pct(floor, 0.99):.2f}x"
    )
    print(f"  status API, {args.clients} clients: {len(lat) / args.seconds:.0f} req/s  p50 {pct(lat, 0.5) * 1000:.1f}ms  "
          f"p99 {pct(lat, 0.99) * 1000:.1f}ms  non-200 {errors}; daemon CPU {cpu_ms:.2f}ms per request "
          "(the load generator shares the 2 cores)")  # fmt: skip
    print(f"  daemon RSS: idle {idle / 1024:.0f} MiB, {n} leases {with_n / 1024:.0f} MiB, "
          f"{len(leases) + len(more)} leases {with_m / 1024:.0f} MiB "
          f"({(with_m - idle) / max(1, len(leases) + len(more)):.1f} KiB per lease)")  # fmt: skip


if __name__ == "__main__":
    main()
