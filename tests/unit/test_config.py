"""Configuration: defaults, overrides, and clear errors for bad values."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provider.config import load
from provider.errors import ConfigError
from provider.money import Dec
from tests.conftest import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GPU_PROVIDER_CHAIN_URL", "GPU_PROVIDER_KEYRING", "KUBECONFIG"):
        monkeypatch.delenv(var, raising=False)
    config = load(None)
    assert config.pricing.strategy == "linear"
    assert config.pricing.linear.gpu["h100"] == Dec.parse(1600)
    assert config.bidding.deposit.amount == Dec.parse(500_000)
    assert config.bidding.hold_blocks == 55
    assert config.chain.url == "http://127.0.0.1:26680"


def test_values_from_the_file(tmp_path: Path) -> None:
    config = load(
        write(
            tmp_path,
            "pricing: {linear: {gpu: {h100: 2000}, cpu_core: 1.60}}\ninventory: {storage_capacity: {beta3: 2Ti}}\n"
            "bidding: {tenants: {deny: [gp1bad]}, hold_blocks: 80}\n",
        )
    )
    assert config.pricing.linear.gpu == {"h100": Dec.parse(2000)}
    assert config.pricing.linear.cpu_core == Dec.parse("1.6")  # a YAML float is read from its text, exactly
    assert config.inventory.storage_capacity == {"beta3": 2 * 1024**4}
    assert config.bidding.tenants.deny == ["gp1bad"] and config.bidding.tenants.allow is None
    assert config.bidding.hold_blocks == 80


def test_environment_overrides_keep_their_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPU_PROVIDER_CHAIN_URL", "http://127.0.0.1:1234")
    monkeypatch.setenv("GPU_PROVIDER_KEYRING", str(tmp_path / "k.json"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kc"))
    config = load(write(tmp_path, "chain: {url: http://127.0.0.1:9}"))
    assert config.chain.url == "http://127.0.0.1:1234"
    assert config.chain.keyring == tmp_path / "k.json"
    assert config.inventory.kubeconfig == tmp_path / "kc"


@pytest.mark.parametrize(
    "text,message",
    [
        ("pricing: {strategy: magic}", "pricing.strategy: 'magic' is not allowed"),
        ("pricing: {strategy: script}", "script.path"),
        ("pricing: {linear: {cpu_core: cheap}}", "pricing.linear.cpu_core: 'cheap' is not a decimal amount"),
        ("inventory: {storage_capacity: {beta3: lots}}", "inventory.storage_capacity.beta3: 'lots' is not a size"),
        (
            "bogus: 1",
            "bogus: unknown key; known keys here: api, bidding, chain, deploy, ha, inventory, pricing, provider",
        ),
        ("chain: [1, 2]", "chain: is a list, not a mapping"),
        ("provider: {metrics_address: nowhere}", "provider.metrics_address: 'nowhere' is not HOST:PORT"),
        ("a: [", "invalid YAML"),
        ("bidding: {tenants: {allow: gp1xyz}}", "bidding.tenants.allow: is a string, not a list"),
        ("pricing: {linear: {per_block: 'false'}}", "pricing.linear.per_block: 'false' is a string, not a boolean"),
        ("bidding: {storage_classes: beta3}", "bidding.storage_classes: is a string, not a list"),
        ("bidding: {storage_classes: [beta9]}", "bidding.storage_classes.0: 'beta9' is not allowed"),
        ("bidding: {hold_seconds: soon}", "hold_seconds is gone"),
        ("bidding: {hold_blocks: soon}", "bidding.hold_blocks: 'soon' is a string, not a whole number"),
        ("bidding: {deposit: {amount: -5}}", "bidding.deposit.amount: must not be negative"),
        ("bidding: {deposit: {amount: 1e30}}", "bidding.deposit.amount"),
        ("provider: {attributes: {tier: 1}}", "provider.attributes.tier: 1 is a number, not a string"),
        ("provider: {atributes: {tier: x}}", "provider.atributes: unknown key; known keys here: attributes"),
        ("inventory: {static: [{name: a, gpus: many}]}", "inventory.static.0.gpus"),
        ("[1, 2]", "expected a mapping of sections"),
        ("ha: {enabled: true, renew_seconds: 12}", "retry_seconds < renew_seconds < lease_seconds"),
        ("ha: {enabled: true}\ninventory: {static: [{name: a, gpus: 1}]}", "ha.enabled needs a cluster"),
        ("ha: {lease_name: Not_A_Name}", "ha.lease_name"),
        ("bidding: {recheck_seconds: 0}", "bidding.recheck_seconds"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(write(tmp_path, text))


def test_check_config_prints_the_effective_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "provider.cli", "run", "--check-config", "--config",
         str(write(tmp_path, "bidding: {hold_blocks: 77}\npricing: {linear: {gpu: {h100: 1999.5}}}"))],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load(result.stdout)
    assert effective["bidding"]["hold_blocks"] == 77
    assert effective["pricing"]["linear"]["gpu"] == {"h100": "1999.5"}
    assert effective["chain"]["url"]


def test_version_and_log_flags() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "provider.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.startswith("gpu-provider ")
    bad = subprocess.run(
        [sys.executable, "-m", "provider.cli", "run", "--log-format", "xml"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


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
