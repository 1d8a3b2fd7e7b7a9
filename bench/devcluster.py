"""Benchmark the dev cluster: cold build time, warm `up`, control-plane memory, and how long 1,000 pods
on 100 simulated GPU nodes take to become Running. Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubernetes import client, config  # noqa: E402

from provider.devcluster import DevCluster, build_binaries  # noqa: E402


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def deployment(name: str, replicas: int, gpus: int) -> client.V1Deployment:
    requests = {"cpu": "100m", "memory": "64Mi"}
    if gpus:
        requests["nvidia.com/gpu"] = str(gpus)
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[
                        client.V1Container(
                            name="main",
                            image="busybox",
                            resources=client.V1ResourceRequirements(requests=requests, limits=requests),
                        )
                    ]
                ),
            ),
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--pods", type=int, default=1000)
    args = parser.parse_args()

    started = time.monotonic()
    bin_dir = build_binaries()
    record = bin_dir / ".build-seconds"
    parts = record.read_text().split() if record.exists() else []
    build_note = ", ".join(f"{name} {secs} s" for name, secs in zip(parts[::2], parts[1::2], strict=True)) or "?"
    print(f"components: {bin_dir}")
    print(f"per-part build times (recorded when each part was last built): {build_note}")
    print(f"this call (cache check): {time.monotonic() - started:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        cluster = DevCluster(Path(tmp) / "state")
        t0 = time.monotonic()
        cluster.up()  # default pool: 9 nodes
        print(f"warm up (default pool, 9 nodes, components built): {time.monotonic() - t0:.1f} s")
        try:
            state = cluster.load()
            assert state is not None
            per = {name: rss_mib(pid) for name, pid in state.pids.items()}
            print(
                "control-plane memory (RSS): "
                + ", ".join(f"{k} {v:.0f} MiB" for k, v in per.items())
                + f"; total {sum(per.values()):.0f} MiB"
            )
        finally:
            cluster.down()

        big = DevCluster(Path(tmp) / "scale")
        t0 = time.monotonic()
        big.up(pool=f"h100:{args.nodes}x8", timeout=600)
        print(f"up with {args.nodes} GPU nodes: {time.monotonic() - t0:.1f} s")
        try:
            api = config.new_client_from_config(config_file=str(big.kubeconfig))
            apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
            gpu_pods = min(args.pods, args.nodes * 8)
            t0 = time.monotonic()
            apps.create_namespaced_deployment("default", deployment("gpu", gpu_pods, 1))
            if args.pods > gpu_pods:
                apps.create_namespaced_deployment("default", deployment("cpu", args.pods - gpu_pods, 0))
            running = 0
            while time.monotonic() - t0 < 900:
                pods = core.list_namespaced_pod("default", resource_version="0").items
                running = sum(1 for p in pods if p.status.phase == "Running")
                if running >= args.pods:
                    break
                time.sleep(1)
            elapsed = time.monotonic() - t0
            print(
                f"{running} of {args.pods} pods Running on {args.nodes} simulated GPU nodes "
                f"({gpu_pods} holding one nvidia.com/gpu each) in {elapsed:.1f} s ({running / elapsed:.0f} pods/s)"
            )
            state = big.load()
            assert state is not None
            per = {name: rss_mib(pid) for name, pid in state.pids.items()}
            print(
                f"control-plane memory with {args.pods} pods: total {sum(per.values()):.0f} MiB ("
                + ", ".join(f"{k} {v:.0f}" for k, v in per.items())
                + ")"
            )
        finally:
            big.down()


if __name__ == "__main__":
    main()
