"""Akash's JSON (REST gateway and typed events) into the chain port's domain types. Pure.

Order group specs come back in the same form the mock chain gives and ``sdl.group_from_json`` reads:
the chain says ``quantity`` where the SDL group JSON says ``size`` (memory, storage), names endpoint
kinds (``SHARED_HTTP``) where the SDL JSON numbers them, and prints LegacyDec amounts with 18 decimals.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from provider.chain.types import Bid, BidId, Coin, Deployment, Event, Lease, Order, OrderId, ProviderInfo
from provider.money import ZERO, Dec

ENDPOINT_KINDS = {"SHARED_HTTP": 0, "RANDOM_PORT": 1, "LEASED_IP": 2}
_STATE_PREFIXES = ("order_", "bid_", "lease_", "deployment_", "group_")


def _state(value: Any) -> str:
    """A state as the chain prints it (``open``, or an enum name) in our lowercase form."""
    text = str(value).lower()
    for prefix in _STATE_PREFIXES:
        text = text.removeprefix(prefix)
    return text


def _val(raw: Any) -> dict[str, str]:
    return {"val": str((raw or {}).get("val", "0"))}


def _attrs(raw: Any) -> list[dict[str, str]]:
    return [{"key": str(a.get("key", "")), "value": str(a.get("value", ""))} for a in raw or []]


def _with_attrs(out: dict[str, Any], raw: Any) -> dict[str, Any]:
    """``out`` plus ``attributes`` when there are any (the SDL JSON omits empty ones, as Go does)."""
    attrs = _attrs((raw or {}).get("attributes"))
    return {**out, "attributes": attrs} if attrs else out


def _endpoint(raw: dict[str, Any]) -> dict[str, Any]:
    kind = ENDPOINT_KINDS.get(str(raw.get("kind", "SHARED_HTTP")), raw.get("kind", 0))
    out: dict[str, Any] = {"kind": int(kind)} if kind else {}
    return {**out, "sequence_number": int(raw.get("sequence_number", 0))}


def group_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """A chain group spec (order ``spec`` or deployment ``group_spec``) in the SDL's group JSON form,
    byte for byte what ``sdl`` writes for the same group (``GroupSpec.to_json``)."""
    req = raw.get("requirements") or {}
    signed = req.get("signed_by") or {}
    units = []
    for unit in raw.get("resources") or []:
        r = unit.get("resource") or {}
        cpu, memory, gpu = r.get("cpu") or {}, r.get("memory") or {}, r.get("gpu") or {}
        resource: dict[str, Any] = {
            "id": int(r.get("id", 0)),
            "cpu": _with_attrs({"units": _val(cpu.get("units"))}, cpu),
            "memory": _with_attrs({"size": _val(memory.get("quantity"))}, memory),
            "storage": [
                _with_attrs({"name": str(s.get("name", "")), "size": _val(s.get("quantity"))}, s)
                for s in r.get("storage") or []
            ],
            "gpu": _with_attrs({"units": _val(gpu.get("units"))}, gpu),
            "endpoints": [_endpoint(e) for e in r.get("endpoints") or []],
        }
        price = unit.get("price") or {}
        units.append(
            {
                "resource": resource,
                "count": int(unit.get("count", 0)),
                "price": {
                    "denom": str(price.get("denom", "")),
                    "amount": Dec.parse(str(price.get("amount", "0"))).legacy(),
                },
            }
        )
    return {
        "name": str(raw.get("name", "")),
        "requirements": {
            "signed_by": {
                "all_of": list(signed.get("all_of") or []) or None,
                "any_of": list(signed.get("any_of") or []) or None,
            },
            "attributes": _attrs(req.get("attributes")) or None,
        },
        "resources": units,
    }


def order_id(raw: dict[str, Any]) -> OrderId:
    return OrderId(str(raw["owner"]), int(raw["dseq"]), int(raw["gseq"]), int(raw["oseq"]))


def bid_id(raw: dict[str, Any]) -> BidId:
    return BidId(order_id(raw), str(raw["provider"]))


def dec_coin(raw: dict[str, Any] | None) -> Coin:
    raw = raw or {}
    return Coin(str(raw.get("denom", "")), Dec.parse(str(raw.get("amount", "0"))))


def order(raw: dict[str, Any]) -> Order:
    return Order(order_id(raw["id"]), _state(raw["state"]), group_spec(raw["spec"]), int(raw.get("created_at", 0)))


def bid(raw: dict[str, Any]) -> Bid:
    """A ``bids/list`` item ({bid, escrow_account}) or a bare bid."""
    b = raw.get("bid", raw)
    return Bid(bid_id(b["id"]), _state(b["state"]), dec_coin(b.get("price")), int(b.get("created_at", 0)))


def lease(raw: dict[str, Any]) -> Lease:
    """A ``leases/list`` item ({lease, escrow_payment}) or a bare lease."""
    x = raw.get("lease", raw)
    reason = str(x.get("reason") or "")
    return Lease(
        bid_id(x["id"]),
        _state(x["state"]),
        dec_coin(x.get("price")),
        int(x.get("created_at", 0)),
        "" if reason in ("", "lease_closed_invalid") else reason.removeprefix("lease_closed_").removeprefix("reason_"),
    )


def escrow_funds(account: dict[str, Any] | None) -> Coin:
    """What an escrow account still holds (its funds minus nothing: the chain keeps them settled)."""
    state = (account or {}).get("state") or {}
    funds = state.get("funds") or []
    if not funds:
        return Coin("", ZERO)
    return dec_coin(funds[0])


def deployment(raw: dict[str, Any]) -> Deployment:
    """A ``deployments/info`` answer ({deployment, groups, escrow_account})."""
    d = raw["deployment"]
    groups = sorted(raw.get("groups") or [], key=lambda g: int(g["id"]["gseq"]))
    return Deployment(
        str(d["id"]["owner"]),
        int(d["id"]["dseq"]),
        _state(d["state"]),
        base64.b64decode(d.get("hash") or "").hex(),
        tuple(group_spec(g["group_spec"]) for g in groups),
        escrow_funds(raw.get("escrow_account")),
        int(d.get("created_at", 0)),
    )


def provider(raw: dict[str, Any], audited: dict[str, dict[str, str]] | None = None) -> ProviderInfo:
    p = raw.get("provider", raw)
    attributes = {str(a["key"]): str(a["value"]) for a in p.get("attributes") or []}
    return ProviderInfo(str(p["owner"]), str(p.get("host_uri", "")), attributes, audited or {})


# -- typed events ----------------------------------------------------------------------------------------
def _typed(attributes: list[dict[str, Any]]) -> dict[str, Any]:
    """A typed event's attributes: each value is JSON (strings quoted), except ``msg_index``."""
    out: dict[str, Any] = {}
    for a in attributes:
        key, value = str(a.get("key", "")), a.get("value")
        if key == "msg_index" or value is None:
            continue
        try:
            out[key] = json.loads(value)
        except (ValueError, TypeError):
            out[key] = value
    return out


def _ids(raw: dict[str, Any], *fields: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        out[f] = int(raw[f]) if f in ("dseq", "gseq", "oseq") else str(raw[f])
    return out


_ORDER = ("owner", "dseq", "gseq", "oseq")
_BID = (*_ORDER, "provider")


def event(height: int, index: int, type_: str, attributes: list[dict[str, Any]]) -> Event | None:
    """One of the chain's typed events as the bid engine's Event (the mock chain's names and shapes);
    None for events the engine does not follow."""
    kind = type_.rsplit(".", 1)[-1]
    if not type_.startswith("akash."):
        return None
    a = _typed(attributes)
    data: dict[str, Any]
    if kind == "EventOrderCreated":
        name, data = "order_created", {"order": _ids(a["id"], *_ORDER)}
    elif kind == "EventOrderClosed":
        name, data = "order_closed", {"order": _ids(a["id"], *_ORDER), "reason": "closed"}
    elif kind == "EventBidCreated":
        name, data = "bid_created", {"bid": _ids(a["id"], *_BID), "price": dec_coin(a.get("price")).to_json()}
    elif kind == "EventBidClosed":
        name, data = "bid_closed", {"bid": _ids(a["id"], *_BID), "state": "closed"}
    elif kind == "EventLeaseCreated":
        name, data = "lease_created", {"lease": _ids(a["id"], *_BID), "price": dec_coin(a.get("price")).to_json()}
    elif kind == "EventLeaseClosed":
        reason = str(a.get("reason") or "closed")
        name, data = "lease_closed", {"lease": _ids(a["id"], *_BID), "reason": reason}
    elif kind in ("EventDeploymentCreated", "EventDeploymentUpdated", "EventDeploymentClosed"):
        d = a["id"]
        name = {"EventDeploymentCreated": "deployment_created", "EventDeploymentUpdated": "deployment_updated"}.get(
            kind, "deployment_closed"
        )
        data = {"owner": str(d["owner"]), "dseq": int(d["dseq"])}
        if "hash" in a:
            data["version"] = base64.b64decode(str(a["hash"])).hex()
    elif kind in ("EventTrustedAuditorCreated", "EventTrustedAuditorDeleted"):
        name, data = "provider_audited", {"provider": str(a.get("owner", "")), "auditor": str(a.get("auditor", ""))}
    else:
        return None
    return Event(height, index, name, data)
