"""``gpu-provider devcluster up|down|status|restart|image build`` (the parser lives in provider.cli)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from provider.devcluster.cluster import DEFAULT_STATE, DevCluster
from provider.devcluster.errors import DevClusterError
from provider.devcluster.pool import DEFAULT_POOL


def cli_command(args: argparse.Namespace) -> int:
    cluster = DevCluster(Path(args.state_dir) if args.state_dir else DEFAULT_STATE)
    if args.devcluster_command == "up":
        started = time.monotonic()
        path = cluster.up(
            args.pool or DEFAULT_POOL,
            taint=args.taint,
            timeout=args.timeout,
            real_node=args.real_node,
            real_node_gpus=args.real_node_gpus,
            progress=True,
        )
        print(path)
        print(f"devcluster: ready in {time.monotonic() - started:.1f}s; export KUBECONFIG={path}", file=sys.stderr)
        return 0
    if args.devcluster_command == "down":
        cluster.down()
        return 0
    if args.devcluster_command == "restart":
        cluster.restart(args.component)
        print(f"devcluster: {args.component} restarted", file=sys.stderr)
        return 0
    if args.devcluster_command == "image" and args.image_command == "provider":
        from provider.devcluster.image import ImageBuilder

        builder = ImageBuilder(Path(__file__).resolve().parents[2])
        image = builder.build(args.tag)
        if args.push:
            state = cluster.load()
            if state is None or not state.real_node.get("registry"):
                raise DevClusterError(
                    "no registry: start the dev cluster with `gpu-provider devcluster up --real-node`"
                )
            image = builder.push(image, str(state.real_node["registry"]))
        print(image)
        return 0
    if args.devcluster_command == "image":
        from provider.devcluster.realnode import registry_of

        state = cluster.load()
        if state is None:
            raise DevClusterError("the dev cluster is not up; run: gpu-provider devcluster up --real-node")
        registry = registry_of(state)
        entrypoint = args.entrypoint.split(",") if args.entrypoint else []
        print(registry.build(args.name, Path(args.dir), entrypoint, args.cmd.split(",") if args.cmd else None))
        return 0
    status = cluster.status()
    print(json.dumps(status, indent=2))
    return 0 if status.get("up") else 1
