"""The KWOK pool: simulated nodes that carry the labels NVIDIA GPU Feature Discovery puts on real ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provider.devcluster.errors import DevClusterError

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
POOL_LABEL = "gpu-provider.dev/pool"


@dataclass(frozen=True, slots=True)
class GpuModel:
    """What GPU Feature Discovery reports for one GPU model (values seen on real nodes)."""

    product: str  # nvidia.com/gpu.product (NVML name, spaces -> '-')
    memory_mib: int  # nvidia.com/gpu.memory
    family: str
    compute: tuple[int, int]
    machine: str
    cpu: int
    memory_gib: int


GPU_MODELS: dict[str, GpuModel] = {
    "h100": GpuModel("NVIDIA-H100-80GB-HBM3", 81559, "hopper", (9, 0), "PowerEdge-XE9680", 192, 2048),
    "h200": GpuModel("NVIDIA-H200", 143771, "hopper", (9, 0), "PowerEdge-XE9680", 192, 2048),
    "a100": GpuModel("NVIDIA-A100-SXM4-80GB", 81920, "ampere", (8, 0), "DGX-A100", 256, 2048),
    "rtx4090": GpuModel("NVIDIA-GeForce-RTX-4090", 24564, "ada-lovelace", (8, 9), "SYS-4029GP-TRT", 64, 256),
}
DEFAULT_POOL = "h100:4x8,a100:2x8,rtx4090:2x4,cpu:1"
DRIVER = (580, 159, 4)
CUDA = (13, 0)


def gfd_labels(model: str, gpus: int) -> dict[str, str]:
    """The labels GPU Feature Discovery puts on a node with ``gpus`` GPUs of ``model`` (a GPU_MODELS key)."""
    g = GPU_MODELS[model]
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": g.product,
        "nvidia.com/gpu.memory": str(g.memory_mib),
        "nvidia.com/gpu.count": str(gpus),
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/gpu.family": g.family,
        "nvidia.com/gpu.compute.major": str(g.compute[0]),
        "nvidia.com/gpu.compute.minor": str(g.compute[1]),
        "nvidia.com/gpu.machine": g.machine,
        "nvidia.com/gpu.mode": "compute",
        "nvidia.com/mig.capable": "true" if g.compute[0] >= 8 and model != "rtx4090" else "false",
        "nvidia.com/mps.capable": "false",
        "nvidia.com/cuda.driver-version.major": str(DRIVER[0]),
        "nvidia.com/cuda.driver-version.minor": str(DRIVER[1]),
        "nvidia.com/cuda.driver-version.revision": f"{DRIVER[2]:02d}",
        "nvidia.com/cuda.driver-version.full": ".".join(f"{v:02d}" if i == 2 else str(v) for i, v in enumerate(DRIVER)),
        "nvidia.com/cuda.runtime-version.major": str(CUDA[0]),
        "nvidia.com/cuda.runtime-version.minor": str(CUDA[1]),
        "nvidia.com/cuda.runtime-version.full": f"{CUDA[0]}.{CUDA[1]}",
    }


@dataclass(frozen=True, slots=True)
class NodePlan:
    name: str
    model: str | None  # None: CPU-only
    gpus: int

    def manifest(self, taint: bool) -> dict[str, Any]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": f"sim-{self.model or 'cpu'}",
            POOL_LABEL: self.model or "cpu",
            "type": "kwok",
        }
        cpu, mem_gib = 32, 128
        if self.model is not None:
            g = GPU_MODELS[self.model]
            cpu, mem_gib = g.cpu, g.memory_gib
            labels.update(gfd_labels(self.model, self.gpus))
        resources = {
            "cpu": str(cpu),
            "memory": f"{mem_gib}Gi",
            "ephemeral-storage": "3500Gi",
            "pods": "110",
        }
        if self.gpus:
            resources["nvidia.com/gpu"] = str(self.gpus)
        spec: dict[str, Any] = {}
        if taint and self.model is not None:
            spec["taints"] = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
            "spec": spec,
            "status": {"capacity": resources, "allocatable": resources},
        }


def parse_pool(spec: str) -> list[NodePlan]:
    """``"h100:4x8,a100:2x8,rtx4090:2x4,cpu:1"`` -> node plans (model:NODESxGPUS, cpu:NODES)."""
    plans: list[NodePlan] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        model, sep, shape = item.partition(":")
        if not sep:
            raise DevClusterError(f"pool entry {item!r}: write MODEL:NODESxGPUS (e.g. h100:4x8) or cpu:NODES")
        try:
            if model == "cpu":
                nodes, gpus = int(shape), 0
            else:
                if model not in GPU_MODELS:
                    raise DevClusterError(
                        f"pool entry {item!r}: unknown GPU model {model!r}; known: {', '.join(GPU_MODELS)}, cpu"
                    )
                n, _, g = shape.partition("x")
                nodes, gpus = int(n), int(g)
        except ValueError:
            raise DevClusterError(f"pool entry {item!r}: counts must be whole numbers") from None
        if nodes < 0 or gpus < 0 or (model != "cpu" and gpus == 0):
            raise DevClusterError(f"pool entry {item!r}: counts must be positive")
        for i in range(nodes):
            plans.append(NodePlan(f"sim-{model}-{i}", None if model == "cpu" else model, gpus))
    return plans
