"""The GPU model catalogue: NVML name / PCI device id -> the model key tenants write in SDL.

Akash's provider knows a GPU only if its PCI id is in an external table; a missing entry makes the GPU
invisible. We match by PCI device id first, then by NVML name, and finally derive a key from the name
itself, so an unlisted GPU is still sold (under its derived key) and the operator can add an entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

GIB = 1024**3
# Nominal memory sizes GPUs are sold by (GiB); NVML reports a little less (79.65 GiB for an 80 GB H100).
NOMINAL_GIB = (4, 6, 8, 10, 11, 12, 16, 20, 24, 32, 40, 46, 48, 64, 80, 94, 96, 128, 141, 144, 180, 186, 192, 288)


@dataclass(frozen=True, slots=True)
class ModelEntry:
    key: str  # as tenants write it: h100, a100, rtx4090, ...
    ram_gib: int
    interface: str  # sxm | pcie
    pci_device_ids: tuple[int, ...] = ()
    names: tuple[str, ...] = ()  # NVML names, matched case-insensitively

    @property
    def ram_class(self) -> str:
        return f"{self.ram_gib}Gi"


@dataclass(frozen=True, slots=True)
class Identified:
    model: str
    ram_class: str
    interface: str
    known: bool  # False when derived from the name alone


_DEFAULT: tuple[ModelEntry, ...] = (
    ModelEntry("h100", 80, "sxm", (0x2330,), ("NVIDIA H100 80GB HBM3",)),
    ModelEntry("h100", 80, "pcie", (0x2331,), ("NVIDIA H100 PCIe",)),
    ModelEntry("h100", 94, "pcie", (0x2321,), ("NVIDIA H100 NVL",)),
    ModelEntry("h200", 141, "sxm", (0x2335,), ("NVIDIA H200",)),
    ModelEntry("h200", 141, "pcie", (0x233B,), ("NVIDIA H200 NVL",)),
    ModelEntry("gh200", 96, "sxm", (0x2342,), ("NVIDIA GH200 480GB",)),
    ModelEntry("a100", 40, "sxm", (0x20B0,), ("NVIDIA A100-SXM4-40GB",)),
    ModelEntry("a100", 80, "sxm", (0x20B2,), ("NVIDIA A100-SXM4-80GB",)),
    ModelEntry("a100", 40, "pcie", (0x20F1,), ("NVIDIA A100-PCIE-40GB",)),
    ModelEntry("a100", 80, "pcie", (0x20B5,), ("NVIDIA A100 80GB PCIe",)),
    ModelEntry("a10", 24, "pcie", (0x2236,), ("NVIDIA A10",)),
    ModelEntry("a40", 48, "pcie", (0x2235,), ("NVIDIA A40",)),
    ModelEntry("l4", 24, "pcie", (0x27B8,), ("NVIDIA L4",)),
    ModelEntry("l40", 48, "pcie", (0x26B5,), ("NVIDIA L40",)),
    ModelEntry("l40s", 48, "pcie", (0x26B9,), ("NVIDIA L40S",)),
    ModelEntry("t4", 16, "pcie", (0x1EB8,), ("Tesla T4",)),
    ModelEntry("v100", 16, "sxm", (0x1DB1,), ("Tesla V100-SXM2-16GB",)),
    ModelEntry("v100", 32, "sxm", (0x1DB5,), ("Tesla V100-SXM2-32GB",)),
    ModelEntry("v100", 16, "pcie", (0x1DB4,), ("Tesla V100-PCIE-16GB",)),
    ModelEntry("v100", 32, "pcie", (0x1DB6,), ("Tesla V100-PCIE-32GB",)),
    ModelEntry("rtx4090", 24, "pcie", (0x2684,), ("NVIDIA GeForce RTX 4090",)),
    ModelEntry("rtx3090", 24, "pcie", (0x2204,), ("NVIDIA GeForce RTX 3090",)),
    ModelEntry("rtx3090ti", 24, "pcie", (0x2203,), ("NVIDIA GeForce RTX 3090 Ti",)),
    ModelEntry("rtx3080", 10, "pcie", (0x2206,), ("NVIDIA GeForce RTX 3080",)),
    ModelEntry("rtxa6000", 48, "pcie", (0x2230,), ("NVIDIA RTX A6000",)),
    ModelEntry("rtxa5000", 24, "pcie", (0x2231,), ("NVIDIA RTX A5000",)),
    ModelEntry("rtx6000ada", 48, "pcie", (0x26B1,), ("NVIDIA RTX 6000 Ada Generation",)),
    ModelEntry("rtx5090", 32, "pcie", (0x2B85,), ("NVIDIA GeForce RTX 5090",)),
)

_VENDOR_WORDS = {"nvidia", "geforce", "tesla", "quadro"}
_SERIES = {"rtx", "gtx", "titan"}


def nominal_ram_class(memory_bytes: int) -> str:
    """The nominal size a GPU with this much memory is sold as (79.65 GiB -> 80Gi)."""
    gib = memory_bytes / GIB
    fitting = [s for s in NOMINAL_GIB if 0.9 * s <= gib <= 1.02 * s]
    if fitting:
        return f"{min(fitting, key=lambda s: abs(s - gib))}Gi"
    return f"{round(gib)}Gi"


def key_from_name(name: str) -> str:
    """Derive an SDL-style key from an NVML name: "NVIDIA GeForce RTX 4090" -> "rtx4090",
    "NVIDIA A100-SXM4-80GB" -> "a100", "NVIDIA RTX 6000 Ada Generation" -> "rtx6000ada"."""
    tokens = [t for t in re.split(r"[\s\-_]+", name.strip()) if t]
    tokens = [t for t in tokens if t.lower() not in _VENDOR_WORDS]
    if not tokens:
        return ""
    head = tokens[0].lower()
    if head in _SERIES and len(tokens) > 1:
        key = head + tokens[1].lower()
        if len(tokens) > 2 and tokens[2].lower() in ("ti", "super", "ada"):
            key += tokens[2].lower()
        return re.sub(r"[^a-z0-9]", "", key)
    return re.sub(r"[^a-z0-9]", "", head)


def interface_from_name(name: str) -> str:
    lowered = name.lower()
    if "sxm" in lowered or "hbm3" in lowered:
        return "sxm"
    if "pcie" in lowered or "nvl" in lowered:
        return "pcie"
    return ""


class Catalogue:
    """Model entries, the defaults plus the operator's own (which win)."""

    def __init__(self, entries: Iterable[ModelEntry] = _DEFAULT) -> None:
        self.entries = tuple(entries)
        self._by_id: dict[int, ModelEntry] = {}
        self._by_name: dict[str, ModelEntry] = {}
        for e in self.entries:
            for pci in e.pci_device_ids:
                self._by_id[pci] = e
            for n in e.names:
                self._by_name[n.lower()] = e

    def extended(self, extra: Iterable[ModelEntry]) -> Catalogue:
        return Catalogue((*self.entries, *extra))

    @staticmethod
    def entry_from_config(raw: Mapping[str, object]) -> ModelEntry:
        """An operator entry: {key, ram_gib, interface, pci_device_ids: [0x2330], names: [...]}."""
        key = str(raw.get("key", "")).strip().lower()
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", key):
            raise ValueError(f"gpu model key {key!r} must be lowercase letters/digits, as tenants write it in SDL")
        interface = str(raw.get("interface", "pcie"))
        if interface not in ("sxm", "pcie"):
            raise ValueError(f"gpu model {key!r}: interface must be sxm or pcie, not {interface!r}")
        ram = raw.get("ram_gib")
        if not isinstance(ram, int) or ram <= 0:
            raise ValueError(f"gpu model {key!r}: ram_gib must be a positive whole number of GiB")
        ids_raw = raw.get("pci_device_ids", [])
        names_raw = raw.get("names", [])
        if not isinstance(ids_raw, list) or not isinstance(names_raw, list):
            raise ValueError(f"gpu model {key!r}: pci_device_ids and names must be lists")
        ids = tuple(int(str(i), 0) for i in ids_raw)
        return ModelEntry(key, ram, interface, ids, tuple(str(n) for n in names_raw))

    def identify(self, name: str, pci_device_id: int = 0, memory_bytes: int = 0) -> Identified:
        entry = self._by_id.get(pci_device_id) if pci_device_id else None
        if entry is None:
            entry = self._by_name.get(name.strip().lower())
        if entry is not None:
            return Identified(entry.key, entry.ram_class, entry.interface, True)
        return Identified(
            key_from_name(name),
            nominal_ram_class(memory_bytes) if memory_bytes else "",
            interface_from_name(name),
            False,
        )

    def from_product_label(self, product: str, memory_mib: int = 0) -> Identified:
        """GFD's gpu.product label is the NVML name with spaces turned into '-'."""
        for entry in reversed(self.entries):  # the operator's entries come last and win
            for n in entry.names:
                if n.replace(" ", "-").lower() == product.lower():
                    return Identified(entry.key, entry.ram_class, entry.interface, True)
        return self.identify(product.replace("-", " "), 0, memory_mib * 1024 * 1024)


DEFAULT_CATALOGUE = Catalogue()
