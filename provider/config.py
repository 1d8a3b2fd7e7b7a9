"""Every setting of the daemon: a YAML file (optional) over documented defaults, validated, plus the few
environment variables the Helm chart sets. The only module that reads os.environ."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from provider.bidding.pricing import LinearPricing
from provider.errors import ConfigError

DEFAULT_KEYRING = Path.home() / ".config" / "gpu-provider" / "keyring.json"
DEFAULT_STATE = Path.home() / ".local" / "state" / "gpu-provider"
# USD per GPU-month out of the box (operators set their own), and the USD value of one denom unit.
DEFAULT_GPU_PRICES = {"h100": Decimal(1600), "h200": Decimal(2200), "a100": Decimal(900), "rtx4090": Decimal(300)}
DEFAULT_USD_PER_DENOM = {"uact": Decimal("0.000001"), "uakt": Decimal("0.0000006")}
BINARY_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "Pi": 1024**5}


def node_name_from_env() -> str:
    """The node an agent runs on: the DaemonSet sets NODE_NAME from spec.nodeName."""
    return os.environ.get("NODE_NAME", "")


def keyring_path_from_env() -> Path:
    return Path(os.environ.get("GPU_PROVIDER_KEYRING", str(DEFAULT_KEYRING)))


@dataclass(frozen=True)
class PricingConfig:
    strategy: str = "linear"  # linear | script
    script_path: str = ""
    script_timeout: float = 10.0
    script_concurrency: int = 8
    linear: LinearPricing = field(default_factory=LinearPricing)


@dataclass(frozen=True)
class Config:
    chain_url: str = "http://127.0.0.1:26680"
    key_name: str = "provider"
    keyring: Path = DEFAULT_KEYRING
    host_uri: str = "https://127.0.0.1:8443"
    attributes: dict[str, str] = field(default_factory=lambda: {"host": "gpu-provider", "tier": "community"})
    state_dir: Path = DEFAULT_STATE
    metrics_address: str = "127.0.0.1:9464"  # Prometheus scrapes /metrics here; "" disables
    kubeconfig: str | None = None
    deposit_denom: str = "uakt"
    deposit_amount: Decimal = Decimal(500_000)
    bid_hold_seconds: float = 330.0
    tenant_allow: frozenset[str] | None = None
    tenant_deny: frozenset[str] = frozenset()
    storage_classes: frozenset[str] = frozenset({"default", "beta1", "beta2", "beta3"})
    storage_capacity: dict[str, int] = field(default_factory=dict)
    static_nodes: tuple[dict[str, Any], ...] = ()  # inventory without Kubernetes (demo, tests)
    pricing: PricingConfig = field(default_factory=PricingConfig)


def _dec(value: Any, where: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if not d.is_finite() or d < 0:
        raise ConfigError(f"{where}: must be a non-negative number")
    return d


def _size(value: Any, where: str) -> int:
    text = str(value)
    for suffix, mult in BINARY_UNITS.items():
        if text.endswith(suffix):
            return int(_dec(text[: -len(suffix)], where) * mult)
    return int(_dec(text, where))


def _address(text: str, where: str) -> str:
    if not text:
        return ""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: {text!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    return text


def _map(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    return raw


def load(path: Path | None) -> Config:
    """Read the YAML config file (None: defaults only) and the environment overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = _map(yaml.safe_load(path.read_text()), str(path))
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
    known = {"chain", "provider", "bidding", "pricing", "inventory"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    chain, prov, bidding, pricing, inv = (
        _map(raw.get(k), k) for k in ("chain", "provider", "bidding", "pricing", "inventory")
    )
    base = Config()
    tenants = _map(bidding.get("tenants"), "bidding.tenants")
    deposit = _map(bidding.get("deposit"), "bidding.deposit")
    linear = _map(pricing.get("linear"), "pricing.linear")
    script = _map(pricing.get("script"), "pricing.script")
    strategy = str(pricing.get("strategy", "linear"))
    if strategy not in ("linear", "script"):
        raise ConfigError("pricing.strategy: use linear or script")
    if strategy == "script" and not script.get("path"):
        raise ConfigError("pricing.script.path: required with strategy script")
    d = LinearPricing()

    def rates(key: str) -> dict[str, Decimal]:
        return {
            str(k): _dec(v, f"pricing.linear.{key}.{k}")
            for k, v in _map(linear.get(key), f"pricing.linear.{key}").items()
        }

    pricing_cfg = PricingConfig(
        strategy=strategy,
        script_path=str(script.get("path", "")),
        script_timeout=float(script.get("timeout", 10.0)),
        script_concurrency=int(script.get("concurrency", 8)),
        linear=LinearPricing(
            cpu_core=_dec(linear.get("cpu_core", d.cpu_core), "pricing.linear.cpu_core"),
            memory_gib=_dec(linear.get("memory_gib", d.memory_gib), "pricing.linear.memory_gib"),
            ephemeral_gib=_dec(linear.get("ephemeral_gib", d.ephemeral_gib), "pricing.linear.ephemeral_gib"),
            storage_gib=rates("storage_gib") or d.storage_gib,
            endpoint=_dec(linear.get("endpoint", d.endpoint), "pricing.linear.endpoint"),
            gpu=rates("gpu") or DEFAULT_GPU_PRICES,
            gpu_default=_dec(linear.get("gpu_default", d.gpu_default), "pricing.linear.gpu_default"),
            usd_per_denom=rates("usd_per_denom") or DEFAULT_USD_PER_DENOM,
            per_block=bool(linear.get("per_block", False)),
        ),
    )
    allow = tenants.get("allow")
    return Config(
        chain_url=os.environ.get("GPU_PROVIDER_CHAIN_URL", str(chain.get("url", base.chain_url))),
        key_name=str(chain.get("key", base.key_name)),
        keyring=Path(os.environ.get("GPU_PROVIDER_KEYRING", str(chain.get("keyring", base.keyring)))).expanduser(),
        host_uri=str(prov.get("host_uri", base.host_uri)),
        attributes={str(k): str(v) for k, v in _map(prov.get("attributes"), "provider.attributes").items()}
        or base.attributes,
        state_dir=Path(str(prov.get("state_dir", base.state_dir))).expanduser(),
        metrics_address=_address(str(prov.get("metrics_address", base.metrics_address)), "provider.metrics_address"),
        kubeconfig=inv.get("kubeconfig") or os.environ.get("KUBECONFIG") or None,
        deposit_denom=str(deposit.get("denom", base.deposit_denom)),
        deposit_amount=_dec(deposit.get("amount", base.deposit_amount), "bidding.deposit.amount"),
        bid_hold_seconds=float(bidding.get("hold_seconds", base.bid_hold_seconds)),
        tenant_allow=None if allow is None else frozenset(str(a) for a in allow),
        tenant_deny=frozenset(str(a) for a in tenants.get("deny") or ()),
        storage_classes=frozenset(str(c) for c in bidding.get("storage_classes") or base.storage_classes),
        storage_capacity={
            str(k): _size(v, f"inventory.storage_capacity.{k}")
            for k, v in _map(inv.get("storage_capacity"), "inventory.storage_capacity").items()
        },
        static_nodes=tuple(_map(n, "inventory.static[]") for n in inv.get("static") or ()),
        pricing=pricing_cfg,
    )
