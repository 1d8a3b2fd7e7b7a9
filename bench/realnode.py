"""Benchmark the dev cluster's real node: `up --real-node` time, and image pull + pod start to Ready for
N pods (each with its own image from the local registry, so each pod really pulls) on the real node,
against the same pods on a KWOK node. Prints figures; asserts nothing about time. Needs root."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubernetes import client, config  # noqa: E402

from provider.devcluster import DevCluster, build_binaries  # noqa: E402
from provider.devcluster.realnode import registry_of  # noqa: E402
from provider.devcluster.registry import busybox_rootfs  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ready_times(core: client.CoreV1Api, ns: str, names: list[str], timeout: float = 600) -> dict[str, float]:
    """Seconds from each pod's creation to its Ready condition (the API server's timestamps)."""
    out: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(out) < len(names) and time.monotonic() < deadline:
        for p in core.list_namespaced_pod(ns).items:
            name = p.metadata.name
            if name in out or name not in names:
                continue
            for c in p.status.conditions or []:
                if c.type == "Ready" and c.status == "True":
                    out[name] = (c.last_transition_time - p.metadata.creation_timestamp).total_seconds()
        time.sleep(0.5)
    return out


def bench_pod(name: str, image: str, selector: dict[str, str]) -> client.V1Pod:
    res = {"cpu": "10m", "memory": "16Mi"}
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            node_selector=selector,
            termination_grace_period_seconds=0,
            containers=[
                client.V1Container(
                    name="main", image=image, resources=client.V1ResourceRequirements(requests=res, limits=res)
                )
            ],
        ),
    )


def run(pods: int, sequential: int) -> None:
    build_binaries(real_node=True)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = DevCluster(Path(tmp) / "state")
        t0 = time.monotonic()
        cluster.up(pool="cpu:1", timeout=300, real_node=True)
        print(f"up --real-node (binaries cached, pool cpu:1): {time.monotonic() - t0:.1f} s")
        try:
            state = cluster.load()
            assert state is not None
            registry = registry_of(state)
            refs = []
            t0 = time.monotonic()
            with tempfile.TemporaryDirectory() as rootfs_tmp:
                root = busybox_rootfs(Path(rootfs_tmp))
                for i in range(pods + sequential):
                    (root / "id").write_text(f"{i}\n")  # a layer of its own: every pod pulls
                    refs.append(registry.build(f"bench/p{i}:1", root, ["/bin/sleep", "3600"]))
            print(f"pushed {pods + sequential} one-layer busybox images in {time.monotonic() - t0:.1f} s")
            api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
            core = client.CoreV1Api(api)
            # one pod at a time first: the latency of a pull and a start with nothing else going on
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="bench-one")))
            single = []
            for i, ref in enumerate(refs[:sequential]):
                core.create_namespaced_pod("bench-one", bench_pod(f"s{i}", ref, {"gpu-provider.dev/real-node": "true"}))
                single += list(ready_times(core, "bench-one", [f"s{i}"]).values())
            if single:
                print(
                    f"real node, one pod at a time ({len(single)} pods, each its own image): pull + start to Ready "
                    f"p50 {statistics.median(single):.1f} s, max {max(single):.1f} s"
                )
            core.delete_namespace("bench-one")
            refs = refs[sequential:]
            for where, selector in (
                ("real node", {"gpu-provider.dev/real-node": "true"}),
                ("KWOK node", {"kubernetes.io/hostname": "sim-cpu-0"}),
            ):
                ns = "bench-real" if where == "real node" else "bench-kwok"
                core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
                names = []
                for i, ref in enumerate(refs):
                    name = f"p{i}"
                    names.append(name)
                    core.create_namespaced_pod(ns, bench_pod(name, ref, selector))
                times = list(ready_times(core, ns, names).values())
                if len(times) < len(names):
                    print(f"{where}: only {len(times)}/{len(names)} pods became Ready")
                if times:
                    print(
                        f"{where}: {len(times)} pods, image pull + start to Ready: p50 {statistics.median(times):.1f} s, "
                        f"p99 {pct(times, 0.99):.1f} s, max {max(times):.1f} s (API timestamps, 1 s resolution)"
                    )
                core.delete_namespace(ns)
        finally:
            t0 = time.monotonic()
            cluster.down()
            print(f"down (drain, stop, undo host changes): {time.monotonic() - t0:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=50, help="pods started at once, on each kind of node")
    parser.add_argument("--sequential", type=int, default=10, help="pods started one at a time first")
    args = parser.parse_args()
    run(args.pods, args.sequential)


if __name__ == "__main__":
    main()
