"""Value types shared by the boxes (inventory, bidding, deploy): plain frozen data, no behaviour that
does I/O. Library objects (Kubernetes models, pynvml structs) never cross a box boundary."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import sdl

GPU_RESOURCE = "nvidia.com/gpu"
MAX_VOLUMES_PER_UNIT = 4  # Akash's provider refuses more storage volumes per resource unit


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One physical GPU as NVML reports it, normalised."""

    index: int
    uuid: str
    name: str  # NVML name, e.g. "NVIDIA H100 80GB HBM3"
    model: str  # the key tenants write in SDL: h100, a100, rtx4090, ... ("" if unknown)
    memory_bytes: int
    ram_class: str  # SDL ram class it satisfies, e.g. "80Gi"
    interface: str  # "sxm" | "pcie" | ""
    pci_bus_id: str
    pci_device_id: int  # 16-bit PCI device id, e.g. 0x2330
    compute_capability: tuple[int, int]
    mig_enabled: bool
    mig_profiles: tuple[str, ...]  # available GPU-instance profiles, e.g. ("1g.10gb", "7g.80gb")
    healthy: bool
    health_reasons: tuple[str, ...] = ()
    utilization_percent: int | None = None
    memory_used_bytes: int | None = None
    temperature_celsius: int | None = None
    power_watts: float | None = None


@dataclass(frozen=True, slots=True)
class HostGpus:
    """What the NVML probe found on one host."""

    gpus: tuple[GpuInfo, ...]
    driver_version: str = ""
    cuda_version: str = ""
    error: str = ""  # why nothing could be read (no driver, ...); empty when fine


@dataclass(frozen=True, slots=True)
class Resources:
    """Quantities in base units: millicores, bytes, whole GPUs."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    ephemeral_bytes: int = 0
    gpus: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_millis + other.cpu_millis,
            self.memory_bytes + other.memory_bytes,
            self.ephemeral_bytes + other.ephemeral_bytes,
            self.gpus + other.gpus,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_millis - other.cpu_millis,
            self.memory_bytes - other.memory_bytes,
            self.ephemeral_bytes - other.ephemeral_bytes,
            self.gpus - other.gpus,
        )

    def scaled(self, n: int) -> Resources:
        return Resources(self.cpu_millis * n, self.memory_bytes * n, self.ephemeral_bytes * n, self.gpus * n)

    def clamped(self) -> Resources:
        """Negative quantities (an overcommitted node) read as zero."""
        return Resources(
            max(0, self.cpu_millis), max(0, self.memory_bytes), max(0, self.ephemeral_bytes), max(0, self.gpus)
        )

    def maximum(self, other: Resources) -> Resources:
        """Element-wise maximum."""
        return Resources(
            max(self.cpu_millis, other.cpu_millis),
            max(self.memory_bytes, other.memory_bytes),
            max(self.ephemeral_bytes, other.ephemeral_bytes),
            max(self.gpus, other.gpus),
        )

    def fits_in(self, other: Resources) -> bool:
        return (
            self.cpu_millis <= other.cpu_millis
            and self.memory_bytes <= other.memory_bytes
            and self.ephemeral_bytes <= other.ephemeral_bytes
            and self.gpus <= other.gpus
        )


@dataclass(frozen=True, slots=True)
class NodeGpuFacts:
    """The GPU facts of a node, from GFD labels and our agent's labels."""

    model: str = ""
    ram_class: str = ""
    interface: str = ""
    product: str = ""
    physical_gpus: int = 0
    replicas: int = 1
    sharing: str = "none"  # none | time-slicing | mps
    healthy_gpus: int | None = None  # from the agent; None when unknown

    @property
    def shared(self) -> bool:
        return self.sharing not in ("", "none") or self.replicas > 1


@dataclass(frozen=True, slots=True)
class NodeView:
    """A node as the inventory needs it."""

    name: str
    allocatable: Resources
    gpu: NodeGpuFacts
    ready: bool = True
    schedulable: bool = True
    mig: dict[str, int] = field(default_factory=dict)  # MIG mixed-strategy resources: name -> allocatable


@dataclass(frozen=True, slots=True)
class PodView:
    """A non-terminated pod's requests on a node; ``lease`` is set for pods our deployer created."""

    namespace: str
    name: str
    node: str  # "" when not yet bound
    requests: Resources
    mig: dict[str, int] = field(default_factory=dict)
    lease: str = ""


@dataclass(frozen=True, slots=True)
class GpuRequirement:
    """One acceptable GPU: model ("*" for any), optional ram class and interface."""

    model: str
    ram: str = ""
    interface: str = ""

    @classmethod
    def from_attribute_key(cls, key: str) -> GpuRequirement | None:
        """``vendor/nvidia/model/h100/ram/80Gi/interface/sxm`` -> requirement; None if not nvidia."""
        parts = key.split("/")
        if len(parts) < 4 or parts[0] != "vendor" or parts[1] != "nvidia" or parts[2] != "model":
            return None
        req = cls(parts[3])
        rest = parts[4:]
        for name, value in zip(rest[::2], rest[1::2], strict=False):
            if name == "ram":
                req = replace(req, ram=value)
            elif name == "interface":
                req = replace(req, interface=value)
        return req

    def matches(self, model: str, ram_class: str, interface: str) -> bool:
        """Does a GPU of this model, ram class and interface satisfy the requirement?"""
        if not model or self.model not in ("*", model):
            return False
        if self.ram and self.ram != ram_class:
            return False
        return not (self.interface and self.interface != interface)

    def describe(self) -> str:
        text = "any NVIDIA GPU" if self.model == "*" else self.model
        if self.ram:
            text += f" {self.ram}"
        if self.interface:
            text += f" {self.interface}"
        return text


@dataclass(frozen=True, slots=True)
class UnitDemand:
    """One resource unit of an order: ``count`` replicas, each needing ``per_replica``."""

    unit_id: int
    count: int
    per_replica: Resources
    gpu_options: tuple[GpuRequirement, ...] = ()
    persistent: tuple[tuple[str, int], ...] = ()  # (storage class, bytes) per replica
    volumes: int = 0

    @classmethod
    def from_group(cls, group: sdl.GroupSpec) -> tuple[UnitDemand, ...]:
        out: list[UnitDemand] = []
        for unit in group.resources:
            r = unit.resources
            ephemeral = sum(v.size for v in r.storage or () if not v.persistent and v.storage_class != "ram")
            ram_disk = sum(v.size for v in r.storage or () if v.storage_class == "ram")
            persistent = tuple((v.storage_class or "default", v.size) for v in r.storage or () if v.persistent)
            options = tuple(
                opt for a in r.gpu_attributes if (opt := GpuRequirement.from_attribute_key(a.key)) is not None
            )
            out.append(
                cls(
                    unit_id=r.id,
                    count=unit.count,
                    per_replica=Resources(r.cpu_millis or 0, (r.memory_bytes or 0) + ram_disk, ephemeral, r.gpu_units),
                    gpu_options=options,
                    persistent=persistent,
                    volumes=len(r.storage or ()),
                )
            )
        return tuple(out)
