"""Benchmark HA failover: two daemon replicas (ha.enabled, the chart's default timings: lease 10 s, renew
7 s, retry 2 s) on a KWOK dev cluster of their own and a mock chain.

1. kill -9 of the leader -> the standby leads (its /status says so), N rounds (the killed replica comes
   back as the new standby each round);
2. a graceful stop (SIGTERM) of the leader -> the standby leads, N rounds.

Prints figures; asserts nothing about time. Usage: python bench/failover.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import yaml  # noqa: E402

from bench.lifecycle import say, wait_http  # noqa: E402
from provider.chain.client import ChainClient  # noqa: E402
from provider.chain.keys import Keyring  # noqa: E402
from provider.devcluster import DevCluster  # noqa: E402
from provider.devcluster.procs import free_port  # noqa: E402
from provider.money import Dec  # noqa: E402

CLI = [sys.executable, "-m", "provider.cli"]


def leading(api: str) -> bool:
    try:
        return bool(httpx.get(api + "/status", timeout=2).json()["leader"]["leading"])
    except (httpx.HTTPError, KeyError, ValueError):
        return False


class Replica:
    def __init__(self, work: Path, name: str, chain_url: str, kubeconfig: Path) -> None:
        self.dir = work / name
        self.dir.mkdir()
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        config = {
            "chain": {"url": chain_url, "key": "provider", "keyring": str(work / "keyring.json")},
            "provider": {"host_uri": self.api, "state_dir": str(self.dir / "state"), "metrics_address": ""},
            "inventory": {"kubeconfig": str(kubeconfig)},
            "api": {"address": f"127.0.0.1:{self.port}", "insecure_http": True},
            "deploy": {"namespace": "gp-failover"},
            "ha": {"enabled": True},  # the defaults the chart uses
        }
        self.config = self.dir / "provider.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.dir / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*CLI, "run", "--config", str(self.config)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO
            )
        wait_http(self.api + "/readyz", 120)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        self.proc.wait(90)


def until_leading(replica: Replica, since: float, timeout: float = 120) -> float:
    while time.monotonic() - since < timeout:
        if leading(replica.api):
            return time.monotonic() - since
        time.sleep(0.05)
    raise SystemExit(f"{replica.dir.name} did not take over within {timeout}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gp-bench-failover-"))
    cluster = DevCluster(work / "cluster")
    kubeconfig = cluster.up(pool="h100:2x8", timeout=600)
    chain_url = f"http://127.0.0.1:{free_port()}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with open(work / "chain.log", "ab") as log:
            procs.append(
                subprocess.Popen(
                    [*CLI, "chain", "serve", "--db", str(work / "chain.sqlite"), "--port", chain_url.rsplit(":", 1)[1]],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                )
            )
        keyring = Keyring(work / "keyring.json")
        key = keyring.add("provider")
        wait_http(chain_url + "/status", 30)

        async def fund() -> None:
            c = ChainClient(chain_url, key)
            await c.fund(key.address, "uakt", Dec.parse(10**12))
            await c.aclose()

        asyncio.run(fund())
        a, b = Replica(work, "a", chain_url, kubeconfig), Replica(work, "b", chain_url, kubeconfig)
        subprocess.run([*CLI, "setup", "--config", str(a.config)], check=True, cwd=REPO, capture_output=True)
        a.start()
        until_leading(a, time.monotonic())
        b.start()
        results: dict[str, list[float]] = {"kill -9": [], "SIGTERM": []}
        leader, standby = a, b
        for how, sig in (("kill -9", signal.SIGKILL), ("SIGTERM", signal.SIGTERM)):
            for i in range(args.rounds):
                time.sleep(3)  # a few renewals first
                t0 = time.monotonic()
                leader.signal(sig)
                took = until_leading(standby, t0)
                results[how].append(took)
                say(f"{how} round {i + 1}: {standby.dir.name} leads after {took:.2f}s")
                leader.start()  # back as the standby
                leader, standby = standby, leader
        print(f"HA failover, {args.rounds} rounds each (lease 10 s, renew 7 s, retry 2 s), 2-core VM:")
        for how, times in results.items():
            print(
                f"  {how:8s} leader -> standby leads: median {statistics.median(times):.2f}s, "
                f"min {min(times):.2f}s, max {max(times):.2f}s"
            )
        for r in (leader, standby):
            if r.proc is not None and r.proc.poll() is None:
                r.signal(signal.SIGTERM)
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        cluster.down()


if __name__ == "__main__":
    main()
