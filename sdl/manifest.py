"""A received manifest (the JSON a tenant PUTs to a provider) read back into typed values, and checked
against the group specs the chain holds for its deployment.

``manifest_from_json`` is strict: an unknown key, a wrong type or an out-of-range number is refused
with its JSON path, so the version hash is always computed over exactly what will be deployed.
``check_group`` is Akash's ``CheckAgainstDeployment`` for one group: every service names a resource
unit of the group, its resources equal the unit's, the services of a unit add up to its count, and
every endpoint the unit was ordered with is used.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from sdl import spec as s

MAX_SERVICES = 64
MAX_ITEMS = 256  # env entries, exposes, args...
MAX_STRING = 256 * 1024  # one string; the API bounds the whole body
_SURROGATE = re.compile("[\ud800-\udfff]")
_SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9*]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class ManifestError(ValueError):
    """The manifest is not a valid Akash manifest; the message names the JSON path."""


def _fail(where: str, what: str) -> ManifestError:
    return ManifestError(f"{where}: {what}")


def _obj(raw: Any, where: str, required: set[str], optional: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _fail(where, f"must be an object, not {_kind(raw)}")
    missing = sorted(required - raw.keys())
    if missing:
        raise _fail(where, f"missing {', '.join(missing)}")
    unknown = sorted(raw.keys() - required - optional)
    if unknown:
        raise _fail(where, f"unknown field {unknown[0]!r}")
    return raw


def _kind(raw: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(raw), "a number"
    )


def _str(raw: Any, where: str, *, empty: bool = True) -> str:
    if not isinstance(raw, str):
        raise _fail(where, f"must be a string, not {_kind(raw)}")
    if len(raw) > MAX_STRING:
        raise _fail(where, f"longer than {MAX_STRING} characters")
    if not empty and not raw.strip():
        raise _fail(where, "must not be empty")
    if _SURROGATE.search(raw):
        raise _fail(where, "holds a lone UTF-16 surrogate escape (\\ud800-\\udfff): not valid Unicode text")
    return raw


def _int(raw: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _fail(where, f"must be a whole number, not {_kind(raw)}")
    if not lo <= raw <= hi:
        raise _fail(where, f"{raw} is outside {lo}..{hi}")
    return raw


def _bool(raw: Any, where: str) -> bool:
    if not isinstance(raw, bool):
        raise _fail(where, f"must be true or false, not {_kind(raw)}")
    return raw


def _list(raw: Any, where: str, *, nullable: bool = False) -> list[Any] | None:
    if raw is None and nullable:
        return None
    if not isinstance(raw, list):
        raise _fail(where, f"must be a list, not {_kind(raw)}")
    if len(raw) > MAX_ITEMS:
        raise _fail(where, f"more than {MAX_ITEMS} items")
    return raw


def _strings(raw: Any, where: str) -> tuple[str, ...] | None:
    items = _list(raw, where, nullable=True)
    return None if items is None else tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(items))


def _val(raw: Any, where: str) -> int:
    obj = _obj(raw, where, {"val"}, set())
    text = obj["val"]
    if not isinstance(text, str) or not text.isdigit() or len(text) > 20:
        raise _fail(f"{where}.val", "must be a decimal number in a string")
    return int(text)


def _attributes(raw: Any, where: str) -> tuple[s.Attribute, ...]:
    items = _list(raw, where, nullable=True) or []
    out = []
    for i, a in enumerate(items):
        obj = _obj(a, f"{where}[{i}]", set(), {"key", "value"})
        out.append(
            s.Attribute(
                _str(obj.get("key", ""), f"{where}[{i}].key"), _str(obj.get("value", ""), f"{where}[{i}].value")
            )
        )
    return tuple(out)


def _resources(raw: Any, where: str) -> s.Resources:
    obj = _obj(raw, where, {"id", "gpu", "endpoints"}, {"cpu", "memory", "storage"})
    cpu = _obj(obj["cpu"], f"{where}.cpu", {"units"}, {"attributes"}) if "cpu" in obj else None
    mem = _obj(obj["memory"], f"{where}.memory", {"size"}, set()) if "memory" in obj else None
    gpu = _obj(obj["gpu"], f"{where}.gpu", {"units"}, {"attributes"})
    volumes = []
    for i, v in enumerate(_list(obj.get("storage", []), f"{where}.storage") or []):
        vo = _obj(v, f"{where}.storage[{i}]", {"name", "size"}, {"attributes"})
        volumes.append(
            s.Volume(
                _str(vo["name"], f"{where}.storage[{i}].name"),
                _val(vo["size"], f"{where}.storage[{i}].size"),
                _attributes(vo.get("attributes"), f"{where}.storage[{i}].attributes"),
            )
        )
    endpoints = []
    for i, e in enumerate(_list(obj["endpoints"], f"{where}.endpoints") or []):
        eo = _obj(e, f"{where}.endpoints[{i}]", {"sequence_number"}, {"kind"})
        kind = _int(eo.get("kind", 0), f"{where}.endpoints[{i}].kind", 0, 2)
        endpoints.append(
            s.Endpoint(
                s.EndpointKind(kind), _int(eo["sequence_number"], f"{where}.endpoints[{i}].sequence_number", 0, 2**31)
            )
        )
    return s.Resources(
        id=_int(obj["id"], f"{where}.id", 1, 2**31),
        cpu_millis=None if cpu is None else _val(cpu["units"], f"{where}.cpu.units"),
        cpu_attributes=() if cpu is None else _attributes(cpu.get("attributes"), f"{where}.cpu.attributes"),
        memory_bytes=None if mem is None else _val(mem["size"], f"{where}.memory.size"),
        storage=tuple(volumes) or None,
        gpu_units=_val(gpu["units"], f"{where}.gpu.units"),
        gpu_attributes=_attributes(gpu.get("attributes"), f"{where}.gpu.attributes"),
        endpoints=tuple(endpoints),
    )


_HTTP_KEYS = {"maxBodySize", "readTimeout", "sendTimeout", "nextTries", "nextTimeout"}
_NEXT_CASES = {"error", "timeout", "500", "502", "503", "504", "403", "404", "429", "off"}


def _http_options(raw: Any, where: str) -> s.HttpOptions:
    obj = _obj(raw, where, _HTTP_KEYS, {"nextCases", "proxyBufferSize"})
    cases = _strings(obj.get("nextCases"), f"{where}.nextCases") or ()
    for c in cases:
        if c not in _NEXT_CASES:
            raise _fail(f"{where}.nextCases", f"{c!r} is not one of {', '.join(sorted(_NEXT_CASES))}")
    return s.HttpOptions(
        max_body_size=_int(obj["maxBodySize"], f"{where}.maxBodySize", 0, 104_857_600),
        read_timeout=_int(obj["readTimeout"], f"{where}.readTimeout", 0, 60_000),
        send_timeout=_int(obj["sendTimeout"], f"{where}.sendTimeout", 0, 60_000),
        next_tries=_int(obj["nextTries"], f"{where}.nextTries", 0, 2**31),
        next_timeout=_int(obj["nextTimeout"], f"{where}.nextTimeout", 0, 2**31),
        next_cases=cases,
        proxy_buffer_size=_int(obj.get("proxyBufferSize", 0), f"{where}.proxyBufferSize", 0, 1_048_576),
    )


def _expose(raw: Any, where: str) -> s.ServiceExpose:
    keys = {
        "port",
        "externalPort",
        "proto",
        "service",
        "global",
        "hosts",
        "httpOptions",
        "ip",
        "endpointSequenceNumber",
    }
    obj = _obj(raw, where, keys, set())
    proto = _str(obj["proto"], f"{where}.proto")
    if proto not in ("TCP", "UDP"):
        raise _fail(f"{where}.proto", f"{proto!r} is not TCP or UDP")
    hosts = _strings(obj["hosts"], f"{where}.hosts")
    for i, h in enumerate(hosts or ()):
        if not _HOST.match(h):
            raise _fail(f"{where}.hosts[{i}]", f"{h!r} is not a hostname")
    return s.ServiceExpose(
        port=_int(obj["port"], f"{where}.port", 1, 65535),
        external_port=_int(obj["externalPort"], f"{where}.externalPort", 0, 65535),
        proto=proto,
        service=_str(obj["service"], f"{where}.service"),
        global_=_bool(obj["global"], f"{where}.global"),
        hosts=hosts,
        http_options=_http_options(obj["httpOptions"], f"{where}.httpOptions"),
        ip=_str(obj["ip"], f"{where}.ip"),
        endpoint_sequence_number=_int(obj["endpointSequenceNumber"], f"{where}.endpointSequenceNumber", 0, 2**31),
    )


def _params(raw: Any, where: str) -> s.ServiceParams:
    obj = _obj(raw, where, {"storage"}, {"permissions", "tee"})
    storage = None
    items = _list(obj["storage"], f"{where}.storage", nullable=True)
    if items is not None:
        storage = tuple(
            s.StorageParams(
                _str(o["name"], f"{where}.storage[{i}].name"),
                _str(o["mount"], f"{where}.storage[{i}].mount"),
                _bool(o["readOnly"], f"{where}.storage[{i}].readOnly"),
            )
            for i, o in (
                (i, _obj(v, f"{where}.storage[{i}]", {"name", "mount", "readOnly"}, set())) for i, v in enumerate(items)
            )
        )
    read: tuple[str, ...] | None = None
    if "permissions" in obj:
        perms = _obj(obj["permissions"], f"{where}.permissions", set(), {"read"})
        read = _strings(perms.get("read"), f"{where}.permissions.read")
    tee = ""
    if "tee" in obj:
        t = _obj(obj["tee"], f"{where}.tee", {"type"}, {"attestation"})
        tee = _str(t["type"], f"{where}.tee.type")
        if tee not in ("cpu", "cpu-gpu"):
            raise _fail(f"{where}.tee.type", f"{tee!r} is not cpu or cpu-gpu")
    return s.ServiceParams(storage, read, "permissions" in obj, tee)


def _service(raw: Any, where: str) -> s.ManifestService:
    keys = {"name", "image", "command", "args", "env", "resources", "count", "expose", "credentials"}
    obj = _obj(raw, where, keys, {"params"})
    name = _str(obj["name"], f"{where}.name")
    if not _SERVICE_NAME.match(name) or len(name) > 63:
        raise _fail(f"{where}.name", f"{name!r} is not a service name (lowercase letters, digits and -)")
    env = _strings(obj["env"], f"{where}.env")
    for i, kv in enumerate(env or ()):
        if not _ENV_NAME.match(kv.partition("=")[0]):
            raise _fail(f"{where}.env[{i}]", "must be NAME=value with a valid variable name")
    creds = None
    if obj["credentials"] is not None:
        c = _obj(obj["credentials"], f"{where}.credentials", {"host", "username", "password"}, {"email"})
        creds = s.ImageCredentials(
            _str(c["host"], f"{where}.credentials.host", empty=False),
            _str(c.get("email", ""), f"{where}.credentials.email"),
            _str(c["username"], f"{where}.credentials.username", empty=False),
            _str(c["password"], f"{where}.credentials.password", empty=False),
        )
    return s.ManifestService(
        name=name,
        image=_str(obj["image"], f"{where}.image", empty=False),
        command=_strings(obj["command"], f"{where}.command"),
        args=_strings(obj["args"], f"{where}.args"),
        env=env,
        resources=_resources(obj["resources"], f"{where}.resources"),
        count=_int(obj["count"], f"{where}.count", 1, 1000),
        expose=tuple(
            _expose(e, f"{where}.expose[{i}]") for i, e in enumerate(_list(obj["expose"], f"{where}.expose") or [])
        ),
        params=_params(obj["params"], f"{where}.params") if obj.get("params") is not None else None,
        credentials=creds,
    )


def manifest_from_json(raw: Any) -> s.Manifest:
    """A manifest from its JSON form (already decoded). Raises ManifestError naming the first problem."""
    groups = _list(raw, "$")
    if not groups:
        raise _fail("$", "a manifest has at least one group")
    out = []
    names: set[str] = set()
    for gi, g in enumerate(groups):
        where = f"$[{gi}]"
        obj = _obj(g, where, {"name", "services"}, set())
        name = _str(obj["name"], f"{where}.name", empty=False)
        if name in names:
            raise _fail(f"{where}.name", f"group {name!r} appears twice")
        names.add(name)
        services = _list(obj["services"], f"{where}.services") or []
        if not services or len(services) > MAX_SERVICES:
            raise _fail(f"{where}.services", f"a group has 1..{MAX_SERVICES} services")
        parsed = tuple(_service(v, f"{where}.services[{si}]") for si, v in enumerate(services))
        dupes = [n for n, c in Counter(p.name for p in parsed).items() if c > 1]
        if dupes:
            raise _fail(f"{where}.services", f"service {dupes[0]!r} appears twice")
        out.append(s.ManifestGroup(name, parsed))
    hosts = [h for g in out for svc in g.services for e in svc.expose for h in e.hosts or ()]
    dup_hosts = [h for h, c in Counter(hosts).items() if c > 1]
    if dup_hosts:
        raise _fail("$", f"hostname {dup_hosts[0]!r} is used more than once")
    if not any(e.global_ for g in out for svc in g.services for e in svc.expose):
        raise _fail("$", "no service is exposed globally: a deployment needs at least one global expose")
    return tuple(out)


def version_of(manifest: s.Manifest) -> str:
    """The manifest's version hash in hex (what the chain stores for the deployment)."""
    return s.version_hash(manifest).hex()


def _same_resources(a: s.Resources, b: s.Resources) -> bool:
    def volumes(r: s.Resources) -> list[tuple[str, int, tuple[s.Attribute, ...]]]:
        return sorted((v.name, v.size, v.attributes) for v in r.storage or ())

    return (
        a.cpu_millis == b.cpu_millis
        and a.memory_bytes == b.memory_bytes
        and a.gpu_units == b.gpu_units
        and sorted((x.key, x.value) for x in a.gpu_attributes) == sorted((x.key, x.value) for x in b.gpu_attributes)
        and volumes(a) == volumes(b)
    )


def check_group(group: s.ManifestGroup, spec: s.GroupSpec) -> list[str]:
    """Problems that keep ``group`` (from a manifest) from being the deployment of ``spec`` (the order's
    group spec on chain). Empty when the manifest asks for exactly what was ordered."""
    problems: list[str] = []
    if group.name != spec.name:
        problems.append(f"group {group.name!r} is not the ordered group {spec.name!r}")
    units = {u.resources.id: u for u in spec.resources}
    replicas: Counter[int] = Counter()
    endpoints: dict[int, Counter[tuple[int, int]]] = {}
    for svc in group.services:
        unit = units.get(svc.resources.id)
        if unit is None:
            problems.append(f"service {svc.name!r}: resource unit {svc.resources.id} was not ordered")
            continue
        if not _same_resources(svc.resources, unit.resources):
            problems.append(f"service {svc.name!r}: resources differ from the ordered unit {unit.resources.id}")
        replicas[unit.resources.id] += svc.count
        used = endpoints.setdefault(unit.resources.id, Counter())
        for e in svc.expose:
            for ep in e.endpoints():
                used[(int(ep.kind), ep.sequence_number)] += 1
    for uid, unit in units.items():
        if replicas[uid] != unit.count:
            problems.append(f"resource unit {uid}: {replicas[uid]} replica(s) in the manifest, {unit.count} ordered")
        ordered = Counter((int(e.kind), e.sequence_number) for e in unit.resources.endpoints)
        if endpoints.get(uid, Counter()) != ordered:
            problems.append(f"resource unit {uid}: the services' exposes do not use the endpoints that were ordered")
    return problems


def services_changed(old: s.ManifestGroup, new: s.ManifestGroup) -> list[str]:
    """An update may change images, env, commands... but not which services exist (as Akash refuses)."""
    before, after = {v.name for v in old.services}, {v.name for v in new.services}
    problems = [f"service {n!r} was added (an update cannot add services)" for n in sorted(after - before)]
    problems += [f"service {n!r} was removed (an update cannot remove services)" for n in sorted(before - after)]
    return problems
