"""The probe against a live NVIDIA driver. Skipped where there is none (every CI run here); run on a
GPU host with `pytest -m gpu tests/unit/test_nvml_real.py`."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET

import pynvml
import pytest

from provider.inventory.nvml import Probe


def _driver_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _driver_present(), reason="no NVIDIA driver on this host")]


def test_probe_matches_the_live_driver() -> None:
    probe = Probe()
    host = probe.read()
    probe.close()
    assert host.error == ""
    assert host.gpus, "a driver is present, so at least one GPU must be read"
    pynvml.nvmlInit()
    try:
        assert len(host.gpus) == pynvml.nvmlDeviceGetCount()
        for gpu in host.gpus:
            handle = pynvml.nvmlDeviceGetHandleByIndex(gpu.index)
            assert gpu.uuid == pynvml.nvmlDeviceGetUUID(handle)
            assert gpu.name == pynvml.nvmlDeviceGetName(handle)
            assert gpu.memory_bytes == pynvml.nvmlDeviceGetMemoryInfo(handle).total
            assert gpu.model, f"{gpu.name} got no model key"
            assert gpu.ram_class.endswith("Gi") and gpu.interface in ("sxm", "pcie", "")
            assert gpu.compute_capability >= (7, 0)
    finally:
        pynvml.nvmlShutdown()


def test_probe_agrees_with_nvidia_smi() -> None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        pytest.skip("nvidia-smi not installed")
    root = ET.fromstring(subprocess.run([smi, "-q", "-x"], capture_output=True, text=True, check=True).stdout)
    host = Probe().read()
    by_uuid = {g.uuid: g for g in host.gpus}
    for node in root.findall("gpu"):
        uuid = node.findtext("uuid") or ""
        gpu = by_uuid[uuid]
        assert gpu.name == node.findtext("product_name")
        total_mib = int((node.findtext("fb_memory_usage/total") or "0").split()[0])
        assert gpu.memory_bytes // (1024 * 1024) == total_mib
        assert host.driver_version == root.findtext("driver_version")
