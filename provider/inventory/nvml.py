"""The NVML probe: the only module that speaks to the NVIDIA driver (through pynvml).

NVML "NotSupported" means the fact is absent, never an error. No driver means zero GPUs, said once in
the log, and the process keeps running. Every call is blocking: callers run ``Probe.read`` off the
event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pynvml

from provider.domain import GpuInfo, HostGpus
from provider.inventory.models import DEFAULT_CATALOGUE, Catalogue

log = logging.getLogger(__name__)

_ECC_UNCORRECTED = 1  # NVML_MEMORY_ERROR_TYPE_UNCORRECTED
_ECC_VOLATILE = 0  # NVML_VOLATILE_ECC
_TEMP_GPU = 0  # NVML_TEMPERATURE_GPU
# nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError | nvmlEventTypeXidCriticalError
_HEALTH_EVENTS = 0x1 | 0x2 | 0x8
_MIG_PROFILE_INDICES = range(8)  # NVML_GPU_INSTANCE_PROFILE_1_SLICE .. _2_SLICE_REV1
# XIDs that mean the GPU needs attention (driver docs: 48 DBE, 63/64 row remap, 74 NVLink, 79 fell off
# the bus, 92/94/95 ECC, 119/120 GSP).
CRITICAL_XIDS = frozenset({48, 63, 64, 74, 79, 92, 94, 95, 119, 120})


class _AbsentError(Exception):
    """NotSupported (or a missing function): the fact does not exist on this GPU."""


class Probe:
    """Reads the GPUs of this host. Keep one per process: it initialises NVML once and remembers XID
    events across reads."""

    def __init__(self, catalogue: Catalogue = DEFAULT_CATALOGUE, lib: Any = pynvml) -> None:
        self.catalogue = catalogue
        self.lib = lib
        self._initialised = False
        self._init_error = ""
        self._event_set: Any = None
        self._xids: dict[str, set[int]] = {}  # uuid -> critical XIDs seen

    # -- plumbing --------------------------------------------------------------------------------
    def _call(self, name: str, *args: Any) -> Any:
        fn: Callable[..., Any] | None = getattr(self.lib, name, None)
        if fn is None:
            raise _AbsentError(name)
        try:
            return fn(*args)
        except pynvml.NVMLError as e:
            if e.value == pynvml.NVML_ERROR_NOT_SUPPORTED:
                raise _AbsentError(name) from None
            raise

    def _opt(self, name: str, *args: Any) -> Any:
        """A fact that may be absent; other NVML errors are logged and also read as absent."""
        try:
            return self._call(name, *args)
        except _AbsentError:
            return None
        except pynvml.NVMLError as e:
            log.debug("nvml call failed call=%s error=%s", name, e)
            return None

    def _init(self) -> bool:
        if self._initialised:
            return True
        if self._init_error:
            return False
        try:
            self._call("nvmlInit")
        except (pynvml.NVMLError, _AbsentError, OSError) as e:
            if isinstance(e, pynvml.NVMLError) and e.value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
                self._init_error = "no NVIDIA driver on this host (libnvidia-ml not found): reporting zero GPUs"
            else:
                self._init_error = f"NVML could not start ({e}): reporting zero GPUs"
            log.warning("nvml unavailable reason=%r", self._init_error)
            return False
        self._initialised = True
        self._event_set = self._opt("nvmlEventSetCreate")
        return True

    def close(self) -> None:
        if self._initialised:
            if self._event_set is not None:
                self._opt("nvmlEventSetFree", self._event_set)
            self._opt("nvmlShutdown")
            self._initialised = False

    # -- reading ---------------------------------------------------------------------------------
    def read(self, with_metrics: bool = True) -> HostGpus:
        if not self._init():
            return HostGpus((), error=self._init_error)
        driver = _text(self._opt("nvmlSystemGetDriverVersion"))
        cuda_raw = self._opt("nvmlSystemGetCudaDriverVersion_v2") or self._opt("nvmlSystemGetCudaDriverVersion")
        cuda = f"{cuda_raw // 1000}.{(cuda_raw % 1000) // 10}" if isinstance(cuda_raw, int) else ""
        try:
            count = int(self._call("nvmlDeviceGetCount"))
        except (pynvml.NVMLError, _AbsentError) as e:
            return HostGpus((), driver, cuda, error=f"NVML could not count GPUs: {e}")
        gpus: list[GpuInfo] = []
        for index in range(count):
            try:
                handle = self._call("nvmlDeviceGetHandleByIndex", index)
            except (pynvml.NVMLError, _AbsentError) as e:
                log.warning("gpu unreadable index=%d error=%s", index, e)
                continue
            gpus.append(self._device(index, handle, with_metrics))
        self._drain_events()
        gpus = [self._with_xids(g) for g in gpus]
        return HostGpus(tuple(gpus), driver, cuda)

    def _device(self, index: int, handle: Any, with_metrics: bool) -> GpuInfo:
        name = _text(self._opt("nvmlDeviceGetName", handle))
        uuid = _text(self._opt("nvmlDeviceGetUUID", handle))
        memory = self._opt("nvmlDeviceGetMemoryInfo", handle)
        total = int(getattr(memory, "total", 0) or 0)
        pci = self._opt("nvmlDeviceGetPciInfo", handle)
        pci_device_id = (int(getattr(pci, "pciDeviceId", 0) or 0) >> 16) & 0xFFFF
        bus_id = _text(getattr(pci, "busId", "")) if pci is not None else ""
        ident = self.catalogue.identify(name, pci_device_id, total)
        cc = self._opt("nvmlDeviceGetCudaComputeCapability", handle)
        compute = (int(cc[0]), int(cc[1])) if cc else (0, 0)
        mig_mode = self._opt("nvmlDeviceGetMigMode", handle)
        mig_enabled = bool(mig_mode and int(mig_mode[0]) == 1)
        profiles = self._mig_profiles(handle) if mig_mode is not None else ()
        reasons: list[str] = []
        ecc = self._opt("nvmlDeviceGetTotalEccErrors", handle, _ECC_UNCORRECTED, _ECC_VOLATILE)
        if isinstance(ecc, int) and ecc > 0:
            reasons.append(f"{ecc} uncorrected ECC errors since boot")
        rows = self._opt("nvmlDeviceGetRemappedRows", handle)
        if rows is not None and len(rows) >= 4:
            if int(rows[2]):
                reasons.append("row remapping pending (reset the GPU)")
            if int(rows[3]):
                reasons.append("row remapping failed (replace the GPU)")
        util = temp = power = used = None
        if with_metrics:
            rates = self._opt("nvmlDeviceGetUtilizationRates", handle)
            util = int(rates.gpu) if rates is not None else None
            temp_raw = self._opt("nvmlDeviceGetTemperature", handle, _TEMP_GPU)
            temp = int(temp_raw) if temp_raw is not None else None
            power_raw = self._opt("nvmlDeviceGetPowerUsage", handle)
            power = power_raw / 1000 if isinstance(power_raw, int) else None
            used = int(getattr(memory, "used", 0)) if memory is not None else None
        if self._event_set is not None and uuid not in self._xids:
            self._xids[uuid] = set()
            self._opt("nvmlDeviceRegisterEvents", handle, _HEALTH_EVENTS, self._event_set)
        return GpuInfo(
            index=index,
            uuid=uuid,
            name=name,
            model=ident.model,
            memory_bytes=total,
            ram_class=ident.ram_class,
            interface=ident.interface,
            pci_bus_id=bus_id,
            pci_device_id=pci_device_id,
            compute_capability=compute,
            mig_enabled=mig_enabled,
            mig_profiles=profiles,
            healthy=not reasons,
            health_reasons=tuple(reasons),
            utilization_percent=util,
            memory_used_bytes=used,
            temperature_celsius=temp,
            power_watts=power,
        )

    def _mig_profiles(self, handle: Any) -> tuple[str, ...]:
        names: list[str] = []
        for i in _MIG_PROFILE_INDICES:
            try:
                info = self._call("nvmlDeviceGetGpuInstanceProfileInfo", handle, i)
            except (_AbsentError, pynvml.NVMLError, KeyError):
                continue
            label = _text(getattr(info, "name", "")).removeprefix("MIG ").strip()
            if not label:  # drivers before the v2 profile struct: derive it (MiB -> GiB rounded up, as NVIDIA does)
                slices = int(getattr(info, "sliceCount", 0) or 0)
                mem_gb = -(-int(getattr(info, "memorySizeMB", 0) or 0) // 1024)
                label = f"{slices}g.{mem_gb}gb" if slices and mem_gb else ""
            if label and label not in names:
                names.append(label)
        return tuple(names)

    def _drain_events(self) -> None:
        if self._event_set is None:
            return
        for _ in range(64):  # bounded: never block on a storm
            try:
                data = self._call("nvmlEventSetWait_v2", self._event_set, 0)
            except (_AbsentError, pynvml.NVMLError):
                return  # Timeout is the normal "no event" answer
            xid = int(getattr(data, "eventData", 0) or 0)
            uuid = ""
            handle = getattr(data, "device", None)
            if handle is not None:
                uuid = _text(self._opt("nvmlDeviceGetUUID", handle))
            if xid in CRITICAL_XIDS and uuid:
                self._xids.setdefault(uuid, set()).add(xid)
                log.warning("gpu xid event gpu=%s xid=%d", uuid, xid)

    def _with_xids(self, gpu: GpuInfo) -> GpuInfo:
        xids = self._xids.get(gpu.uuid)
        if not xids:
            return gpu
        reasons = (*gpu.health_reasons, f"critical XID events {sorted(xids)}")
        return replace(gpu, healthy=False, health_reasons=reasons)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
