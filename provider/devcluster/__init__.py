"""The dev cluster: a real local Kubernetes control plane, KWOK-simulated GPU nodes and, on request, one
real worker node with a registry and an ingress controller. Test and demo tooling: only the CLI (and the
demo) import it, never the daemon (an import contract says so).

Modules: ``pki`` (certificates), ``procs`` (process supervision), ``build`` (the pinned binaries),
``pool`` (the KWOK pool), ``cluster`` (control plane and lifecycle), ``host`` (the ledger of host changes),
``realnode`` (kubelet, containerd, CNI, kube-proxy, CoreDNS, NetworkPolicy, fakegpu), ``registry``
(the loopback registry and Docker-free images), ``ingress`` (Traefik), ``cli`` (the commands).
"""

from provider.devcluster.build import build_binaries
from provider.devcluster.cluster import DEFAULT_STATE, MARKER, DevCluster, State, node_ready
from provider.devcluster.errors import DevClusterError
from provider.devcluster.pool import DEFAULT_POOL, GPU_MODELS, NodePlan, parse_pool

__all__ = [
    "DEFAULT_POOL",
    "DEFAULT_STATE",
    "GPU_MODELS",
    "MARKER",
    "DevCluster",
    "DevClusterError",
    "NodePlan",
    "State",
    "build_binaries",
    "node_ready",
    "parse_pool",
]
