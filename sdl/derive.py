"""The SDL model -> group specs and manifest, with every cross-check Akash applies.

Three passes, as in the reference: build the groups (expose and TEE rules), validate references
between the sections, then the chain's group rules and the provider's manifest rules. Each pass
collects all its problems; a later pass runs only when the earlier ones found none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from decimal import Decimal

from sdl import model as m
from sdl import spec as s
from sdl.errors import Problem, ProblemList, Severity
from sdl.units import KI, valid_denom

SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
ENDPOINT_NAME = re.compile(r"^[a-z]+[a-z\-_0-9]+$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
ATTRIBUTE_KEY = re.compile(r"^([a-zA-Z][\w/.\-]{1,126}[\w*]?)$", re.ASCII)
NEXT_CASES = ("error", "timeout", "500", "502", "503", "504", "403", "404", "429", "off")
TEE_TYPES = ("cpu", "cpu-gpu")

# Chain limits per resource unit (deployment v1beta4 validation config).
MAX_UNIT_CPU, MIN_UNIT_CPU = 384_000, 10
MAX_UNIT_GPU = 24
MAX_UNIT_MEMORY, MIN_UNIT_MEMORY = 2 * KI**4, KI**2
MAX_UNIT_STORAGE, MIN_UNIT_STORAGE = 32 * KI**4, 5 * KI**2
MAX_UNIT_COUNT = 50
MAX_UNIT_PRICE = Decimal(10_000_000)
MAX_BODY_SIZE, DEFAULT_BODY_SIZE = 104_857_600, 1_048_576
MAX_PROXY_BUFFER = 1_048_576
MAX_TIMEOUT_MS = 60_000
DEFAULT_NEXT_TRIES = 3

_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def go_trim(text: str) -> str:
    return text.strip(_GO_SPACE)


@dataclass
class Result:
    groups: tuple[s.GroupSpec, ...] = ()
    manifest: s.Manifest = ()
    problems: list[Problem] = field(default_factory=list)


class _Reporter:
    def __init__(self) -> None:
        self.problems = ProblemList()
        self.failed = False

    def __call__(self, loc: m.Loc, message: str, severity: Severity = "error") -> None:
        if self.problems.add(Problem(loc.path, loc.line, loc.column, message, severity)):
            self.failed = self.failed or severity == "error"


def derive(sdl: m.Sdl, root: m.Loc) -> Result:
    report = _Reporter()
    groups, manifest = _build(sdl, report)
    _validate(sdl, report, root)
    if not report.failed:
        _check_groups(groups, sdl, report, root)
        _check_manifest(manifest, sdl, report, root)
    return Result(groups, manifest, report.problems)


# -- pass 1: build ----------------------------------------------------------------------------------


def _http_options(opts: m.HttpOptionsIn, loc: m.Loc, report: _Reporter) -> s.HttpOptions:
    where = opts.loc or loc
    body = opts.max_body_size or DEFAULT_BODY_SIZE
    if opts.max_body_size > MAX_BODY_SIZE:
        report(
            where.child("max_body_size", where.line, where.column),
            f"must be at most {MAX_BODY_SIZE} bytes (100 MiB)",
        )
    if opts.proxy_buffer_size > MAX_PROXY_BUFFER:
        report(
            where.child("proxy_buffer_size", where.line, where.column),
            f"must be at most {MAX_PROXY_BUFFER} bytes (1 MiB)",
        )
    for name, value in (("read_timeout", opts.read_timeout), ("send_timeout", opts.send_timeout)):
        if value > MAX_TIMEOUT_MS:
            report(where.child(name, where.line, where.column), f"must be at most {MAX_TIMEOUT_MS} ms")
    cases = opts.next_cases or ("error", "timeout")
    if opts.next_cases:
        for case in opts.next_cases:
            if case not in NEXT_CASES:
                report(
                    where.child("next_cases", where.line, where.column),
                    f"unknown next case {case!r}; use {', '.join(NEXT_CASES)}",
                )
            elif case == "off" and len(opts.next_cases) != 1:
                report(
                    where.child("next_cases", where.line, where.column),
                    "'off' cannot be combined with other cases",
                )
    return s.HttpOptions(
        max_body_size=body,
        read_timeout=opts.read_timeout or MAX_TIMEOUT_MS,
        send_timeout=opts.send_timeout or MAX_TIMEOUT_MS,
        next_tries=opts.next_tries or DEFAULT_NEXT_TRIES,
        next_timeout=opts.next_timeout,
        next_cases=tuple(cases),
        proxy_buffer_size=opts.proxy_buffer_size,
    )


def _endpoint_sequence_numbers(sdl: m.Sdl) -> dict[str, int]:
    names: list[str] = []
    for service in sorted({d.service for d in sdl.deployment}):
        svc = sdl.services.get(service)
        for expose in svc.expose if svc else ():
            for to in expose.to:
                if to.global_ and not to.ip:
                    continue
                names.append(to.ip)
    return {name: i + 1 for i, name in enumerate(sorted(names))}


def _expose_less(a: s.ServiceExpose, b: s.ServiceExpose) -> bool:
    if a.service != b.service:
        return a.service < b.service
    if a.port != b.port:
        return a.port < b.port
    if a.proto != b.proto:
        return a.proto < b.proto
    if a.global_ != b.global_:
        return a.global_
    return False


def _manifest_exposes(svc: m.Service, seqs: dict[str, int], report: _Reporter) -> tuple[s.ServiceExpose, ...]:
    out: list[s.ServiceExpose] = []
    for expose in svc.expose:
        proto = expose.proto.upper()
        if proto == "":
            proto = "TCP"
        if proto not in ("TCP", "UDP"):
            report(
                expose.loc.child("proto", expose.loc.line, expose.loc.column),
                f"unsupported protocol {expose.proto!r}; use tcp or udp",
            )
        http = _http_options(expose.http_options, expose.loc, report)
        targets = expose.to or (m.ExposeTo("", False, "", expose.loc),)
        for to in targets:
            out.append(
                s.ServiceExpose(
                    port=expose.port,
                    external_port=expose.as_,
                    proto=proto,
                    service=to.service,
                    global_=to.global_,
                    hosts=expose.accept,
                    http_options=http,
                    ip=to.ip,
                    endpoint_sequence_number=seqs.get(to.ip, 0) if to.global_ and to.ip else 0,
                )
            )
    return tuple(s.go_sort(out, _expose_less))


def _resources(res: m.ComputeResources | None, rid: int, endpoints: tuple[s.Endpoint, ...]) -> s.Resources:
    if res is None:
        return s.Resources(rid, None, (), None, None, 0, (), endpoints)
    return s.Resources(
        id=rid,
        cpu_millis=res.cpu_millis,
        cpu_attributes=tuple(s.Attribute(k, v) for k, v in res.cpu_attributes),
        memory_bytes=res.memory_bytes,
        storage=None
        if res.storage is None
        else tuple(s.Volume(v.name, v.size, tuple(s.Attribute(k, x) for k, x in v.attributes)) for v in res.storage),
        gpu_units=res.gpu_units or 0,
        gpu_attributes=tuple(s.Attribute(k, v) for k, v in res.gpu_attributes),
        endpoints=endpoints,
    )


@dataclass
class _GroupBuilder:
    name: str
    attributes: list[s.Attribute] | None
    all_of: tuple[str, ...] | None
    any_of: tuple[str, ...] | None
    units: list[s.ResourceUnit] = field(default_factory=list)
    bound: dict[str, int] = field(default_factory=dict)
    services: list[s.ManifestService] = field(default_factory=list)
    tee: str = ""


def _build(sdl: m.Sdl, report: _Reporter) -> tuple[tuple[s.GroupSpec, ...], s.Manifest]:
    seqs = _endpoint_sequence_numbers(sdl)
    merge_units = sdl.version == "2.1"
    builders: dict[str, _GroupBuilder] = {}
    for entry in sdl.deployment:
        svc = sdl.services.get(entry.service) or m.Service(
            entry.service, "", None, None, None, (), None, None, entry.loc
        )
        compute = sdl.compute.get(entry.profile)
        placement = sdl.placements.get(entry.placement)
        price = placement.pricing.get(entry.profile) if placement else None
        group = builders.get(entry.placement)
        if group is None:
            attrs = None
            if placement and placement.attributes is not None:
                attrs = [s.Attribute(k, v) for k, v in placement.attributes]
            group = _GroupBuilder(
                entry.placement,
                attrs,
                placement.signed_by_all_of if placement else None,
                placement.signed_by_any_of if placement else None,
            )
            builders[entry.placement] = group
        if svc.params is not None and svc.params.tee:
            _apply_tee(svc, compute, group, report)
        exposes = _manifest_exposes(svc, seqs, report)
        endpoints = tuple(ep for e in exposes for ep in e.endpoints())
        coin = s.Coin(price.denom, price.amount) if price else s.Coin("", Decimal(0))
        location = group.bound.get(entry.profile) if merge_units else None
        if location is None:
            rid = len(group.units) + 1
            group.units.append(s.ResourceUnit(_resources(compute, rid, endpoints), entry.count, coin))
            group.bound[entry.profile] = len(group.units) - 1
        else:
            unit = group.units[location]
            rid = unit.resources.id
            merged = s.go_sort(
                list(unit.resources.endpoints) + list(endpoints),
                lambda a, b: a.sequence_number < b.sequence_number,
            )
            group.units[location] = s.ResourceUnit(
                replace(unit.resources, endpoints=tuple(merged)), unit.count + entry.count, unit.price
            )
        group.services.append(_manifest_service(sdl, svc, entry, _resources(compute, rid, endpoints), exposes))
    groups: list[s.GroupSpec] = []
    manifest: list[s.ManifestGroup] = []
    for name in sorted(builders):
        b = builders[name]
        sorted_attrs = None if b.attributes is None else tuple(sorted(b.attributes, key=lambda a: a.key))
        groups.append(s.GroupSpec(b.name, sorted_attrs, b.all_of, b.any_of, tuple(b.units)))
        manifest.append(s.ManifestGroup(b.name, tuple(sorted(b.services, key=lambda x: x.name))))
    return tuple(groups), tuple(manifest)


def _apply_tee(svc: m.Service, compute: m.ComputeResources | None, group: _GroupBuilder, report: _Reporter) -> None:
    assert svc.params is not None
    tee = svc.params.tee
    loc = svc.params.loc.child("tee", svc.params.loc.line, svc.params.loc.column)
    if tee not in TEE_TYPES:
        report(loc, f"unsupported tee type {tee!r}; use cpu or cpu-gpu")
        return
    if tee == "cpu-gpu" and not (compute and (compute.gpu_units or 0) > 0):
        report(loc, "tee type 'cpu-gpu' requires gpu resources in the service's compute profile")
        return
    if group.tee and group.tee != tee:
        report(loc, f"placement {group.name!r} mixes tee types {group.tee!r} and {tee!r}; use one per placement")
        return
    if not group.tee:
        group.tee = tee
        group.attributes = [*(group.attributes or []), s.Attribute("tee/type", tee)]


def _manifest_service(
    sdl: m.Sdl,
    svc: m.Service,
    entry: m.DeploymentEntry,
    resources: s.Resources,
    exposes: tuple[s.ServiceExpose, ...],
) -> s.ManifestService:
    params = None
    if svc.params is not None:
        storage = None
        if svc.params.storage:
            storage = tuple(
                s.StorageParams(p.volume, p.mount, p.read_only)
                for p in sorted(svc.params.storage, key=lambda p: p.volume)
            )
        params = s.ServiceParams(storage, svc.params.permissions_read, svc.params.has_permissions, svc.params.tee)
    creds = None
    if svc.credentials is not None:
        c = svc.credentials
        if sdl.version == "2.1":
            creds = s.ImageCredentials(go_trim(c.host), go_trim(c.email), go_trim(c.username), go_trim(c.password))
        else:
            creds = s.ImageCredentials(c.host, "", c.username, c.password)
    return s.ManifestService(
        name=entry.service,
        image=svc.image,
        command=svc.command,
        args=svc.args,
        env=svc.env,
        resources=resources,
        count=entry.count,
        expose=exposes,
        params=params,
        credentials=creds,
    )


# -- pass 2: references between sections ---------------------------------------------------------


def _validate(sdl: m.Sdl, report: _Reporter, root: m.Loc) -> None:
    for name, endpoint in sdl.endpoints.items():
        if not ENDPOINT_NAME.match(name):
            report(
                endpoint.loc,
                f"endpoint name {name!r} is not valid: lowercase letters first, then letters, digits, '-' or '_' (2+ characters)",
            )
        elif not endpoint.kind:
            report(endpoint.loc, f"endpoint {name!r} has no kind; write kind: ip")
        elif endpoint.kind != "ip":
            report(endpoint.loc, f"endpoint {name!r} has unknown kind {endpoint.kind!r}; the only kind is ip")
    used: set[str] = set()
    ports: dict[tuple[str, int, str], str] = {}
    for entry in sdl.deployment:
        where = f"deployment.{entry.service}.{entry.placement}"
        compute_present = entry.profile in sdl.compute
        placement = sdl.placements.get(entry.placement)
        svc = sdl.services.get(entry.service)
        if not compute_present:
            report(
                entry.loc,
                f"{where}: no compute profile named {entry.profile!r}; define it under profiles.compute",
            )
            continue
        if placement is None:
            report(
                entry.loc,
                f"{where}: no placement profile named {entry.placement!r}; define it under profiles.placement",
            )
            continue
        if entry.profile not in placement.pricing:
            report(
                placement.loc,
                f"no pricing for profile {entry.profile!r}; add pricing.{entry.profile}: {{denom: uakt, amount: ...}}",
            )
            continue
        if svc is None:
            report(entry.loc, f"{where}: no service profile named {entry.service!r}; define it under services")
            continue
        compute = sdl.compute[entry.profile]
        if compute is None:
            report(entry.loc, f"{where}: compute profile {entry.profile!r} has no resources")
            continue
        if svc.credentials is not None:
            c = svc.credentials
            for key, value in (("host", c.host), ("username", c.username), ("password", c.password)):
                if not go_trim(value):
                    report(c.loc, f"credentials need a {key}")
                    break
        for expose in svc.expose:
            for to in expose.to:
                if not to.ip:
                    continue
                if not to.global_:
                    report(to.loc, f"service {entry.service!r}: an ip endpoint needs global: true")
                    continue
                target = sdl.endpoints.get(to.ip)
                if target is None:
                    report(
                        to.loc,
                        f"service {entry.service!r}: no endpoint named {to.ip!r}; declare it under endpoints",
                    )
                    continue
                if target.kind != "ip":
                    report(
                        to.loc,
                        f"service {entry.service!r}: endpoint {to.ip!r} has kind {target.kind!r}, not ip",
                    )
                    continue
                used.add(to.ip)
                port_key = (to.ip, expose.as_, expose.proto)
                other = ports.get(port_key)
                if other is not None:
                    report(
                        to.loc,
                        f"ip endpoint {to.ip!r} port {expose.port} ({expose.proto or 'tcp'}) is already used by service {other!r}",
                    )
                    continue
                ports[port_key] = entry.service
        _validate_mounts(sdl, svc, compute, report)
    for name, endpoint in sdl.endpoints.items():
        if name not in used:
            report(
                endpoint.loc,
                f"endpoint {name!r} is declared but never used; remove it or use it in an expose 'to: [{{ip: {name}}}]'",
            )


def _validate_mounts(sdl: m.Sdl, svc: m.Service, compute: m.ComputeResources, report: _Reporter) -> None:
    volumes = {v.name: v for v in compute.storage or ()}
    mounts: dict[str, str] = {}
    params = svc.params.storage if svc.params else ()
    for p in params:
        volume = volumes.get(p.volume)
        if volume is None:
            report(p.loc, f"service {svc.name!r} references to no-existing compute volume named {p.volume!r}")
            continue
        if not p.mount.startswith("/"):
            report(
                p.loc,
                f"invalid mount {p.mount!r} for volume {p.volume!r}: expected absolute path such as /data",
            )
            continue
        if p.mount in mounts:
            report(p.loc, f"mount {p.mount!r} already in use by volume {mounts[p.mount]!r}")
            continue
        mounts[p.mount] = p.volume
        if sdl.version == "2.1" and volume.storage_class == "ram" and p.read_only:
            report(p.loc, f"volume {p.volume!r} of class ram cannot be readOnly")
    if sdl.version == "2.0" and not mounts:
        # 2.0 checks persistence against the service's mounts as a whole (the reference's rule).
        for v in compute.storage or ():
            if v.persistent:
                report(
                    v.loc,
                    f"volume {v.name!r} is persistent, which requires services.{svc.name}.params.storage.{v.name} to have mount",
                )


# -- pass 3: the chain's rules for groups, and the provider's for the manifest --------------------


def _check_groups(groups: tuple[s.GroupSpec, ...], sdl: m.Sdl, report: _Reporter, root: m.Loc) -> None:
    if not groups:
        report(root, "nothing is deployed: add a deployment section that places at least one service")
        return
    denom = ""
    for index, group in enumerate(groups):
        placement = sdl.placements.get(group.name)
        loc = placement.loc if placement else root
        denoms = {u.price.denom for u in group.resources}
        if len(denoms) > 1:
            report(
                loc,
                f"placement {group.name!r} prices its profiles in different denominations ({', '.join(sorted(denoms))}); use one",
            )
            continue
        group_denom = next(iter(denoms), "")
        if index == 0:
            denom = group_denom
        elif group_denom != denom:
            report(
                loc,
                f"all placements must be priced in one denomination ({denom} here, {group_denom} in {group.name!r})",
            )
        _check_units(group, sdl, loc, report)
    if not denom:
        report(root, "no price denomination; set pricing amounts with a denom such as uakt")


def _profile_loc(sdl: m.Sdl, group: s.GroupSpec, unit_id: int, fallback: m.Loc) -> m.Loc:
    entries = [e for e in sdl.deployment if e.placement == group.name]
    seen: list[str] = []
    for e in entries:
        if sdl.version == "2.1" and e.profile in seen:
            continue
        seen.append(e.profile)
        if len(seen) == unit_id:
            compute = sdl.compute.get(e.profile)
            return compute.loc if compute is not None else e.loc
    return fallback


def _check_units(group: s.GroupSpec, sdl: m.Sdl, loc: m.Loc, report: _Reporter) -> None:
    total_cpu = total_gpu = total_mem = 0
    for unit in group.resources:
        r = unit.resources
        where = _profile_loc(sdl, group, r.id, loc)
        ok = True
        if r.cpu_millis is None:
            report(where, "cpu is required: add cpu.units (e.g. 0.5 or 500m)")
            ok = False
        elif not MIN_UNIT_CPU <= r.cpu_millis <= MAX_UNIT_CPU:
            report(
                where,
                f"cpu units {r.cpu_millis}m out of range: from {MIN_UNIT_CPU}m to {MAX_UNIT_CPU // 1000} cpus",
            )
            ok = False
        if r.gpu_units > MAX_UNIT_GPU:
            report(where, f"gpu units {r.gpu_units} out of range: at most {MAX_UNIT_GPU} per replica")
            ok = False
        if r.gpu_units == 0 and r.gpu_attributes:
            report(where, "gpu attributes are set but units is 0; set gpu.units or remove the attributes")
            ok = False
        if r.memory_bytes is None:
            report(where, "memory is required: add memory.size (e.g. 512Mi)")
            ok = False
        elif not MIN_UNIT_MEMORY <= r.memory_bytes <= MAX_UNIT_MEMORY:
            report(where, f"memory size {r.memory_bytes} bytes out of range: from 1Mi to 2Ti")
            ok = False
        if r.storage is None:
            report(where, "storage is required: add storage.size (e.g. 1Gi)")
            ok = False
        else:
            for v in r.storage:
                if not MIN_UNIT_STORAGE <= v.size <= MAX_UNIT_STORAGE:
                    report(where, f"volume {v.name!r} size {v.size} bytes out of range: from 5Mi to 32Ti")
                    ok = False
        for attrs, what in (
            (r.cpu_attributes, "cpu"),
            (r.gpu_attributes, "gpu"),
            *((v.attributes, "storage") for v in r.storage or ()),
        ):
            keys = [a.key for a in attrs]
            if any(not ATTRIBUTE_KEY.match(k) for k in keys) or len(set(keys)) != len(keys):
                report(where, f"invalid {what} attributes")
                ok = False
        price = unit.price
        if not valid_denom(price.denom) or price.amount < 0:
            report(where, "invalid price")
            ok = False
        elif price.amount > MAX_UNIT_PRICE:
            report(
                where,
                f"price {price.amount} {price.denom} per block is above the chain's maximum of {MAX_UNIT_PRICE}",
            )
            ok = False
        if not ok:
            return
        assert r.cpu_millis is not None and r.memory_bytes is not None
        total_cpu += r.cpu_millis * unit.count
        total_gpu += r.gpu_units * unit.count
        total_mem += r.memory_bytes * unit.count
    zero = [e for e in sdl.deployment if e.placement == group.name and e.count == 0]
    if zero and (total_cpu <= 0 or total_mem <= 0):  # nothing would run: point at the counts
        for e in zero:
            report(e.loc.child("count", e.loc.line, e.loc.column), "count is 0: deploy at least 1 replica")
        return
    if not 0 < total_cpu <= MAX_UNIT_CPU * MAX_UNIT_COUNT:
        report(
            loc,
            f"placement {group.name!r}: total cpu must be above 0 and at most {MAX_UNIT_CPU * MAX_UNIT_COUNT // 1000} cpus (is every count at least 1?)",
        )
    if total_gpu and total_gpu > MAX_UNIT_GPU * MAX_UNIT_COUNT:
        report(loc, f"placement {group.name!r}: total gpus above {MAX_UNIT_GPU * MAX_UNIT_COUNT}")
    if not 0 < total_mem <= MAX_UNIT_MEMORY * MAX_UNIT_COUNT:
        report(
            loc,
            f"placement {group.name!r}: total memory must be above 0 and at most 100Ti (is every count at least 1?)",
        )


def _check_manifest(manifest: s.Manifest, sdl: m.Sdl, report: _Reporter, root: m.Loc) -> None:
    hosts: set[str] = set()
    global_count = 0
    for group in manifest:
        for svc in group.services:
            decl = sdl.services.get(svc.name)
            loc = decl.loc if decl else root
            if not SERVICE_NAME.match(svc.name):
                report(
                    loc,
                    f"service name {svc.name!r} is invalid: lowercase letters, digits and '-', starting with a letter",
                )
            if not svc.image:
                report(loc, f"service {svc.name!r} has no image; set image: REPOSITORY:TAG")
            for env in svc.env or ():
                name = env.split("=", 1)[0]
                if not ENV_NAME.match(name) or name in (".", "..") or name.startswith(".."):
                    report(loc, f"service {svc.name!r}: env entry {env!r} has an invalid name; write NAME=value")
            for expose in svc.expose:
                if not 0 < expose.port <= 65535:
                    written = next((e for e in decl.expose if e.port == expose.port), None) if decl else None
                    where = written.loc.child("port", written.loc.line, written.loc.column) if written else loc
                    report(where, f"port {expose.port} is out of range: use 1 to 65535")
                if expose.global_:
                    global_count += 1
                for host in expose.hosts or ():
                    if len(host) > 253 or not DNS1123_SUBDOMAIN.match(host):
                        report(
                            loc,
                            f"service {svc.name!r}: {host!r} is not a valid hostname (lowercase DNS name)",
                        )
                    elif host in hosts:
                        report(
                            loc,
                            f"service {svc.name!r}: hostname {host!r} is accepted twice; each hostname once",
                        )
                    hosts.add(host)
    if global_count == 0:
        report(root, "no service is exposed globally: add 'to: [{global: true}]' to at least one expose")


MAX_GROUP_UNITS = 20  # resource units per group that this implementation accepts on its mock chain


def group_limit_problems(group: s.GroupSpec) -> list[str]:
    """The chain's validation of one group spec (deployment v1beta4): per-unit ranges and group totals.

    What a chain would refuse, as messages; empty when the group is acceptable. Pure, and linear in the
    number of resource units (never in the replica counts), so it is safe on hostile orders.
    """
    out: list[str] = []
    if not group.resources:
        return ["the group has no resource units"]
    if len(group.resources) > MAX_GROUP_UNITS:
        return [f"the group has {len(group.resources)} resource units; at most {MAX_GROUP_UNITS}"]
    total_cpu = total_gpu = total_mem = total_storage = 0
    for unit in group.resources:
        r = unit.resources
        where = f"resource unit {r.id}"
        if unit.count < 1:
            out.append(f"{where}: count {unit.count}; at least 1")
        if r.cpu_millis is None or not MIN_UNIT_CPU <= r.cpu_millis <= MAX_UNIT_CPU:
            out.append(f"{where}: cpu {r.cpu_millis}m out of range {MIN_UNIT_CPU}m..{MAX_UNIT_CPU}m")
        if not 0 <= r.gpu_units <= MAX_UNIT_GPU:
            out.append(f"{where}: gpu units {r.gpu_units} out of range 0..{MAX_UNIT_GPU}")
        if r.memory_bytes is None or not MIN_UNIT_MEMORY <= r.memory_bytes <= MAX_UNIT_MEMORY:
            out.append(f"{where}: memory {r.memory_bytes} bytes out of range 1Mi..2Ti")
        for v in r.storage or ():
            if not MIN_UNIT_STORAGE <= v.size <= MAX_UNIT_STORAGE:
                out.append(f"{where}: volume {v.name!r} size {v.size} bytes out of range 5Mi..32Ti")
        if unit.price.amount <= 0 or unit.price.amount > MAX_UNIT_PRICE:
            out.append(f"{where}: price {unit.price.amount} out of range (0, {MAX_UNIT_PRICE}]")
        if out:
            return out
        count = unit.count
        total_cpu += (r.cpu_millis or 0) * count
        total_gpu += r.gpu_units * count
        total_mem += (r.memory_bytes or 0) * count
        total_storage += sum(v.size for v in r.storage or ()) * count
    for name, total, limit in (
        ("cpu", total_cpu, MAX_UNIT_CPU * MAX_UNIT_COUNT),
        ("gpu", total_gpu, MAX_UNIT_GPU * MAX_UNIT_COUNT),
        ("memory", total_mem, MAX_UNIT_MEMORY * MAX_UNIT_COUNT),
        ("storage", total_storage, MAX_UNIT_STORAGE * MAX_UNIT_COUNT),
    ):
        if total > limit:
            out.append(f"group total {name} {total} is above the chain's limit {limit}")
    return out
