"""Prices: per-resource linear rates with a per-GPU-model table, or an operator's external script.

Rates are monthly USD targets converted to a per-block price in the order's denom (the way Akash's
reference price script does it, at 429,909 blocks per month), or given directly per block. A price is
never above the order's maximum, never in another denom, and never zero: those are "no bid" answers.
Money is exact (provider.money.Dec, 18 decimals); a price is rounded up to 6 decimals, once, at the end.
Both strategies implement ``PricingPort``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

from provider.chain.types import Coin
from provider.domain import GpuRequirement
from provider.money import ZERO, Dec, MoneyError
from sdl.spec import GroupSpec

BLOCKS_PER_MONTH = 429_909
GIB = 1024**3
PRICE_DECIMALS = 6  # uakt/uact per block
MAX_SCRIPT_OUTPUT = 4096
_PLAIN_DECIMAL = re.compile(r"^[0-9]{1,40}(\.[0-9]{1,60})?$")
GpuModels = Mapping[int, tuple[str, str, str]]  # resource unit id -> (model, ram class, interface) placed on


class PricingPort(Protocol):
    """Prices one order's group; ``concurrency`` is how many quotes may run at once."""

    @property
    def concurrency(self) -> int: ...

    async def price(self, group: GroupSpec, gpu_models: GpuModels, owner: str) -> Quote | NoPrice: ...


@dataclass(frozen=True, slots=True)
class Quote:
    amount: Dec
    denom: str


@dataclass(frozen=True, slots=True)
class NoPrice:
    reason: str  # price_above_max | price_zero | pricing_failed | denom_not_priced
    detail: str


@dataclass(frozen=True)
class LinearPricing:
    """USD per month per unit, converted with ``usd_per_denom`` (1 uact = 1e-6 USD)."""

    cpu_core: Dec = Dec.parse("1.60")
    memory_gib: Dec = Dec.parse("0.80")
    ephemeral_gib: Dec = Dec.parse("0.02")
    storage_gib: Mapping[str, Dec] = field(
        default_factory=lambda: {
            "default": Dec.parse("0.02"),
            "beta1": Dec.parse("0.01"),
            "beta2": Dec.parse("0.03"),
            "beta3": Dec.parse("0.04"),
        }
    )
    endpoint: Dec = Dec.parse("0.05")
    gpu: Mapping[str, Dec] = field(default_factory=dict)  # "h100" | "h100.80Gi" | "h100.80Gi.sxm" -> USD/month
    gpu_default: Dec = Dec.parse(100)
    usd_per_denom: Mapping[str, Dec] = field(default_factory=lambda: {"uact": Dec.parse("0.000001")})
    per_block: bool = False  # rates are already per block in the order's denom
    concurrency: int = 64  # pure arithmetic: no reason to limit

    def gpu_price(self, model: str, ram: str, interface: str) -> Dec:
        for key in (f"{model}.{ram}.{interface}", f"{model}.{ram}", model):
            if key in self.gpu:
                return self.gpu[key]
        # an unknown model is priced as the most expensive one we know (as Akash's reference script does)
        return max(self.gpu.values(), default=self.gpu_default)

    def monthly_exact(self, group: GroupSpec, gpu_models: GpuModels) -> Fraction:
        """USD per month for the whole group, as an exact rational (no rounding at all)."""
        total = Fraction(0)
        for unit in group.resources:
            r = unit.resources
            each = self.cpu_core.to_fraction() * Fraction(r.cpu_millis or 0, 1000)
            each += self.memory_gib.to_fraction() * Fraction(r.memory_bytes or 0, GIB)
            for v in r.storage or ():
                rate = (
                    self.storage_gib.get(v.storage_class or "default", self.ephemeral_gib)
                    if v.persistent
                    else self.ephemeral_gib
                )
                each += rate.to_fraction() * Fraction(v.size, GIB)
            each += self.endpoint.to_fraction() * len(r.endpoints)
            if r.gpu_units:
                model, ram, interface = gpu_models.get(r.id) or _declared_model(group, r.id)
                each += self.gpu_price(model, ram, interface).to_fraction() * r.gpu_units
            total += each * unit.count
        return total

    def monthly_usd(self, group: GroupSpec, gpu_models: GpuModels) -> Dec:
        return Dec.from_fraction(self.monthly_exact(group, gpu_models))

    def quote(self, group: GroupSpec, gpu_models: GpuModels) -> Quote | NoPrice:
        """The per-block price, computed exactly and rounded up once to 6 decimals."""
        denom = group.resources[0].price.denom if group.resources else ""
        monthly = self.monthly_exact(group, gpu_models)
        if self.per_block:
            amount = monthly
        else:
            usd = self.usd_per_denom.get(denom)
            if usd is None or usd <= ZERO:
                return NoPrice("denom_not_priced", f"no USD rate for {denom!r}; set pricing.usd_per_denom.{denom}")
            amount = monthly / BLOCKS_PER_MONTH / usd.to_fraction()
        return finish(Dec.from_fraction(amount, PRICE_DECIMALS, "ceiling"), group)

    async def price(self, group: GroupSpec, gpu_models: GpuModels, owner: str = "") -> Quote | NoPrice:
        return self.quote(group, gpu_models)


def _declared_model(group: GroupSpec, unit_id: int) -> tuple[str, str, str]:
    for unit in group.resources:
        if unit.resources.id == unit_id:
            for a in unit.resources.gpu_attributes:
                req = GpuRequirement.from_attribute_key(a.key)
                if req is not None:
                    return req.model, req.ram, req.interface
    return "*", "", ""


def max_price(group: GroupSpec) -> Coin:
    """The order's maximum per block, exactly: sum of price x count over its units (MoneyError if a
    price is not an exact 18-decimal amount)."""
    total = ZERO
    for u in group.resources:
        total += Dec.from_decimal(u.price.amount).times(u.count)
    return Coin(group.resources[0].price.denom if group.resources else "", total)


def finish(amount: Dec, group: GroupSpec) -> Quote | NoPrice:
    """The rules every price obeys, whatever computed it."""
    try:
        cap = max_price(group)
    except MoneyError as e:
        return NoPrice("invalid_order", f"the order's price is not an exact amount: {e}")
    if amount <= ZERO:
        return NoPrice("price_zero", "the computed price is zero; set non-zero rates")
    if amount > cap.amount:
        return NoPrice(
            "price_above_max", f"our price {amount} {cap.denom}/block is above the order's maximum {cap.amount}"
        )
    return Quote(amount, cap.denom)


class ScriptPricing:
    """Runs the operator's script: Akash-compatible JSON on stdin, one decimal price on stdout."""

    def __init__(self, path: str, timeout: float = 10.0, concurrency: int = 8) -> None:
        self.path = path
        self.timeout = timeout
        self.concurrency = concurrency
        self.slots = asyncio.Semaphore(concurrency)

    @staticmethod
    def script_input(group: GroupSpec, gpu_models: GpuModels) -> dict[str, object]:
        resources = []
        for unit in group.resources:
            r = unit.resources
            gpu: dict[str, object] = {"units": r.gpu_units}
            if r.gpu_units:
                model, ram, interface = gpu_models.get(r.id) or _declared_model(group, r.id)
                nv: dict[str, str] = {"model": model}
                if ram:
                    nv["ram"] = ram
                if interface:
                    nv["interface"] = interface
                gpu["attributes"] = {"vendor": {"nvidia": nv}}
            resources.append(
                {
                    "cpu": r.cpu_millis or 0,
                    "memory": r.memory_bytes or 0,
                    "gpu": gpu,
                    "storage": [
                        {"class": (v.storage_class or "default") if v.persistent else "ephemeral", "size": v.size}
                        for v in r.storage or ()
                    ],
                    "count": unit.count,
                    "endpoint_quantity": len(r.endpoints),
                    "ip_lease_quantity": sum(1 for e in r.endpoints if e.kind == 2),
                }
            )
        cap = max_price(group)
        return {
            "resources": resources,
            "price": {"denom": cap.denom, "amount": str(cap.amount)},
            "price_precision": PRICE_DECIMALS,
        }

    async def price(self, group: GroupSpec, gpu_models: GpuModels, owner: str = "") -> Quote | NoPrice:
        try:
            payload = json.dumps(self.script_input(group, gpu_models)).encode()
        except MoneyError as e:
            return NoPrice("invalid_order", f"the order's price is not an exact amount: {e}")
        denom = group.resources[0].price.denom if group.resources else ""
        async with self.slots:
            try:
                proc = await asyncio.create_subprocess_exec(
                    self.path,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env={**os.environ, "AKASH_OWNER": owner, "AKASH_DENOM": denom},
                )
            except OSError as e:
                return NoPrice("pricing_failed", f"cannot run price script {self.path}: {e}")
            try:
                out, err = await asyncio.wait_for(proc.communicate(payload), self.timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                return NoPrice("pricing_failed", f"price script took longer than {self.timeout}s")
        if proc.returncode != 0:
            return NoPrice(
                "pricing_failed", f"price script exited {proc.returncode}: {err.decode(errors='replace')[:200]}"
            )
        text = out[:MAX_SCRIPT_OUTPUT].decode(errors="replace").strip()
        if not _PLAIN_DECIMAL.match(text):
            return NoPrice("pricing_failed", f"price script printed {text[:50]!r}, not a plain decimal number")
        # exact whatever its length, then rounded up once to the denom's 6 decimals
        return finish(Dec.from_fraction(Fraction(text), PRICE_DECIMALS, "ceiling"), group)
