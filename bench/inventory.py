"""Benchmark: inventory refresh for 1,000 nodes / 8,000 GPUs, and reserve() p50/p99 at that size.

Two refresh figures: the pure accounting (compute) on synthetic nodes and pods, and the real thing
(list nodes + pods from a dev cluster with 1,000 KWOK GPU nodes, then compute). Prints figures only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from provider.devcluster import DevCluster  # noqa: E402
from provider.domain import GpuRequirement, NodeGpuFacts, NodeView, PodView, Resources, UnitDemand  # noqa: E402  # noqa: E402
from provider.inventory.cluster import compute  # noqa: E402
from provider.inventory.reservations import NoFit, Reservations  # noqa: E402
from provider.inventory.service import ClusterInventory  # noqa: E402
from provider.kube import Kube  # noqa: E402

GI = 1024**3


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def synthetic(nodes: int) -> tuple[list[NodeView], list[PodView]]:
    models = ["h100", "a100", "h200", "rtx4090"]
    ns = [
        NodeView(
            f"node-{i:04d}",
            Resources(192_000, 2048 * GI, 3500 * GI, 8),
            NodeGpuFacts(models[i % 4], "80Gi", "sxm", physical_gpus=8),
        )
        for i in range(nodes)
    ]
    pods = [PodView("ns", f"p{i}", f"node-{i % nodes:04d}", Resources(4000, 32 * GI, 0, 1)) for i in range(nodes * 4)]
    return ns, pods


def bench_reserve(reservations: Reservations, rounds: int) -> list[float]:
    times = []
    for i in range(rounds):
        d = UnitDemand(
            1, 1 + i % 3, Resources(8000, 64 * GI, 20 * GI, 1 + i % 8), (GpuRequirement(("h100", "a100", "*")[i % 3]),)
        )
        t = time.perf_counter()
        outcome = reservations.reserve(f"o{i}", [d])
        times.append((time.perf_counter() - t) * 1000)
        if not isinstance(outcome, NoFit) and i % 2:
            reservations.release(f"o{i}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--skip-cluster", action="store_true")
    args = parser.parse_args()

    nodes, pods = synthetic(args.nodes)
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        inv = compute(nodes, pods)
        runs.append(time.perf_counter() - t)
    print(
        f"compute(): {args.nodes} nodes / {args.nodes * 8} GPUs / {len(pods)} pods: best {min(runs) * 1000:.1f} ms, median {statistics.median(runs) * 1000:.1f} ms"
    )
    r = Reservations(hold_blocks=3600)
    r.refresh(inv, pods)
    times = bench_reserve(r, 500)
    print(
        f"reserve() at {args.nodes} nodes (holds accumulate to {len(r.holds())}): p50 {pct(times, 0.5):.2f} ms, p99 {pct(times, 0.99):.2f} ms"
    )

    if args.skip_cluster:
        return
    with tempfile.TemporaryDirectory() as tmp:
        cluster = DevCluster(Path(tmp) / "state")
        t = time.monotonic()
        cluster.up(pool=f"h100:{args.nodes}x8", timeout=900)
        print(f"dev cluster with {args.nodes} KWOK H100 nodes up in {time.monotonic() - t:.1f} s")
        try:
            service = ClusterInventory(Kube(str(cluster.kubeconfig)), Reservations(hold_blocks=3600))
            refreshes = [service.refresh().seconds for _ in range(5)]
            print(
                f"refresh() against the API ({args.nodes} nodes, {args.nodes * 8} GPUs): best {min(refreshes) * 1000:.0f} ms, median {statistics.median(refreshes) * 1000:.0f} ms"
            )
            times = bench_reserve(service.reservations, 500)
            print(f"reserve() on that snapshot: p50 {pct(times, 0.5):.2f} ms, p99 {pct(times, 0.99):.2f} ms")
        finally:
            cluster.down()


if __name__ == "__main__":
    main()
