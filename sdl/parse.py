"""SDL text -> a validated Deployment (model, group specs, manifest, version), or SdlError.

This is the library's one entry point. Bad input only ever raises SdlError; anything else is a bug.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sdl import model as m
from sdl import spec as s
from sdl.decode import TOP_LEVEL_KEYS, Decoder, _AliasBombError
from sdl.derive import derive
from sdl.errors import Problem, SdlError
from sdl.units import UnitError, parse_go_duration
from sdl.yamlnode import Node, load

SCHEMA_DENOMS = ("uakt", "uact")
_RECLAMATION_WINDOW = re.compile(r"^[1-9][0-9]*(s|m|h)$")
ROOT = m.Loc("", 1, 1)


@dataclass(frozen=True, slots=True)
class Deployment:
    """A valid SDL and everything Akash derives from it."""

    sdl: m.Sdl
    groups: tuple[s.GroupSpec, ...]
    manifest: s.Manifest
    version: bytes
    warnings: tuple[Problem, ...]

    def manifest_json(self) -> s.JSON:
        return s.manifest_json(self.manifest)

    def groups_json(self) -> s.JSON:
        return s.groups_json(self.groups)


def parse(text: str | bytes, *, source: str = "<sdl>", strict: bool = False) -> Deployment:
    """Parse and validate an SDL exactly as Akash's reference parser does.

    ``strict`` also rejects what only Akash's JSON schema (and so the Akash Console) rejects, such as a
    denomination other than uakt/uact or keys Akash silently ignores; by default those are warnings.
    """
    try:
        return _parse(text, source, strict)
    except SdlError:
        raise
    except RecursionError:
        raise SdlError([Problem("", 1, 1, "input is nested too deeply to read")], source) from None
    # Any other exception is a bug in this library: it escapes, so tests and fuzzers see it.


def _parse(text: str | bytes, source: str, strict: bool) -> Deployment:
    root, problems = load(text)
    if problems:
        raise SdlError(problems, source)
    if root is None:
        raise SdlError(
            [Problem("", 1, 1, "the file is empty; an SDL needs version, services, profiles and deployment")],
            source,
        )
    if root.kind != "mapping":
        raise SdlError(
            [Problem("", root.line, root.column, f"an SDL is a mapping of sections, found {root.describe()}")],
            source,
        )
    dec = Decoder()
    try:
        sdl = _decode(root, dec)
    except _AliasBombError as e:
        raise SdlError(
            [
                Problem(
                    e.loc.path,
                    e.loc.line,
                    e.loc.column,
                    "the document expands to too many nodes through aliases; refusing it",
                )
            ],
            source,
        ) from None
    if sdl is not None:
        _schema_checks(sdl, root, dec)
    decoded: list[Problem] = dec.problems
    if strict:
        decoded = [Problem(p.path, p.line, p.column, p.message, "error") for p in decoded]
    if sdl is None or any(p.severity == "error" for p in decoded):
        raise SdlError(decoded, source)
    result = derive(sdl, ROOT)
    problems = decoded + result.problems
    if any(p.severity == "error" for p in problems):
        raise SdlError(problems, source)
    warnings = tuple(p for p in problems if p.severity == "warning")
    return Deployment(sdl, result.groups, result.manifest, s.version_hash(result.manifest), warnings)


def _semver(text: str) -> tuple[int, int, int, bool] | None:
    """blang/semver ParseTolerant: (major, minor, patch, is_prerelease) or None."""
    body = text.strip(" \t\n\r\v\f")
    body = body.removeprefix("v")
    parts = body.split(".", 2)
    cleaned = []
    for part in parts:
        p = part
        if len(p) > 1:
            p = p.lstrip("0")
            if not p or not p[0].isdigit():
                p = "0" + p
        cleaned.append(p)
    if len(cleaned) < 3:
        if re.search(r"[+-]", cleaned[-1]):
            return None
        cleaned += ["0"] * (3 - len(cleaned))
    match = re.fullmatch(
        r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?",
        ".".join(cleaned),
    )
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3]), match[4] is not None


def _version(root: Node) -> tuple[str | None, Node | None, str]:
    flat = [n for pair in root.items for n in pair]
    for i, n in enumerate(flat):
        if n.kind == "scalar" and n.value == "version":
            if i + 1 >= len(flat):
                return None, n, "version has no value"
            value = flat[i + 1]
            text = value.value if value.kind == "scalar" else ""
            parsed = _semver(text)
            if parsed is None:
                return None, value, f'{text!r} is not a version; write version: "2.0" or "2.1"'
            major, minor, patch, pre = parsed
            if (major, minor, patch, pre) == (2, 0, 0, False):
                return "2.0", value, ""
            if (major, minor, patch) >= (2, 1, 0) and not ((major, minor, patch) == (2, 1, 0) and pre):
                return "2.1", value, ""
            return None, value, f'unsupported SDL version {text!r}; write "2.0" or "2.1"'
    return None, None, 'no version found; add version: "2.0" (or "2.1") at the top'


def _decode(root: Node, dec: Decoder) -> m.Sdl | None:
    version, version_node, why = _version(root)
    if version is None:
        where = version_node or root
        dec.error(m.Loc("version", where.line, where.column), why)
        return None
    sections: dict[str, tuple[Node, m.Loc]] = {}
    for key, value, loc in dec.entries(root, ROOT):
        if key not in TOP_LEVEL_KEYS:
            dec.error(loc, f"unexpected top-level key {key!r}; an SDL has {', '.join(TOP_LEVEL_KEYS)}")
            continue
        sections[key] = (value, loc)
    null = Node("scalar", root.line, root.column, tag="!!null")
    loc_of = {k: sections[k][1] for k in sections}

    def section(key: str) -> tuple[Node, m.Loc]:
        return sections.get(key) or (null, m.Loc(key, root.line, root.column))

    if "include" in sections:
        dec.string_list(*section("include"))
    services = dec.services(*section("services"))
    compute_node: Node = null
    placement_node: Node = null
    profiles_node, profiles_loc = section("profiles")
    compute_loc = profiles_loc.child("compute", profiles_node.line, profiles_node.column)
    placement_loc = profiles_loc.child("placement", profiles_node.line, profiles_node.column)
    if not profiles_node.is_null:
        f = dec.fields(profiles_node, profiles_loc, ("compute", "placement"), "profiles (compute, placement)")
        compute_node, compute_loc = f.get("compute", (null, compute_loc))
        placement_node, placement_loc = f.get("placement", (null, placement_loc))
    compute = dec.compute(compute_node, compute_loc)
    placements = dec.placements(placement_node, placement_loc)
    deployment = dec.deployment(*section("deployment"))
    endpoints = dec.endpoints(*section("endpoints"))
    reclamation: int | None = None
    if "reclamation" in sections:
        node, loc = sections["reclamation"]
        window = ""
        window_loc = loc
        if not node.is_null:
            f = dec.fields(node, loc, ("min_window",), "reclamation (min_window)")
            if "min_window" in f:
                window = dec.string(*f["min_window"])
                window_loc = f["min_window"][1]
        try:
            reclamation = parse_go_duration(window)
        except UnitError as e:
            dec.error(window_loc, f"invalid reclamation min_window: {e}")
        else:
            if reclamation <= 0:
                dec.error(window_loc, "reclamation min_window must be greater than zero")
    for required in ("services", "profiles", "deployment"):
        if required not in loc_of:
            dec.error(m.Loc(required, root.line, root.column), f"missing section {required!r}")
    return m.Sdl(version, services, compute, placements, deployment, endpoints, reclamation)


def _schema_checks(sdl: m.Sdl, root: Node, dec: Decoder) -> None:
    """What Akash's JSON schema rejects but its Go parser accepts: warnings here, errors when strict."""
    flat = [n for pair in root.items for n in pair]
    for i, n in enumerate(flat[:-1]):
        if n.kind == "scalar" and n.value == "version":
            value = flat[i + 1]
            if value.value not in ("2.0", "2.1"):
                dec.warn(
                    m.Loc("version", value.line, value.column),
                    f'version {value.value!r} is read as {sdl.version}; the schema allows only "2.0" and "2.1"',
                )
            break
    for placement in sdl.placements.values():
        for profile, price in placement.pricing.items():
            if price.denom not in SCHEMA_DENOMS:
                dec.warn(
                    price.loc,
                    f"denom {price.denom!r} for {profile!r} is accepted on chain but the schema allows only uakt and uact",
                )
    for svc in sdl.services.values():
        c = svc.credentials
        if c is not None:
            if c.email and len(c.email) < 5:
                dec.warn(c.loc, "credentials email is shorter than 5 characters")
            if len(c.password) < 6:
                dec.warn(c.loc, "credentials password is shorter than 6 characters")
    _reclamation_schema(root, dec)


def _reclamation_schema(root: Node, dec: Decoder) -> None:
    for key, value in root.items:
        if key.value == "reclamation" and value.kind == "mapping":
            for k, v in value.items:
                if k.value == "min_window" and v.kind == "scalar" and not _RECLAMATION_WINDOW.match(v.value):
                    dec.warn(
                        m.Loc("reclamation.min_window", v.line, v.column),
                        f"{v.value!r}: the schema accepts one whole number with s, m or h (e.g. 90m)",
                    )
