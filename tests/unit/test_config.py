"""Configuration: defaults, overrides, and clear errors for bad values."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from provider.config import load
from provider.errors import ConfigError
from tests.conftest import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    config = load(None)
    assert config.pricing.strategy == "linear"
    assert config.pricing.linear.gpu["h100"] == Decimal(1600)
    assert config.deposit_amount == Decimal(500_000)


def test_values_from_the_file(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            "pricing: {linear: {gpu: {h100: 2000}, cpu_core: 3}}\ninventory: {storage_capacity: {beta3: 2Ti}}\n"
            "bidding: {tenants: {deny: [gp1bad]}}\n",
        )
    )
    assert config.pricing.linear.gpu == {"h100": Decimal(2000)} and config.pricing.linear.cpu_core == 3
    assert config.storage_capacity == {"beta3": 2 * 1024**4}
    assert config.tenant_deny == frozenset({"gp1bad"}) and config.tenant_allow is None


@pytest.mark.parametrize(
    "text,message",
    [
        ("pricing: {strategy: magic}", "pricing.strategy"),
        ("pricing: {strategy: script}", "pricing.script.path"),
        ("pricing: {linear: {cpu_core: cheap}}", "pricing.linear.cpu_core"),
        ("inventory: {storage_capacity: {beta3: lots}}", "inventory.storage_capacity.beta3"),
        ("bogus: 1", "unknown config section"),
        ("chain: [1, 2]", "chain: expected a mapping"),
        ("provider: {metrics_address: nowhere}", "provider.metrics_address"),
        ("a: [", "invalid YAML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load(write(tmp_path, text))


def test_daemon_reports_a_bad_config_and_exits_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "provider.cli", "run", "--config", str(write(tmp_path, "pricing: {strategy: magic}"))],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "pricing.strategy" in result.stderr and "Traceback" not in result.stderr


def test_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "provider.cli", "tenant", "--keyring", str(tmp_path / "k.json"), "--key", "nobody", "bids", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "no key named 'nobody'" in result.stderr
