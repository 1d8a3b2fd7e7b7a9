"""The NVML probe against real recordings (H100, H200, no driver) and synthetic 8-GPU and MIG hosts."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from provider.config import load
from provider.errors import ConfigError
from provider.inventory.models import DEFAULT_CATALOGUE, Catalogue, ModelEntry
from provider.inventory.nvml import Probe
from tests.unit.fake_nvml import H100, H200, NO_DRIVER, FakeNvml


def test_h100_recording() -> None:
    host = Probe(lib=FakeNvml.load(H100)).read()
    assert host.error == ""
    assert host.driver_version == "580.159.04" and host.cuda_version == "13.0"
    (gpu,) = host.gpus
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.model == "h100" and gpu.ram_class == "80Gi" and gpu.interface == "sxm"
    assert gpu.memory_bytes == 85_520_809_984  # 79.65 GiB, still sold as 80Gi
    assert gpu.pci_device_id == 0x2330 and gpu.pci_bus_id == "00000000:00:06.0"
    assert gpu.uuid == "GPU-7a8ee4d2-1afc-f8a3-6cc4-0fac70c2a51d"
    assert gpu.compute_capability == (9, 0)
    assert gpu.mig_enabled is False
    assert gpu.mig_profiles == ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb", "1g.10gb+me")
    assert gpu.healthy and gpu.health_reasons == ()
    assert gpu.temperature_celsius == 35 and gpu.power_watts == pytest.approx(74.479)
    assert gpu.utilization_percent == 0


def test_h200_recording() -> None:
    (gpu,) = Probe(lib=FakeNvml.load(H200)).read().gpus
    assert (gpu.model, gpu.ram_class, gpu.interface, gpu.pci_device_id) == ("h200", "141Gi", "sxm", 0x2335)


def test_no_driver_means_zero_gpus_and_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    probe = Probe(lib=FakeNvml.load(NO_DRIVER))
    with caplog.at_level(logging.WARNING):
        first = probe.read()
        second = probe.read()
    assert first.gpus == () and second.gpus == ()
    assert "no NVIDIA driver" in first.error
    assert len([r for r in caplog.records if "nvml unavailable" in r.getMessage()]) == 1


def test_not_supported_is_absent_not_an_error() -> None:
    lib = FakeNvml.load(H100)
    lib.devices[0]["nvmlDeviceGetTemperature[0]"] = {
        "error": "NVMLError_NotSupported",
        "str": "Not Supported",
        "value": 3,
    }
    lib.devices[0]["nvmlDeviceGetRemappedRows"] = {
        "error": "NVMLError_NotSupported",
        "str": "Not Supported",
        "value": 3,
    }
    (gpu,) = Probe(lib=lib).read().gpus
    assert gpu.temperature_celsius is None
    assert gpu.healthy


def test_synthetic_eight_gpu_host() -> None:
    host = Probe(lib=FakeNvml.load(H100, gpus=8)).read()
    assert len(host.gpus) == 8
    assert len({g.uuid for g in host.gpus}) == 8
    assert [g.index for g in host.gpus] == list(range(8))
    assert all(g.model == "h100" for g in host.gpus)


def test_mig_enabled_host() -> None:
    host = Probe(lib=FakeNvml.load(H100, gpus=2, mig=True)).read()
    assert all(g.mig_enabled for g in host.gpus)


def test_unhealthy_gpu_is_reported_with_reasons() -> None:
    lib = FakeNvml.load(H100, gpus=2)
    lib.devices[1]["nvmlDeviceGetTotalEccErrors[1, 0]"] = {"ok": 3}
    lib.devices[1]["nvmlDeviceGetRemappedRows"] = {"ok": [0, 1, 1, 0]}
    healthy, sick = Probe(lib=lib).read().gpus
    assert healthy.healthy
    assert not sick.healthy
    assert any("ECC" in r for r in sick.health_reasons) and any("pending" in r for r in sick.health_reasons)


def test_unknown_gpu_is_still_sold_under_a_derived_key() -> None:
    lib = FakeNvml.load(H100)
    lib.devices[0]["nvmlDeviceGetName"] = {"ok": "NVIDIA RTX PRO 6000 Blackwell Server Edition"}
    lib.devices[0]["nvmlDeviceGetPciInfo"]["ok"]["pciDeviceId"] = 0x2BB510DE
    (gpu,) = Probe(lib=lib).read().gpus
    assert gpu.model == "rtxpro" and gpu.ram_class == "80Gi"


def test_operator_catalogue_entries_win() -> None:
    lib = FakeNvml.load(H100)
    catalogue = Catalogue().extended([ModelEntry("h100-hbm3", 80, "sxm", (0x2330,))])
    (gpu,) = Probe(catalogue=catalogue, lib=lib).read().gpus
    assert gpu.model == "h100-hbm3"


def test_read_uses_only_recorded_calls() -> None:
    lib = FakeNvml.load(H100)
    Probe(lib=lib).read()
    assert "nvmlDeviceGetName" in lib.calls and "nvmlInit" in lib.calls


def test_mig_profile_names_are_derived_when_the_driver_gives_none() -> None:
    lib = FakeNvml.load(H100)
    for i in range(8):
        entry = lib.devices[0].get(f"nvmlDeviceGetGpuInstanceProfileInfo[{i}]", {})
        if "ok" in entry:
            entry["ok"].pop("name")
    (gpu,) = Probe(lib=lib).read().gpus
    assert gpu.mig_profiles == ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")


def test_the_operators_gpu_model_table_names_the_gpu_and_wins_over_the_built_in_one(tmp_path: Path) -> None:
    config = tmp_path / "provider.yaml"
    config.write_text(
        """
inventory:
  gpu_models:
    - {key: h200-nvl-lab, ram_gib: 141, interface: pcie, pci_device_ids: [0x2335]}
    - {key: b300, ram_gib: 288, interface: sxm, names: [NVIDIA B300 SXM6 AC]}
"""
    )
    catalogue = load(config).inventory.catalogue()
    (gpu,) = Probe(catalogue, lib=FakeNvml.load(H200)).read().gpus  # matched by its PCI device id
    assert (gpu.model, gpu.ram_class, gpu.interface) == ("h200-nvl-lab", "141Gi", "pcie")
    # GFD's product label (the NVML name with "-") finds the operator's entry too, and it wins
    assert catalogue.from_product_label("NVIDIA-B300-SXM6-AC").model == "b300"
    assert DEFAULT_CATALOGUE.from_product_label("NVIDIA-B300-SXM6-AC").known is False
    assert catalogue.from_product_label("NVIDIA-H100-80GB-HBM3").model == "h100"  # the rest is unchanged


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{key: H100 Lab, ram_gib: 80}", "inventory.gpu_models.0.key"),
        ("{key: x1, ram_gib: 0}", "inventory.gpu_models.0.ram_gib"),
        ("{key: x1, ram_gib: 80, interface: nvlink}", "inventory.gpu_models.0.interface"),
        ("{key: x1, ram_gib: 80, pci_device_ids: [0x12345]}", "inventory.gpu_models.0.pci_device_ids"),
    ],
)
def test_a_bad_gpu_model_entry_names_its_key(entry: str, message: str, tmp_path: Path) -> None:
    config = tmp_path / "provider.yaml"
    config.write_text(f"inventory:\n  gpu_models:\n    - {entry}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(config)
