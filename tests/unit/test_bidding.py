"""Bid policy and pricing: every filter and every pricing rule, as pure functions."""

from __future__ import annotations

import asyncio
import json
import math
import stat
import textwrap
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import pytest

import sdl
from provider.bidding.policy import GpuOffer, ProviderProfile, decide
from provider.bidding.pricing import BLOCKS_PER_MONTH, LinearPricing, NoPrice, Quote, ScriptPricing
from provider.money import ZERO, Dec

SDL = textwrap.dedent(
    """\
    version: "2.0"
    services:
      web: {image: vllm, expose: [{port: 80, to: [{global: true}]}]}
    profiles:
      compute:
        web:
          resources:
            cpu: {units: 4}
            memory: {size: 16Gi}
            storage: [{size: 10Gi}]
            gpu: {units: 2, attributes: {vendor: {nvidia: [{model: h100, ram: 80Gi}]}}}
      placement:
        dc:
          attributes: {region: us-west}
          pricing: {web: {denom: uact, amount: 100000}}
    deployment:
      web: {dc: {profile: web, count: 1}}
    """
)


def group(text: str = SDL) -> sdl.GroupSpec:
    return sdl.parse(text).groups[0]


H100 = GpuOffer("h100", "80Gi", "sxm")
PROFILE = ProviderProfile("gp1me", {"region": "us-west", "tier": "1"}, gpu_offers=frozenset({H100}))


def test_bids_when_everything_matches() -> None:
    assert decide("gp1tenant", group(), PROFILE).bid


@pytest.mark.parametrize(
    "change,reason",
    [
        (lambda t: t.replace("region: us-west}", "region: eu}"), "placement_attributes"),
        (lambda t: t.replace("model: h100, ram: 80Gi", "model: a100"), "gpu_model_not_offered"),
        (lambda t: t.replace("ram: 80Gi", "ram: 40Gi"), "gpu_model_not_offered"),
        (
            lambda t: t.replace(
                "[{size: 10Gi}]", "[{size: 10Gi}, {name: d, size: 1Gi, attributes: {persistent: true, class: ram2}}]"
            ),
            None,
        ),
        (lambda t: t.replace("denom: uact", "denom: ibc/ABC"), "denom_not_accepted"),
        (  # a leased IP: no IP leases here, so no bid (they would be served as node ports)
            lambda t: t.replace("global: true}", "global: true, ip: lb}") + "endpoints:\n  lb: {kind: ip}\n",
            "ip_leases_not_offered",
        ),
    ],
)
def test_each_filter(change: object, reason: str | None) -> None:
    text = change(SDL)  # type: ignore[operator]
    if reason is None:  # invalid for the network already (an unknown storage class): never an order
        with pytest.raises(sdl.SdlError, match="class"):
            group(text)
        return
    g = group(text)
    decision = decide("gp1tenant", g, PROFILE)
    assert not decision.bid and decision.reason == reason and decision.detail


def test_storage_class_not_offered() -> None:
    text = SDL.replace(
        "[{size: 10Gi}]", "[{size: 10Gi}, {name: d, size: 1Gi, attributes: {persistent: true, class: beta1}}]"
    ).replace("image: vllm,", "image: vllm, params: {storage: {d: {mount: /d}}},")
    profile = ProviderProfile(
        "gp1me", PROFILE.attributes, gpu_offers=PROFILE.gpu_offers, storage_classes=frozenset({"beta3"})
    )
    assert decide("t", group(text), profile).reason == "storage_class_not_offered"


def test_wildcard_gpu_matches_any_offer() -> None:
    text = SDL.replace("{nvidia: [{model: h100, ram: 80Gi}]}", "{nvidia: }")
    assert decide("t", group(text), PROFILE).bid


def test_tenant_allow_and_deny_lists() -> None:
    deny = ProviderProfile("me", PROFILE.attributes, gpu_offers=PROFILE.gpu_offers, tenant_deny=frozenset({"bad"}))
    assert decide("bad", group(), deny).reason == "tenant_denied"
    allow = ProviderProfile("me", PROFILE.attributes, gpu_offers=PROFILE.gpu_offers, tenant_allow=frozenset({"good"}))
    assert decide("other", group(), allow).reason == "tenant_not_allowed"
    assert decide("good", group(), allow).bid


def test_signed_by_all_of_and_any_of() -> None:
    text = SDL.replace(
        "attributes: {region: us-west}",
        "attributes: {region: us-west}\n      signedBy: {anyOf: [aud1, aud2], allOf: [aud3]}",
    )
    g = group(text)
    signed = {"region": "us-west"}
    none = ProviderProfile("me", PROFILE.attributes, gpu_offers=PROFILE.gpu_offers)
    assert decide("t", g, none).reason == "signed_by"  # own attributes are not enough once signedBy is set
    only_all = ProviderProfile("me", PROFILE.attributes, audited={"aud3": signed}, gpu_offers=PROFILE.gpu_offers)
    assert decide("t", g, only_all).reason == "signed_by"
    both = ProviderProfile(
        "me", PROFILE.attributes, audited={"aud3": signed, "aud2": signed}, gpu_offers=PROFILE.gpu_offers
    )
    assert decide("t", g, both).bid


# -- pricing ---------------------------------------------------------------------------------------


def test_linear_price_converts_monthly_usd_to_per_block() -> None:
    pricing = LinearPricing(
        cpu_core=Dec.parse(2),
        memory_gib=Dec.parse(1),
        ephemeral_gib=Dec.parse("0.1"),
        endpoint=Dec.parse(0),
        gpu={"h100": Dec.parse(1000)},
    )
    g = group()
    monthly = Fraction(4 * 2 + 16 * 1) + Fraction(1, 10) * 10 + 2 * 1000  # USD per month
    quote = pricing.quote(g, {1: ("h100", "80Gi", "sxm")})
    assert isinstance(quote, Quote) and quote.denom == "uact"
    per_block = monthly / BLOCKS_PER_MONTH / Fraction(1, 10**6)  # uact per block, exactly
    micro = math.ceil(per_block * 10**6)  # rounded up once, to 6 decimals
    assert quote.amount == Dec.parse(f"{micro // 10**6}.{micro % 10**6:06d}")


def test_a_price_on_the_6_decimal_grid_is_not_rounded_up_twice() -> None:
    # 429909 USD/month at 1 uact = 1 USD is exactly 1 uact per block: no rounding may move it
    pricing = LinearPricing(
        cpu_core=Dec.parse(429909), memory_gib=ZERO, ephemeral_gib=ZERO, endpoint=ZERO, gpu={"h100": ZERO},
        usd_per_denom={"uact": Dec.parse(1)},
    )  # fmt: skip
    one_cpu = group().resources[0]
    g = replace(group(), resources=(replace(one_cpu, resources=replace(one_cpu.resources, cpu_millis=1000)),))
    assert pricing.quote(g, {}) == Quote(Dec.parse(1), "uact")


def test_gpu_price_lookup_falls_back_model_ram_interface() -> None:
    p = LinearPricing(gpu={"a100": Dec.parse(900), "a100.80Gi": Dec.parse(1000), "a100.80Gi.pcie": Dec.parse(950)})
    assert p.gpu_price("a100", "80Gi", "pcie") == Dec.parse(950)
    assert p.gpu_price("a100", "80Gi", "sxm") == Dec.parse(1000)
    assert p.gpu_price("a100", "40Gi", "sxm") == Dec.parse(900)
    assert p.gpu_price("b200", "180Gi", "sxm") == Dec.parse(1000)  # unknown: the most expensive known


def test_never_above_max_never_zero_never_unknown_denom() -> None:
    g = group()
    expensive = LinearPricing(gpu={"h100": Dec.parse(10**9)})
    assert isinstance(expensive.quote(g, {}), NoPrice) and expensive.quote(g, {}).reason == "price_above_max"  # type: ignore[union-attr]
    free = LinearPricing(
        cpu_core=Dec.parse(0),
        memory_gib=Dec.parse(0),
        ephemeral_gib=Dec.parse(0),
        endpoint=Dec.parse(0),
        gpu={"h100": Dec.parse(0)},
    )
    assert free.quote(g, {}).reason == "price_zero"  # type: ignore[union-attr]
    no_rate = LinearPricing(usd_per_denom={})
    assert no_rate.quote(g, {}).reason == "denom_not_priced"  # type: ignore[union-attr]
    per_block = LinearPricing(
        per_block=True,
        cpu_core=Dec.parse(1),
        memory_gib=Dec.parse(0),
        ephemeral_gib=Dec.parse(0),
        endpoint=Dec.parse(0),
        gpu={"h100": Dec.parse(10)},
    )
    assert per_block.quote(g, {}) == Quote(Dec.parse(24), "uact")


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "price.sh"
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_script_pricing_gets_akash_json_and_its_answer_is_checked(tmp_path: Path) -> None:
    out = tmp_path / "stdin.json"
    path = script(tmp_path, f'cat > {out}\necho "$AKASH_DENOM" > {tmp_path}/denom\necho 1234.5\n')
    quote = asyncio.run(ScriptPricing(path).price(group(), {1: ("h100", "80Gi", "sxm")}, owner="gp1t"))
    assert quote == Quote(Dec.parse("1234.5"), "uact")
    sent = json.loads(out.read_text())
    assert sent["resources"][0]["gpu"] == {
        "units": 2,
        "attributes": {"vendor": {"nvidia": {"model": "h100", "ram": "80Gi", "interface": "sxm"}}},
    }
    assert sent["resources"][0]["cpu"] == 4000 and sent["price"]["denom"] == "uact"
    assert (tmp_path / "denom").read_text().strip() == "uact"


@pytest.mark.parametrize(
    "body,reason",
    [
        ("exit 3\n", "pricing_failed"),
        ("echo lots\n", "pricing_failed"),
        ("echo 0\n", "price_zero"),
        ("echo 99999999\n", "price_above_max"),
        ("sleep 5; echo 1\n", "pricing_failed"),
    ],
)
def test_script_failures_mean_no_bid(tmp_path: Path, body: str, reason: str) -> None:
    quote = asyncio.run(ScriptPricing(script(tmp_path, body), timeout=0.5).price(group(), {}))
    assert isinstance(quote, NoPrice) and quote.reason == reason


def test_script_concurrency_is_limited(tmp_path: Path) -> None:
    log = tmp_path / "log"
    body = f"echo start >> {log}; sleep 0.2; echo end >> {log}; echo 10\n"
    pricing = ScriptPricing(script(tmp_path, body), concurrency=2)

    async def go() -> list[object]:
        return list(await asyncio.gather(*(pricing.price(group(), {}) for _ in range(6))))

    results = asyncio.run(go())
    assert all(isinstance(r, Quote) for r in results)
    running = peak = 0
    for line in log.read_text().split():
        running += 1 if line == "start" else -1
        peak = max(peak, running)
    assert peak == 2  # never more than the limit at once, and the limit was used
