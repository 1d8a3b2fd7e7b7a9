"""YAML nodes -> the typed SDL model, with the field rules of Akash's reference parser.

The reference decodes with yaml.v3 into Go structs: unknown keys are ignored (we warn), a null value
means "absent", a scalar decodes into a string field as written, and a type mismatch is an error. Every
problem is collected with its path and position instead of stopping at the first.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TypeVar
from urllib.parse import urlsplit

from sdl import model as m
from sdl.errors import Problem, ProblemList, Severity
from sdl.spec import go_sort
from sdl.units import (
    UnitError,
    format_binary,
    parse_bytes,
    parse_cpu,
    parse_dec,
    parse_gpu_units,
    valid_denom,
)
from sdl.yamlnode import BOOL, FLOAT, INT, MERGE, NULL, Node

T = TypeVar("T")

TOP_LEVEL_KEYS = ("version", "include", "services", "profiles", "deployment", "endpoints", "reclamation")
STORAGE_CLASSES = ("default", "beta1", "beta2", "beta3", "ram")
_BOOL_TRUE = {"true": "true", "on": "true", "yes": "true", "false": "false", "off": "false", "no": "false"}
_YAML11_TRUE = {"y", "Y", "yes", "Yes", "YES", "on", "On", "ON"}
_YAML11_FALSE = {"n", "N", "no", "No", "NO", "off", "Off", "OFF"}
MAX_ALIAS_VISITS = 500_000


class Decoder:
    def __init__(self) -> None:
        self.problems = ProblemList()
        self.visits = 0

    # -- reporting -------------------------------------------------------------------------------
    def error(self, loc: m.Loc, message: str, severity: Severity = "error") -> None:
        self.problems.add(Problem(loc.path, loc.line, loc.column, message, severity))

    def warn(self, loc: m.Loc, message: str) -> None:
        self.error(loc, message, "warning")

    def _visit(self, node: Node, loc: m.Loc) -> None:
        self.visits += 1
        if self.visits > MAX_ALIAS_VISITS:
            raise _AliasBombError(loc)

    # -- generic shapes --------------------------------------------------------------------------
    def entries(self, node: Node, loc: m.Loc, *, what: str = "a mapping") -> Iterator[tuple[str, Node, m.Loc]]:
        """A mapping's (key, value, location) triples, merge keys applied, duplicates reported."""
        self._visit(node, loc)
        if node.kind != "mapping":
            self.error(loc, f"expected {what}, found {node.describe()}")
            return
        seen: dict[str, int] = {}
        merged: list[tuple[str, Node, m.Loc]] = []
        explicit: list[tuple[str, Node, m.Loc]] = []
        for key_node, value in node.items:
            if key_node.kind != "scalar":
                self.error(loc.child("?", key_node.line, key_node.column), "a key must be a plain string")
                continue
            key = key_node.value if key_node.tag != NULL else ""
            # point at a scalar value (what is wrong is usually the value), else at the key
            at = value if value.kind == "scalar" and not value.is_null else key_node
            child = loc.child(key, at.line, at.column)
            if key_node.tag == MERGE:
                for source in value.children if value.kind == "sequence" else [value]:
                    if source.kind != "mapping":
                        self.error(child, "a merge key (<<) must refer to a mapping")
                        continue
                    for k, v, kl in self.entries(source, loc):
                        if k not in {e[0] for e in merged}:
                            merged.append((k, v, kl))
                continue
            if key in seen:
                self.error(child, f"key {key!r} is already defined at line {seen[key]}; remove one of them")
                continue
            seen[key] = key_node.line
            explicit.append((key, value, child))
        yield from explicit
        yield from (e for e in merged if e[0] not in seen)

    def fields(self, node: Node, loc: m.Loc, known: tuple[str, ...], what: str) -> dict[str, tuple[Node, m.Loc]]:
        """A struct-like mapping: known keys returned; unknown ones are ignored by Akash, so we warn."""
        out: dict[str, tuple[Node, m.Loc]] = {}
        for key, value, child in self.entries(node, loc, what=what):
            if key in known:
                out[key] = (value, child)
            else:
                hint = _did_you_mean(key, known)
                self.warn(child, f"unknown key {key!r} is ignored (Akash ignores it too){hint}")
        return out

    def string(self, node: Node, loc: m.Loc) -> str:
        self._visit(node, loc)
        if node.kind != "scalar":
            self.error(loc, f"expected a string, found {node.describe()}")
            return ""
        return "" if node.tag == NULL else node.value

    def uint(self, node: Node, loc: m.Loc, bits: int = 32, what: str = "a whole number") -> int:
        self._visit(node, loc)
        if node.kind != "scalar":
            self.error(loc, f"expected {what}, found {node.describe()}")
            return 0
        if node.tag == NULL:
            return 0
        value = node.resolved
        if node.tag == FLOAT and isinstance(value, float) and math.isfinite(value) and 0 <= value < 2**bits:
            return int(value)
        if node.tag == INT and isinstance(value, int) and 0 <= value < 2**bits:
            return value
        if node.tag == INT and isinstance(value, int):
            self.error(loc, f"{node.value} is out of range for {what} (0 to {2**bits - 1})")
        else:
            quoted = " (remove the quotes)" if node.value.strip().isdigit() else ""
            self.error(loc, f"expected {what}, found {node.describe()}{quoted}")
        return 0

    def boolean(self, node: Node, loc: m.Loc) -> bool:
        self._visit(node, loc)
        if node.kind == "scalar":
            if node.tag == NULL:
                return False
            if node.tag == BOOL:
                return bool(node.resolved)
            if node.value in _YAML11_TRUE:
                return True
            if node.value in _YAML11_FALSE:
                return False
        self.error(loc, f"expected true or false, found {node.describe()}")
        return False

    def string_list(self, node: Node, loc: m.Loc) -> tuple[str, ...] | None:
        self._visit(node, loc)
        if node.is_null:
            return None
        if node.kind != "sequence":
            self.error(loc, f"expected a list of strings, found {node.describe()}")
            return None
        return tuple(self.string(c, loc.child(i, c.line, c.column)) for i, c in enumerate(node.children))

    def string_map(self, node: Node, loc: m.Loc) -> dict[str, str]:
        return {k: self.string(v, child) for k, v, child in self.entries(node, loc)}

    def listed(self, node: Node, loc: m.Loc, item: Callable[[Node, m.Loc], T | None], what: str) -> tuple[T, ...]:
        self._visit(node, loc)
        if node.is_null:
            return ()
        if node.kind != "sequence":
            self.error(loc, f"expected a list of {what}, found {node.describe()}")
            return ()
        out: list[T] = []
        for i, child in enumerate(node.children):
            value = item(child, loc.child(i, child.line, child.column))
            if value is not None:
                out.append(value)
        return tuple(out)

    def unit(self, node: Node, loc: m.Loc, parse: Callable[[str], int]) -> int | None:
        """A quantity with a custom parser; null means absent (Go skips its unmarshaler)."""
        self._visit(node, loc)
        if node.is_null:
            return 0
        if node.kind != "scalar":
            self.error(loc, f"expected a quantity, found {node.describe()}")
            return None
        try:
            return parse(node.value)
        except UnitError as e:
            self.error(loc, str(e))
            return None

    # -- the SDL ---------------------------------------------------------------------------------
    def services(self, node: Node, loc: m.Loc) -> dict[str, m.Service]:
        out: dict[str, m.Service] = {}
        if node.is_null:
            return out
        for name, value, child in self.entries(node, loc, what="a mapping of service names to services"):
            out[name] = self.service(name, value, child)
        return out

    def service(self, name: str, node: Node, loc: m.Loc) -> m.Service:
        if node.is_null:
            return m.Service(name, "", None, None, None, (), None, None, loc)
        known = ("image", "command", "args", "env", "expose", "dependencies", "params", "credentials")
        f = self.fields(node, loc, known, "a service (image, expose, env, ...)")
        image = self.string(*f["image"]) if "image" in f else ""
        command = self.string_list(*f["command"]) if "command" in f else None
        args = self.string_list(*f["args"]) if "args" in f else None
        env = self.string_list(*f["env"]) if "env" in f else None
        expose = self.listed(*f["expose"], self.expose, "exposes") if "expose" in f else ()
        if "dependencies" in f:
            self.listed(*f["dependencies"], self.dependency, "dependencies")
        params = self.params(*f["params"]) if "params" in f else None
        creds = self.credentials(*f["credentials"]) if "credentials" in f else None
        return m.Service(name, image, command, args, env, expose, params, creds, loc)

    def dependency(self, node: Node, loc: m.Loc) -> None:
        if not node.is_null:
            f = self.fields(node, loc, ("service",), "a dependency ({service: NAME})")
            if "service" in f:
                self.string(*f["service"])

    def expose(self, node: Node, loc: m.Loc) -> m.Expose | None:
        if node.is_null:
            return m.Expose(0, 0, "", (), None, m.HttpOptionsIn(), loc)
        known = ("port", "as", "proto", "to", "accept", "http_options")
        f = self.fields(node, loc, known, "an expose entry (port, as, to, ...)")
        port = self.uint(*f["port"], what="a port number") if "port" in f else 0
        as_ = self.uint(*f["as"], what="a port number") if "as" in f else 0
        proto = self.string(*f["proto"]) if "proto" in f else ""
        to = self.listed(*f["to"], self.expose_to, "destinations") if "to" in f else ()
        accept = self.accept(*f["accept"]) if "accept" in f else None
        http = self.http_options(*f["http_options"]) if "http_options" in f else m.HttpOptionsIn()
        return m.Expose(port, as_, proto, to, accept, http, loc)

    def expose_to(self, node: Node, loc: m.Loc) -> m.ExposeTo | None:
        if node.is_null:
            return m.ExposeTo("", False, "", loc)
        f = self.fields(node, loc, ("service", "global", "http_options", "ip"), "a destination")
        service = self.string(*f["service"]) if "service" in f else ""
        global_ = self.boolean(*f["global"]) if "global" in f else False
        if "http_options" in f:
            self.http_options(*f["http_options"])
            self.warn(
                f["http_options"][1],
                "http_options under 'to' is ignored by Akash; put it on the expose entry",
            )
        ip = self.string(*f["ip"]) if "ip" in f else ""
        return m.ExposeTo(service, global_, ip, loc)

    def accept(self, node: Node, loc: m.Loc) -> tuple[str, ...] | None:
        hosts = self.string_list(node, loc)
        for i, host in enumerate(hosts or ()):
            child = node.children[i]
            reason = _request_uri_error(host)
            if reason:
                self.error(loc.child(i, child.line, child.column), f"{host!r} is not a hostname: {reason}")
        return hosts

    def http_options(self, node: Node, loc: m.Loc) -> m.HttpOptionsIn:
        if node.is_null:
            return m.HttpOptionsIn(loc=loc)
        keys = (
            "max_body_size",
            "proxy_buffer_size",
            "read_timeout",
            "send_timeout",
            "next_tries",
            "next_timeout",
            "next_cases",
        )
        f = self.fields(node, loc, keys, "http_options")
        nums = {k: self.uint(*f[k]) if k in f else 0 for k in keys[:-1]}
        cases = self.string_list(*f["next_cases"]) if "next_cases" in f else None
        return m.HttpOptionsIn(**nums, next_cases=cases, loc=loc)

    def params(self, node: Node, loc: m.Loc) -> m.Params | None:
        if node.is_null:
            return None
        f = self.fields(node, loc, ("storage", "permissions", "tee"), "service params (storage, permissions, tee)")
        mounts: list[m.StorageMount] = []
        if "storage" in f and not f["storage"][0].is_null:
            for vol, value, child in self.entries(*f["storage"], what="a mapping of volume names to mounts"):
                if value.is_null:
                    mounts.append(m.StorageMount(vol, "", False, child))
                    continue
                g = self.fields(value, child, ("mount", "readOnly"), "a volume mount (mount, readOnly)")
                mount = self.string(*g["mount"]) if "mount" in g else ""
                read_only = self.boolean(*g["readOnly"]) if "readOnly" in g else False
                mounts.append(m.StorageMount(vol, mount, read_only, child))
        read: tuple[str, ...] | None = None
        has_permissions = False
        if "permissions" in f and not f["permissions"][0].is_null:
            has_permissions = True
            g = self.fields(*f["permissions"], ("read",), "permissions (read)")
            read = self.string_list(*g["read"]) if "read" in g else None
        tee = self.string(*f["tee"]) if "tee" in f else ""
        return m.Params(tuple(mounts), read, has_permissions, tee, loc)

    def credentials(self, node: Node, loc: m.Loc) -> m.Credentials | None:
        if node.is_null:
            return None
        f = self.fields(node, loc, ("host", "email", "username", "password"), "credentials")
        v = {k: self.string(*f[k]) if k in f else "" for k in ("host", "email", "username", "password")}
        return m.Credentials(**v, loc=loc)

    def compute(self, node: Node, loc: m.Loc) -> dict[str, m.ComputeResources | None]:
        out: dict[str, m.ComputeResources | None] = {}
        if node.is_null:
            return out
        for name, value, child in self.entries(node, loc, what="a mapping of compute profile names"):
            if value.is_null:
                out[name] = None
                continue
            f = self.fields(value, child, ("resources",), "a compute profile (resources)")
            out[name] = self.resources(*f["resources"]) if "resources" in f else None
        return out

    def resources(self, node: Node, loc: m.Loc) -> m.ComputeResources | None:
        if node.is_null:
            return None
        f = self.fields(node, loc, ("cpu", "gpu", "memory", "storage"), "resources (cpu, memory, storage, gpu)")
        cpu_millis: int | None = None
        cpu_attrs: tuple[tuple[str, str], ...] = ()
        if "cpu" in f and not f["cpu"][0].is_null:
            g = self.fields(*f["cpu"], ("units", "attributes"), "cpu (units, attributes)")
            cpu_millis = self.unit(*g["units"], parse_cpu) if "units" in g else 0
            if "attributes" in g and not g["attributes"][0].is_null:
                attrs = []
                for key, value, child in self.entries(*g["attributes"]):
                    if key != "arch":
                        self.error(child, f"unsupported cpu attribute {key!r}; only 'arch' is allowed")
                    attrs.append((key, self.string(value, child)))
                cpu_attrs = tuple(sorted(attrs))
        memory: int | None = None
        if "memory" in f and not f["memory"][0].is_null:
            g = self.fields(*f["memory"], ("size",), "memory (size)")
            memory = self.unit(*g["size"], parse_bytes) if "size" in g else 0
        storage = self.storage(*f["storage"]) if "storage" in f else None
        gpu_units: int | None = None
        gpu_attrs: tuple[tuple[str, str], ...] = ()
        gpu_models: tuple[m.GpuModel, ...] = ()
        if "gpu" in f and not f["gpu"][0].is_null:
            gpu_units, gpu_attrs, gpu_models = self.gpu(*f["gpu"])
        return m.ComputeResources(cpu_millis, cpu_attrs, memory, storage, gpu_units, gpu_attrs, gpu_models, loc)

    def gpu(self, node: Node, loc: m.Loc) -> tuple[int, tuple[tuple[str, str], ...], tuple[m.GpuModel, ...]]:
        units = 0
        attrs: tuple[tuple[str, str], ...] = ()
        models: tuple[m.GpuModel, ...] = ()
        has_attrs = False
        for key, value, child in self.entries(node, loc, what="gpu (units, attributes)"):
            if key == "units":
                units = self.unit(value, child, parse_gpu_units) or 0
            elif key == "attributes":
                if value.is_null:
                    continue
                has_attrs = True
                attrs, models = self.gpu_attributes(value, child)
            else:
                self.error(child, f"unsupported gpu field {key!r}; use units and attributes")
        if units > 0 and not has_attrs:
            self.error(
                loc,
                "GPU attributes are required when units > 0; add attributes.vendor.nvidia (empty means any model)",
            )
        return units, attrs, models

    def gpu_attributes(self, node: Node, loc: m.Loc) -> tuple[tuple[tuple[str, str], ...], tuple[m.GpuModel, ...]]:
        vendor: Node | None = None
        vendor_loc = loc
        for key, value, child in self.entries(node, loc, what="gpu attributes (vendor)"):
            if key == "vendor":
                vendor, vendor_loc = value, child
            else:
                self.error(child, f"unsupported gpu attribute {key!r}; only 'vendor' is allowed")
        if vendor is None or vendor.is_null:
            self.error(loc, "at least one GPU vendor must be set: attributes.vendor.nvidia")
            return (), ()
        models: list[m.GpuModel] = []
        saw_nvidia = False
        for key, value, child in self.entries(vendor, vendor_loc, what="a mapping of GPU vendors"):
            if key != "nvidia":
                self.warn(
                    child,
                    f"GPU vendor {key!r} is ignored by Akash, which then asks for any NVIDIA GPU; only nvidia is supported",
                )
                continue
            saw_nvidia = True
            models.extend(self.listed(value, child, self.gpu_model, "GPU models"))
        if not saw_nvidia:
            self.warn(vendor_loc, "no nvidia entry: Akash reads this as any NVIDIA GPU (vendor/nvidia/model/*)")
        keys = [_gpu_key(g) for g in models] or ["vendor/nvidia/model/*"]
        ordered = tuple((k, "true") for k in sorted(keys))
        if len(set(keys)) != len(keys):
            self.error(vendor_loc, "the same GPU model is listed twice; list each model once")
        for k in keys:
            if not _ATTRIBUTE_KEY.match(k):
                self.error(
                    vendor_loc,
                    f"GPU model key {k!r} is not valid: use letters, digits, '-', '_', '.' (e.g. h100, rtx4090)",
                )
        return ordered, tuple(models)

    def gpu_model(self, node: Node, loc: m.Loc) -> m.GpuModel | None:
        if node.is_null:
            return m.GpuModel("", None, None)
        f = self.fields(node, loc, ("model", "ram", "interface"), "a GPU model (model, ram, interface)")
        model = self.string(*f["model"]) if "model" in f else ""
        ram: int | None = None
        if "ram" in f and not f["ram"][0].is_null:
            ram = self.unit(*f["ram"], lambda t: parse_bytes(t, binary_only=True))
            if ram is None:
                ram = 0
        interface: str | None = None
        if "interface" in f and not f["interface"][0].is_null:
            iface_node, iface_loc = f["interface"]
            interface = iface_node.value if iface_node.kind == "scalar" else ""
            if interface not in ("pcie", "sxm"):
                self.error(iface_loc, f"GPU interface {interface!r} is not supported; write pcie or sxm")
        return m.GpuModel(model, ram, interface)

    def storage(self, node: Node, loc: m.Loc) -> tuple[m.Volume, ...] | None:
        if node.is_null:
            return None
        volumes: list[m.Volume] = []
        if node.kind == "sequence":
            for i, child in enumerate(node.children):
                vol = self.volume(child, loc.child(i, child.line, child.column), None)
                if vol is not None:
                    volumes.append(vol)
        elif node.kind == "mapping":
            vol = self.volume(node, loc, "default")
            if vol is not None:
                volumes.append(vol)
        else:
            self.error(loc, f"expected a list of volumes or one volume, found {node.describe()}")
            return None
        names: set[str] = set()
        for vol in volumes:
            if vol.name in names:
                self.error(vol.loc, f"volume name {vol.name!r} is used twice; give each volume its own name")
            names.add(vol.name)
        return tuple(go_sort(volumes, _volume_less)) or None

    def volume(self, node: Node, loc: m.Loc, forced_name: str | None) -> m.Volume | None:
        if node.is_null:
            return m.Volume(forced_name or "default", 0, (), loc)
        f = self.fields(node, loc, ("name", "size", "attributes"), "a volume (name, size, attributes)")
        name = self.string(*f["name"]) if "name" in f else ""
        if forced_name is not None:
            name = forced_name
        size = (self.unit(*f["size"], parse_bytes) or 0) if "size" in f else 0
        attrs: tuple[tuple[str, str], ...] = ()
        if "attributes" in f and not f["attributes"][0].is_null:
            attrs = self.storage_attributes(*f["attributes"])
        return m.Volume(name or "default", size, attrs, loc)

    def storage_attributes(self, node: Node, loc: m.Loc) -> tuple[tuple[str, str], ...]:
        raw = self.string_map(node, loc)
        raw.setdefault("persistent", "false")
        persistent, cls = raw["persistent"], raw.get("class", "")
        if cls == "":
            if persistent == "true":
                raw["class"] = "default"
        elif cls == "ram":
            if persistent != "false":
                self.error(loc, "storage class 'ram' cannot be persistent; drop persistent or set it to false")
        elif persistent == "false":
            self.error(loc, f"class {cls!r} is only for persistent volumes; add persistent: true, or drop the class")
        out: list[tuple[str, str]] = []
        for key, written in raw.items():
            value = written
            if key == "persistent":
                norm = _BOOL_TRUE.get(written)
                if norm is None:
                    self.error(loc, f"persistent must be true or false, not {written!r}")
                    continue
                value = norm
            elif key == "class":
                if value not in STORAGE_CLASSES:
                    self.error(loc, f"unknown storage class {value!r}; use one of {', '.join(STORAGE_CLASSES)}")
            else:
                self.error(loc, f"unsupported storage attribute {key!r}; use persistent and class")
                continue
            out.append((key, value))
        return tuple(sorted(out))

    def placements(self, node: Node, loc: m.Loc) -> dict[str, m.Placement]:
        out: dict[str, m.Placement] = {}
        if node.is_null:
            return out
        for name, value, child in self.entries(node, loc, what="a mapping of placement names"):
            out[name] = self.placement(name, value, child)
        return out

    def placement(self, name: str, node: Node, loc: m.Loc) -> m.Placement:
        if node.is_null:
            return m.Placement(name, None, None, None, {}, loc)
        f = self.fields(node, loc, ("attributes", "signedBy", "pricing"), "a placement (attributes, signedBy, pricing)")
        attrs: tuple[tuple[str, str], ...] | None = None
        if "attributes" in f and not f["attributes"][0].is_null:
            attrs = tuple(sorted(self.string_map(*f["attributes"]).items())) or None
        all_of: tuple[str, ...] | None = None
        any_of: tuple[str, ...] | None = None
        if "signedBy" in f and not f["signedBy"][0].is_null:
            g = self.fields(*f["signedBy"], ("allOf", "anyOf"), "signedBy (allOf, anyOf)")
            all_of = self.string_list(*g["allOf"]) if "allOf" in g else None
            any_of = self.string_list(*g["anyOf"]) if "anyOf" in g else None
        pricing: dict[str, m.Price] = {}
        if "pricing" in f and not f["pricing"][0].is_null:
            for profile, value, child in self.entries(*f["pricing"], what="a mapping of compute profiles to prices"):
                price = self.price(value, child)
                if price is not None:
                    pricing[profile] = price
        return m.Placement(name, attrs, all_of, any_of, pricing, loc)

    def price(self, node: Node, loc: m.Loc) -> m.Price | None:
        if node.is_null:  # Akash tolerates it while no deployment uses this profile
            self.warn(loc, "price is empty and ignored; write {denom: uakt, amount: 100}")
            return None
        f = self.fields(node, loc, ("denom", "amount"), "a price (denom, amount)")
        amount_text = self.string(*f["amount"]) if "amount" in f else ""
        denom = self.string(*f["denom"]) if "denom" in f else ""
        amount_loc = f["amount"][1] if "amount" in f else loc
        try:
            amount = parse_dec(amount_text)
        except UnitError as e:
            self.error(amount_loc, str(e))
            return None
        if amount == 0:
            self.error(amount_loc, "amount is zero; the maximum price per block must be positive")
            return None
        if amount < 0:
            self.error(
                amount_loc,
                f"amount {amount_text!r} is negative; the maximum price per block must be positive",
            )
            return None
        if not valid_denom(denom):
            denom_loc = f["denom"][1] if "denom" in f else loc
            self.error(denom_loc, f"{denom!r} is not a coin denomination; write uakt or uact (or an ibc/... denom)")
            return None
        return m.Price(denom, Decimal(amount), loc)

    def deployment(self, node: Node, loc: m.Loc) -> tuple[m.DeploymentEntry, ...]:
        out: list[m.DeploymentEntry] = []
        if node.is_null:
            return ()
        for service, value, child in self.entries(node, loc, what="a mapping of service names to placements"):
            if value.is_null:
                continue
            for placement, entry, gchild in self.entries(value, child, what="a mapping of placement names"):
                if entry.is_null:
                    out.append(m.DeploymentEntry(service, placement, "", 0, gchild))
                    continue
                f = self.fields(entry, gchild, ("profile", "count"), "a deployment (profile, count)")
                profile = self.string(*f["profile"]) if "profile" in f else ""
                count = self.uint(*f["count"], what="a replica count") if "count" in f else 0
                out.append(m.DeploymentEntry(service, placement, profile, count, gchild))
        return tuple(sorted(out, key=lambda e: (e.service, e.placement)))

    def endpoints(self, node: Node, loc: m.Loc) -> dict[str, m.Endpoint]:
        out: dict[str, m.Endpoint] = {}
        if node.is_null:
            return out
        for name, value, child in self.entries(node, loc, what="a mapping of endpoint names"):
            kind = ""
            if not value.is_null:
                f = self.fields(value, child, ("kind",), "an endpoint (kind)")
                kind = self.string(*f["kind"]) if "kind" in f else ""
            out[name] = m.Endpoint(name, kind, child)
        return out


class _AliasBombError(Exception):
    def __init__(self, loc: m.Loc) -> None:
        super().__init__()
        self.loc = loc


def _gpu_key(g: m.GpuModel) -> str:
    key = g.model
    if g.ram is not None:
        key += f"/ram/{format_binary(g.ram)}"
    if g.interface is not None:
        key += f"/interface/{g.interface}"
    return f"vendor/nvidia/model/{key}"


_ATTRIBUTE_KEY = re.compile(r"^([a-zA-Z][\w/.\-]{1,126}[\w*]?)$", re.ASCII)


def _persistent_of(vol: m.Volume) -> str:
    return dict(vol.attributes).get("persistent", "")


def _volume_less(a: m.Volume, b: m.Volume) -> bool:
    """The reference's storage ordering (size, then the persistent attribute, then name), including
    its quirks, so unit layouts and version hashes agree."""
    if a.size != b.size:
        return a.size < b.size
    ia, ja = _persistent_of(a), _persistent_of(b)
    if (not ia and ja) or (ia and ja and ia < ja):
        return True
    if ia and not ja:
        return False
    if ia != "true":
        return True
    if ja != "true":
        return False
    return a.name < b.name


def _request_uri_error(host: str) -> str:
    """Why url.ParseRequestURI("http://" + host) fails, or ''."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in host):
        return "it contains a control character"
    if " " in host:
        return "it contains a space"
    try:
        parts = urlsplit("http://" + host)
        _ = parts.port
    except ValueError as e:
        return str(e)
    return ""


def _did_you_mean(key: str, known: tuple[str, ...]) -> str:
    aliases = {"environment": "env", "depends_on": "dependencies", "ports": "expose", "cmd": "command"}
    if key in aliases and aliases[key] in known:
        return f"; did you mean {aliases[key]!r}?"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""
