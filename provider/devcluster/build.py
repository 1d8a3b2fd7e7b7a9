"""Where the dev cluster's binaries come from: hack/devcluster/build.sh in a checkout of the repository.

The pins (go.mod files, the Traefik pin, our fakegpu device plugin) live in the checkout's
hack/devcluster, so the dev cluster needs a checkout; an installed wheel of the daemon does not carry
them. GPU_PROVIDER_DEVCLUSTER_BIN names a directory of binaries built elsewhere instead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from provider.devcluster.errors import DevClusterError

REPO = Path(__file__).resolve().parent.parent.parent
HACK = REPO / "hack" / "devcluster"
BUILD_SCRIPT = HACK / "build.sh"
KWOK_STAGES = HACK / "kwok-stages.yaml"
BIN_ENV = "GPU_PROVIDER_DEVCLUSTER_BIN"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "helm")
REAL_NODE = (
    "kubelet",
    "kube-proxy",
    "fakegpu",
    "containerd",
    "containerd-shim-runc-v2",
    "coredns",
    "kube-router",
    "crane",
    "traefik",
    "pause",
    "cni/bridge",
    "cni/host-local",
    "cni/loopback",
    "cni/portmap",
)


def build_binaries(real_node: bool = False, progress: bool = False) -> Path:
    """Build (once per pin set) the real components; returns their directory.

    ``progress`` streams the build's progress lines (a cold build of everything takes tens of minutes)."""
    wanted = CONTROL_PLANE + (REAL_NODE if real_node else ())
    named = os.environ.get(BIN_ENV)
    if named:
        bin_dir = Path(named)
    else:
        if not BUILD_SCRIPT.is_file():
            raise DevClusterError(
                f"{BUILD_SCRIPT} not found: the dev cluster builds its components from the pins in a checkout "
                f"of the repository (or set {BIN_ENV} to a directory of prebuilt binaries)"
            )
        argv = ["bash", str(BUILD_SCRIPT)] + (["--real-node"] if real_node else [])
        proc = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE, text=True, check=False
        )
        if proc.returncode != 0:
            detail = "" if progress else f":\n{(proc.stderr or '')[-4000:]}"
            raise DevClusterError(f"building the dev cluster's components failed (exit {proc.returncode}){detail}")
        bin_dir = Path(proc.stdout.strip().splitlines()[-1])
    missing = [name for name in wanted if not (bin_dir / name).is_file()]
    if missing:
        raise DevClusterError(f"{bin_dir} lacks {', '.join(missing)}; remove {bin_dir.parent} and build again")
    return bin_dir
