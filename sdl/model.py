"""The typed, frozen model of an SDL file as written (what the tenant said, with where they said it)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Loc:
    """Where a value sits in the file: its YAML path and 1-based line and column."""

    path: str
    line: int
    column: int

    def child(self, key: str | int, line: int, column: int) -> Loc:
        part = f"[{key}]" if isinstance(key, int) else (f".{key}" if self.path else key)
        return Loc(f"{self.path}{part}", line, column)


@dataclass(frozen=True, slots=True)
class HttpOptionsIn:
    max_body_size: int = 0
    proxy_buffer_size: int = 0
    read_timeout: int = 0
    send_timeout: int = 0
    next_tries: int = 0
    next_timeout: int = 0
    next_cases: tuple[str, ...] | None = None
    loc: Loc | None = None


@dataclass(frozen=True, slots=True)
class ExposeTo:
    service: str
    global_: bool
    ip: str
    loc: Loc


@dataclass(frozen=True, slots=True)
class Expose:
    port: int
    as_: int
    proto: str
    to: tuple[ExposeTo, ...]
    accept: tuple[str, ...] | None
    http_options: HttpOptionsIn
    loc: Loc


@dataclass(frozen=True, slots=True)
class StorageMount:
    volume: str
    mount: str
    read_only: bool
    loc: Loc


@dataclass(frozen=True, slots=True)
class Params:
    storage: tuple[StorageMount, ...]
    permissions_read: tuple[str, ...] | None
    has_permissions: bool
    tee: str
    loc: Loc


@dataclass(frozen=True, slots=True)
class Credentials:
    host: str
    email: str
    username: str
    password: str
    loc: Loc


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    image: str
    command: tuple[str, ...] | None
    args: tuple[str, ...] | None
    env: tuple[str, ...] | None
    expose: tuple[Expose, ...]
    params: Params | None
    credentials: Credentials | None
    loc: Loc


@dataclass(frozen=True, slots=True)
class GpuModel:
    """One entry of ``gpu.attributes.vendor.nvidia``: model, optional ram (bytes) and interface."""

    model: str
    ram: int | None
    interface: str | None


@dataclass(frozen=True, slots=True)
class Volume:
    name: str
    size: int
    attributes: tuple[tuple[str, str], ...]  # normalised, sorted by key
    loc: Loc

    @property
    def persistent(self) -> bool:
        return dict(self.attributes).get("persistent") == "true"

    @property
    def storage_class(self) -> str:
        return dict(self.attributes).get("class", "")


@dataclass(frozen=True, slots=True)
class ComputeResources:
    cpu_millis: int | None
    cpu_attributes: tuple[tuple[str, str], ...]
    memory_bytes: int | None
    storage: tuple[Volume, ...] | None
    gpu_units: int | None
    gpu_attributes: tuple[tuple[str, str], ...]
    gpu_models: tuple[GpuModel, ...]
    loc: Loc


@dataclass(frozen=True, slots=True)
class Price:
    denom: str
    amount: Decimal
    loc: Loc


@dataclass(frozen=True, slots=True)
class Placement:
    name: str
    attributes: tuple[tuple[str, str], ...] | None
    signed_by_all_of: tuple[str, ...] | None
    signed_by_any_of: tuple[str, ...] | None
    pricing: dict[str, Price]
    loc: Loc


@dataclass(frozen=True, slots=True)
class DeploymentEntry:
    service: str
    placement: str
    profile: str
    count: int
    loc: Loc


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    kind: str
    loc: Loc


@dataclass(frozen=True, slots=True)
class Sdl:
    """A whole SDL file. ``version`` is ``"2.0"`` or ``"2.1"`` (the semantics Akash applies)."""

    version: str
    services: dict[str, Service]
    compute: dict[str, ComputeResources | None]
    placements: dict[str, Placement]
    deployment: tuple[DeploymentEntry, ...]  # sorted by service, then placement
    endpoints: dict[str, Endpoint]
    reclamation_min_window_ns: int | None
