"""Prices: per-resource linear rates with a per-GPU-model table, or an operator's external script.

Rates are monthly USD targets converted to a per-block price in the order's denom (the way Akash's
reference price script does it, at 429,909 blocks per month), or given directly per block. A price is
never above the order's maximum, never in another denom, and never zero: those are "no bid" answers.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from provider.inventory.reservations import GpuRequirement
from sdl.spec import GroupSpec

BLOCKS_PER_MONTH = Decimal(429_909)
GIB = Decimal(1024**3)
PRECISION = Decimal("0.000001")  # uakt/uact per block, 6 decimals


@dataclass(frozen=True, slots=True)
class Quote:
    amount: Decimal
    denom: str


@dataclass(frozen=True, slots=True)
class NoPrice:
    reason: str  # price_above_max | price_zero | pricing_failed | denom_not_priced
    detail: str


@dataclass(frozen=True)
class LinearPricing:
    """USD per month per unit, converted with ``usd_per_denom`` (1 uact = 1e-6 USD)."""

    cpu_core: Decimal = Decimal("1.60")
    memory_gib: Decimal = Decimal("0.80")
    ephemeral_gib: Decimal = Decimal("0.02")
    storage_gib: Mapping[str, Decimal] = field(
        default_factory=lambda: {
            "default": Decimal("0.02"),
            "beta1": Decimal("0.01"),
            "beta2": Decimal("0.03"),
            "beta3": Decimal("0.04"),
        }
    )
    endpoint: Decimal = Decimal("0.05")
    gpu: Mapping[str, Decimal] = field(default_factory=dict)  # "h100" | "h100.80Gi" | "h100.80Gi.sxm" -> USD/month
    gpu_default: Decimal = Decimal("100")
    usd_per_denom: Mapping[str, Decimal] = field(default_factory=lambda: {"uact": Decimal("0.000001")})
    per_block: bool = False  # rates are already per block in the order's denom

    def gpu_price(self, model: str, ram: str, interface: str) -> Decimal:
        for key in (f"{model}.{ram}.{interface}", f"{model}.{ram}", model):
            if key in self.gpu:
                return self.gpu[key]
        # an unknown model is priced as the most expensive one we know (as Akash's reference script does)
        return max(self.gpu.values(), default=self.gpu_default)

    def monthly_usd(self, group: GroupSpec, gpu_models: Mapping[int, tuple[str, str, str]]) -> Decimal:
        total = Decimal(0)
        for unit in group.resources:
            r = unit.resources
            each = (
                Decimal(r.cpu_millis or 0) / 1000 * self.cpu_core + Decimal(r.memory_bytes or 0) / GIB * self.memory_gib
            )
            for v in r.storage or ():
                rate = (
                    self.storage_gib.get(v.storage_class or "default", self.ephemeral_gib)
                    if v.persistent
                    else self.ephemeral_gib
                )
                each += Decimal(v.size) / GIB * rate
            each += self.endpoint * len(r.endpoints)
            if r.gpu_units:
                model, ram, interface = gpu_models.get(r.id) or _declared_model(group, r.id)
                each += self.gpu_price(model, ram, interface) * r.gpu_units
            total += each * unit.count
        return total

    def quote(self, group: GroupSpec, gpu_models: Mapping[int, tuple[str, str, str]]) -> Quote | NoPrice:
        denom = group.resources[0].price.denom if group.resources else ""
        monthly = self.monthly_usd(group, gpu_models)
        if self.per_block:
            amount = monthly
        else:
            usd = self.usd_per_denom.get(denom)
            if usd is None or usd <= 0:
                return NoPrice("denom_not_priced", f"no USD rate for {denom!r}; set pricing.usd_per_denom.{denom}")
            amount = monthly / BLOCKS_PER_MONTH / usd
        return finish(amount.quantize(PRECISION, rounding=ROUND_CEILING), group)


def _declared_model(group: GroupSpec, unit_id: int) -> tuple[str, str, str]:
    for unit in group.resources:
        if unit.resources.id == unit_id:
            for a in unit.resources.gpu_attributes:
                req = GpuRequirement.from_attribute_key(a.key)
                if req is not None:
                    return req.model, req.ram, req.interface
    return "*", "", ""


def finish(amount: Decimal, group: GroupSpec) -> Quote | NoPrice:
    """The rules every price obeys, whatever computed it."""
    cap = group.max_price()
    if amount <= 0:
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
        self.slots = asyncio.Semaphore(concurrency)

    @staticmethod
    def script_input(group: GroupSpec, gpu_models: Mapping[int, tuple[str, str, str]]) -> dict[str, object]:
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
        cap = group.max_price()
        return {"resources": resources, "price": {"denom": cap.denom, "amount": str(cap.amount)}, "price_precision": 6}

    async def quote(
        self, group: GroupSpec, gpu_models: Mapping[int, tuple[str, str, str]], owner: str = ""
    ) -> Quote | NoPrice:
        payload = json.dumps(self.script_input(group, gpu_models)).encode()
        denom = group.max_price().denom
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
        text = out.decode(errors="replace").strip()
        try:
            amount = Decimal(text)
        except ArithmeticError:
            return NoPrice("pricing_failed", f"price script printed {text[:50]!r}, not a decimal")
        if not amount.is_finite():
            return NoPrice("pricing_failed", f"price script printed {text[:50]!r}")
        return finish(amount.quantize(PRECISION, rounding=ROUND_CEILING), group)
