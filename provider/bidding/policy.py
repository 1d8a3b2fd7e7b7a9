"""Which orders to bid on: a pure function of the order, the provider's profile and its offers.

"Won't bid" is a value with a reason from a bounded set (it becomes a metric label), never an error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

from provider.domain import MAX_VOLUMES_PER_UNIT, GpuRequirement
from provider.money import Dec, MoneyError
from sdl import group_limit_problems
from sdl.spec import EndpointKind, GroupSpec

SKIP_REASONS = (
    "invalid_order",
    "tenant_denied",
    "tenant_not_allowed",
    "placement_attributes",
    "signed_by",
    "gpu_model_not_offered",
    "ip_leases_not_offered",
    "storage_class_not_offered",
    "denom_not_accepted",
    "too_many_volumes",
)


@dataclass(frozen=True, slots=True)
class GpuOffer:
    model: str
    ram_class: str
    interface: str


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    """What this provider is and offers, as the policy needs it."""

    address: str
    attributes: Mapping[str, str]
    audited: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # auditor -> signed attributes
    gpu_offers: frozenset[GpuOffer] = frozenset()
    storage_classes: frozenset[str] = frozenset({"default", "beta1", "beta2", "beta3"})
    denoms: frozenset[str] = frozenset({"uakt", "uact"})
    tenant_allow: frozenset[str] | None = None  # None: everyone
    tenant_deny: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Decision:
    bid: bool
    reason: str = ""
    detail: str = ""


BID = Decision(True)


def _skip(reason: str, detail: str) -> Decision:
    return Decision(False, reason, detail)


def attributes_satisfied(required: Mapping[str, str], offered: Mapping[str, str]) -> bool:
    """Every required attribute matched by an offered one (required keys may be globs, as on Akash)."""
    for key, value in required.items():
        if not any(fnmatch.fnmatchcase(k, key) and v == value for k, v in offered.items()):
            return False
    return True


def decide(owner: str, group: GroupSpec, profile: ProviderProfile) -> Decision:
    if owner in profile.tenant_deny:
        return _skip("tenant_denied", f"tenant {owner} is on the deny list")
    if profile.tenant_allow is not None and owner not in profile.tenant_allow:
        return _skip("tenant_not_allowed", f"tenant {owner} is not on the allow list")
    problems = group_limit_problems(group)  # the chain's own limits: a hostile order stops here
    if problems:
        return _skip("invalid_order", "; ".join(problems[:3]))
    try:
        for unit in group.resources:
            Dec.from_decimal(unit.price.amount)
    except MoneyError as e:
        return _skip("invalid_order", f"price: {e}")
    leased_ips = [
        u.resources.id for u in group.resources if any(e.kind == EndpointKind.LEASED_IP for e in u.resources.endpoints)
    ]
    if leased_ips:  # we have no IP leases to give: bidding would serve them as node ports, not what was bought
        return _skip("ip_leases_not_offered", f"unit {leased_ips[0]} asks for a leased IP; this provider offers none")
    required = {a.key: a.value for a in group.attributes or ()}
    all_of, any_of = group.signed_by_all_of or (), group.signed_by_any_of or ()
    if all_of or any_of:
        for auditor in all_of:
            if not attributes_satisfied(required, profile.audited.get(auditor, {})):
                return _skip("signed_by", f"auditor {auditor} has not signed the required attributes for this provider")
        if any_of and not any(attributes_satisfied(required, profile.audited.get(a, {})) for a in any_of):
            return _skip("signed_by", "none of the anyOf auditors signed the required attributes for this provider")
    elif not attributes_satisfied(required, profile.attributes):
        missing = sorted(k for k, v in required.items() if profile.attributes.get(k) != v)
        return _skip("placement_attributes", f"placement attributes not offered: {', '.join(missing)}")
    denoms = {u.price.denom for u in group.resources}
    if len(denoms) != 1 or not denoms <= profile.denoms:
        return _skip(
            "denom_not_accepted",
            f"priced in {', '.join(sorted(denoms))}; accepted: {', '.join(sorted(profile.denoms))}",
        )
    for unit in group.resources:
        r = unit.resources
        volumes = r.storage or ()
        if len(volumes) > MAX_VOLUMES_PER_UNIT:
            return _skip("too_many_volumes", f"unit {r.id} has {len(volumes)} volumes; at most {MAX_VOLUMES_PER_UNIT}")
        for v in volumes:
            if v.persistent and (v.storage_class or "default") not in profile.storage_classes:
                return _skip("storage_class_not_offered", f"storage class {v.storage_class!r} is not offered")
        if r.gpu_units:
            options = [opt for a in r.gpu_attributes if (opt := GpuRequirement.from_attribute_key(a.key)) is not None]
            if not any(_offered(opt, profile.gpu_offers) for opt in options):
                wanted = (
                    ", ".join(a.key.removeprefix("vendor/nvidia/model/") for a in r.gpu_attributes)
                    or "an unspecified GPU"
                )
                return _skip("gpu_model_not_offered", f"unit {r.id} wants {wanted}")
    return BID


def _offered(req: GpuRequirement, offers: frozenset[GpuOffer]) -> bool:
    return any(req.matches(o.model, o.ram_class, o.interface) for o in offers)
