"""What an SDL derives, in Akash's terms: group specs (orders on chain) and the manifest (sent to the
provider), as typed frozen values with their exact Akash JSON forms and the manifest version hash."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from typing import Any, TypeVar

from sdl.units import format_dec

JSON = Any
T = TypeVar("T")


class EndpointKind(IntEnum):
    SHARED_HTTP = 0  # ingress on port 80
    RANDOM_PORT = 1  # NodePort
    LEASED_IP = 2


@dataclass(frozen=True, slots=True)
class Attribute:
    key: str
    value: str

    def to_json(self) -> JSON:
        out: dict[str, str] = {}
        if self.key:
            out["key"] = self.key
        if self.value:
            out["value"] = self.value
        return out


def _attrs(attrs: tuple[Attribute, ...]) -> list[JSON]:
    return [a.to_json() for a in attrs]


@dataclass(frozen=True, slots=True)
class Endpoint:
    kind: EndpointKind
    sequence_number: int

    def to_json(self) -> JSON:
        out: dict[str, int] = {}
        if self.kind:
            out["kind"] = int(self.kind)
        out["sequence_number"] = self.sequence_number
        return out


@dataclass(frozen=True, slots=True)
class Volume:
    name: str
    size: int
    attributes: tuple[Attribute, ...]

    @property
    def persistent(self) -> bool:
        return any(a.key == "persistent" and a.value == "true" for a in self.attributes)

    @property
    def storage_class(self) -> str:
        return next((a.value for a in self.attributes if a.key == "class"), "")

    def to_json(self) -> JSON:
        out: dict[str, JSON] = {"name": self.name, "size": {"val": str(self.size)}}
        if self.attributes:
            out["attributes"] = _attrs(self.attributes)
        return out


@dataclass(frozen=True, slots=True)
class Resources:
    """One resource unit's shape. ``None`` marks a part the SDL left out (Akash then rejects it)."""

    id: int
    cpu_millis: int | None
    cpu_attributes: tuple[Attribute, ...]
    memory_bytes: int | None
    storage: tuple[Volume, ...] | None
    gpu_units: int
    gpu_attributes: tuple[Attribute, ...]
    endpoints: tuple[Endpoint, ...]

    def to_json(self) -> JSON:
        out: dict[str, JSON] = {"id": self.id}
        if self.cpu_millis is not None:
            cpu: dict[str, JSON] = {"units": {"val": str(self.cpu_millis)}}
            if self.cpu_attributes:
                cpu["attributes"] = _attrs(self.cpu_attributes)
            out["cpu"] = cpu
        if self.memory_bytes is not None:
            out["memory"] = {"size": {"val": str(self.memory_bytes)}}
        if self.storage:
            out["storage"] = [v.to_json() for v in self.storage]
        gpu: dict[str, JSON] = {"units": {"val": str(self.gpu_units)}}
        if self.gpu_attributes:
            gpu["attributes"] = _attrs(self.gpu_attributes)
        out["gpu"] = gpu
        out["endpoints"] = [e.to_json() for e in self.endpoints]
        return out


@dataclass(frozen=True, slots=True)
class Coin:
    denom: str
    amount: Decimal

    def to_json(self) -> JSON:
        return {"denom": self.denom, "amount": format_dec(self.amount)}


@dataclass(frozen=True, slots=True)
class ResourceUnit:
    resources: Resources
    count: int
    price: Coin  # maximum price per block for one replica

    def to_json(self) -> JSON:
        return {"resource": self.resources.to_json(), "count": self.count, "price": self.price.to_json()}


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """One placement group: becomes one order on chain."""

    name: str
    attributes: tuple[Attribute, ...] | None
    signed_by_all_of: tuple[str, ...] | None
    signed_by_any_of: tuple[str, ...] | None
    resources: tuple[ResourceUnit, ...]

    def max_price(self) -> Coin:
        """The group's maximum price per block: sum of unit price x count."""
        denom = self.resources[0].price.denom if self.resources else ""
        total = sum((u.price.amount * u.count for u in self.resources), Decimal(0))
        return Coin(denom, total)

    def to_json(self) -> JSON:
        return {
            "name": self.name,
            "requirements": {
                "signed_by": {
                    "all_of": None if self.signed_by_all_of is None else list(self.signed_by_all_of),
                    "any_of": None if self.signed_by_any_of is None else list(self.signed_by_any_of),
                },
                "attributes": None if self.attributes is None else _attrs(self.attributes),
            },
            "resources": [u.to_json() for u in self.resources],
        }


@dataclass(frozen=True, slots=True)
class HttpOptions:
    max_body_size: int
    read_timeout: int
    send_timeout: int
    next_tries: int
    next_timeout: int
    next_cases: tuple[str, ...]
    proxy_buffer_size: int

    def to_json(self) -> JSON:
        out: dict[str, JSON] = {
            "maxBodySize": self.max_body_size,
            "readTimeout": self.read_timeout,
            "sendTimeout": self.send_timeout,
            "nextTries": self.next_tries,
            "nextTimeout": self.next_timeout,
        }
        if self.next_cases:
            out["nextCases"] = list(self.next_cases)
        if self.proxy_buffer_size:
            out["proxyBufferSize"] = self.proxy_buffer_size
        return out


@dataclass(frozen=True, slots=True)
class ServiceExpose:
    port: int
    external_port: int  # 0 means "same as port"
    proto: str  # "TCP" | "UDP"
    service: str
    global_: bool
    hosts: tuple[str, ...] | None
    http_options: HttpOptions
    ip: str
    endpoint_sequence_number: int

    @property
    def effective_external_port(self) -> int:
        return self.external_port or self.port

    @property
    def is_ingress(self) -> bool:
        return self.proto == "TCP" and self.global_ and self.effective_external_port == 80

    def endpoints(self) -> tuple[Endpoint, ...]:
        if not self.global_:
            return ()
        eps: list[Endpoint] = []
        if self.ip:
            eps.append(Endpoint(EndpointKind.LEASED_IP, self.endpoint_sequence_number))
        eps.append(Endpoint(EndpointKind.SHARED_HTTP if self.is_ingress else EndpointKind.RANDOM_PORT, 0))
        return tuple(go_sort(eps, lambda a, b: a.sequence_number < b.sequence_number))

    def to_json(self) -> JSON:
        return {
            "port": self.port,
            "externalPort": self.external_port,
            "proto": self.proto,
            "service": self.service,
            "global": self.global_,
            "hosts": None if self.hosts is None else list(self.hosts),
            "httpOptions": self.http_options.to_json(),
            "ip": self.ip,
            "endpointSequenceNumber": self.endpoint_sequence_number,
        }


@dataclass(frozen=True, slots=True)
class StorageParams:
    name: str
    mount: str
    read_only: bool

    def to_json(self) -> JSON:
        return {"name": self.name, "mount": self.mount, "readOnly": self.read_only}


@dataclass(frozen=True, slots=True)
class ServiceParams:
    storage: tuple[StorageParams, ...] | None
    permissions_read: tuple[str, ...] | None
    has_permissions: bool
    tee_type: str

    def to_json(self) -> JSON:
        out: dict[str, JSON] = {"storage": None if self.storage is None else [s.to_json() for s in self.storage]}
        if self.has_permissions:
            out["permissions"] = {"read": list(self.permissions_read)} if self.permissions_read else {}
        if self.tee_type:
            out["tee"] = {"type": self.tee_type, "attestation": True}
        return out


@dataclass(frozen=True, slots=True)
class ImageCredentials:
    host: str
    email: str
    username: str
    password: str

    def to_json(self) -> JSON:
        return {"host": self.host, "email": self.email, "username": self.username, "password": self.password}


@dataclass(frozen=True, slots=True)
class ManifestService:
    name: str
    image: str
    command: tuple[str, ...] | None
    args: tuple[str, ...] | None
    env: tuple[str, ...] | None
    resources: Resources
    count: int
    expose: tuple[ServiceExpose, ...]
    params: ServiceParams | None
    credentials: ImageCredentials | None

    def to_json(self) -> JSON:
        out: dict[str, JSON] = {
            "name": self.name,
            "image": self.image,
            "command": None if self.command is None else list(self.command),
            "args": None if self.args is None else list(self.args),
            "env": None if self.env is None else list(self.env),
            "resources": self.resources.to_json(),
            "count": self.count,
            "expose": [e.to_json() for e in self.expose],
        }
        if self.params is not None:
            out["params"] = self.params.to_json()
        out["credentials"] = None if self.credentials is None else self.credentials.to_json()
        return out


@dataclass(frozen=True, slots=True)
class ManifestGroup:
    name: str
    services: tuple[ManifestService, ...]

    def to_json(self) -> JSON:
        return {"name": self.name, "services": [s.to_json() for s in self.services]}


Manifest = tuple[ManifestGroup, ...]


def manifest_json(manifest: Manifest) -> JSON:
    return [g.to_json() for g in manifest]


def groups_json(groups: tuple[GroupSpec, ...]) -> JSON:
    return [g.to_json() for g in groups]


_SURROGATES = re.compile("[\ud800-\udfff]")


def canonical_json(value: JSON) -> bytes:
    """Key-sorted compact JSON exactly as Go's encoding/json + cosmos SortJSON write it (HTML-safe
    escapes for <, >, &, and U+2028/U+2029)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
    text = _SURROGATES.sub("\ufffd", text)
    return text.encode("utf-8")


def version_hash(manifest: Manifest) -> bytes:
    """The deployment version: sha256 of the canonical manifest JSON. The chain stores it and the
    provider checks a received manifest against it."""
    return hashlib.sha256(canonical_json(manifest_json(manifest))).digest()


def go_sort(items: list[T], less: Any) -> list[T]:
    """Go's sort.Sort/SliceStable on the short slices SDLs produce: an insertion sort, which both use
    below 12 elements. Equal elements keep their order, as they do in Go there."""
    out = list(items)
    for i in range(1, len(out)):
        j = i
        while j > 0 and less(out[j], out[j - 1]):
            out[j], out[j - 1] = out[j - 1], out[j]
            j -= 1
    return out


def group_from_json(raw: JSON) -> GroupSpec:
    """A group spec from Akash's JSON form (what an order carries on chain). Raises ValueError with the
    path of the first thing that is not a valid group spec, whatever the input."""
    try:
        return _group_from_json(raw)
    except ValueError:
        raise
    except (AttributeError, TypeError, KeyError, IndexError, ArithmeticError) as e:
        raise ValueError(f"invalid group spec: {type(e).__name__}: {e}") from None


def _group_from_json(raw: JSON) -> GroupSpec:

    def need(cond: bool, where: str) -> None:
        if not cond:
            raise ValueError(f"invalid group spec at {where}")

    def attrs(items: JSON, where: str) -> tuple[Attribute, ...]:
        need(items is None or isinstance(items, list), where)
        out = []
        for i, a in enumerate(items or []):
            need(isinstance(a, dict), f"{where}[{i}]")
            out.append(Attribute(str(a.get("key", "")), str(a.get("value", ""))))
        return tuple(out)

    def val(obj: JSON, where: str) -> int:
        need(isinstance(obj, dict) and isinstance(obj.get("val"), str) and obj["val"].isdigit(), where)
        return int(obj["val"])

    need(isinstance(raw, dict), "$")
    req = raw.get("requirements") or {}
    need(isinstance(req, dict), "requirements")
    signed = req.get("signed_by") or {}
    need(isinstance(signed, dict), "requirements.signed_by")
    units = []
    need(isinstance(raw.get("resources"), list), "resources")
    for i, u in enumerate(raw["resources"]):
        where = f"resources[{i}]"
        need(isinstance(u, dict) and isinstance(u.get("resource"), dict), where)
        r = u["resource"]
        cpu = r.get("cpu")
        mem = r.get("memory")
        gpu = r.get("gpu") or {"units": {"val": "0"}}
        storage = r.get("storage")
        need(storage is None or isinstance(storage, list), f"{where}.resource.storage")
        volumes = tuple(
            Volume(
                str(v.get("name", "")),
                val(v.get("size"), f"{where}.storage.size"),
                attrs(v.get("attributes"), f"{where}.storage.attributes"),
            )
            for v in storage or []
            if isinstance(v, dict)
        )
        price = u.get("price")
        need(isinstance(price, dict), f"{where}.price")
        try:
            amount = Decimal(str(price.get("amount")))
        except ArithmeticError:
            raise ValueError(f"invalid group spec at {where}.price.amount") from None
        need(amount.is_finite(), f"{where}.price.amount")
        count = u.get("count")
        need(isinstance(count, int) and count >= 0, f"{where}.count")
        endpoints = tuple(
            Endpoint(EndpointKind(int(e.get("kind", 0))), int(e.get("sequence_number", 0)))
            for e in r.get("endpoints") or []
            if isinstance(e, dict) and int(e.get("kind", 0)) in (0, 1, 2)
        )
        units.append(
            ResourceUnit(
                Resources(
                    id=int(r.get("id", 0)),
                    cpu_millis=None if cpu is None else val(cpu.get("units"), f"{where}.cpu.units"),
                    cpu_attributes=attrs((cpu or {}).get("attributes"), f"{where}.cpu.attributes"),
                    memory_bytes=None if mem is None else val(mem.get("size"), f"{where}.memory.size"),
                    storage=volumes or None,
                    gpu_units=val(gpu.get("units"), f"{where}.gpu.units"),
                    gpu_attributes=attrs(gpu.get("attributes"), f"{where}.gpu.attributes"),
                    endpoints=endpoints,
                ),
                count,
                Coin(str(price.get("denom", "")), amount),
            )
        )
    all_of, any_of = signed.get("all_of"), signed.get("any_of")
    need(all_of is None or isinstance(all_of, list), "requirements.signed_by.all_of")
    need(any_of is None or isinstance(any_of, list), "requirements.signed_by.any_of")
    return GroupSpec(
        name=str(raw.get("name", "")),
        attributes=attrs(req.get("attributes"), "requirements.attributes")
        if req.get("attributes") is not None
        else None,
        signed_by_all_of=None if all_of is None else tuple(str(a) for a in all_of),
        signed_by_any_of=None if any_of is None else tuple(str(a) for a in any_of),
        resources=tuple(units),
    )
