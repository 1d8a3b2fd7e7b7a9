"""Every setting of the daemon: a YAML file (optional) over documented defaults, validated strictly, plus
the few environment variables the Helm chart sets. The only module that reads os.environ.

The file is read into pydantic models in strict mode: an unknown key, a wrong type (a string where a
list or a boolean belongs) or a bad value stops the daemon at start with the key's path and what to
write instead. Money is exact (provider.money.Dec); sizes take binary suffixes (Ki, Mi, Gi, Ti, Pi).
Environment overrides (pydantic-settings): GPU_PROVIDER_CHAIN_URL, GPU_PROVIDER_KEYRING, KUBECONFIG
(when inventory.kubeconfig is not set), NODE_NAME (the agent's node).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from provider.bidding.pricing import LinearPricing
from provider.errors import ConfigError
from provider.inventory.models import DEFAULT_CATALOGUE, Catalogue, ModelEntry
from provider.inventory.reservations import DEFAULT_HOLD_BLOCKS
from provider.money import Dec, MoneyError

StorageClass = Literal["default", "beta1", "beta2", "beta3"]
STORAGE_CLASSES: tuple[StorageClass, ...] = ("default", "beta1", "beta2", "beta3")
DEFAULT_KEYRING = Path.home() / ".config" / "gpu-provider" / "keyring.json"
DEFAULT_STATE = Path.home() / ".local" / "state" / "gpu-provider"
BINARY_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "Pi": 1024**5}
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi)?$")
_ADDRESS = re.compile(r"^(?P<host>[^\s:]+|\[[0-9a-fA-F:]+\]):(?P<port>[0-9]{1,5})$")


def _money(value: Any) -> Dec:
    """A YAML number or decimal text -> exact amount. A YAML float is read from its shortest text
    (``1.60`` -> 1.6), never used as a float."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not an amount; write a number such as 1.60")
    if isinstance(value, float):
        value = repr(value)
    try:
        amount = Dec.parse(value)
    except MoneyError as e:
        raise ValueError(f"{e}; write a number such as 1.60") from None
    if amount.atto < 0:
        raise ValueError("must not be negative")
    return amount


def _size(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a size; write e.g. 10Ti")
    m = _SIZE.match(str(value)) if isinstance(value, str | int) else None
    if not m:
        raise ValueError(f"{value!r} is not a size; write bytes or a number with Ki, Mi, Gi, Ti or Pi (e.g. 10Ti)")
    return int(Dec.parse(m[1]).to_fraction() * BINARY_UNITS.get(m[2] or "", 1))  # whole bytes, rounded down


def _address(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not HOST:PORT; write e.g. 127.0.0.1:9464 in quotes")
    if value and (not (m := _ADDRESS.match(value)) or not 0 < int(m["port"]) < 65536):
        raise ValueError(f'{value!r} is not HOST:PORT (e.g. 127.0.0.1:9464); "" turns it off')
    return value


def _path(value: Any) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError(f"{value!r} is not a path; write a file or directory path")
    return Path(value).expanduser()


Money = Annotated[Dec, BeforeValidator(_money), PlainSerializer(str)]
Size = Annotated[int, BeforeValidator(_size)]
Address = Annotated[str, BeforeValidator(_address)]
FilePath = Annotated[Path, BeforeValidator(_path), PlainSerializer(str)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True)


class AkashSection(_Section):
    rpc: str = "http://127.0.0.1:26657"  # the node's CometBFT RPC (block results; its websocket wakes the feed)
    rest: str = "http://127.0.0.1:1317"  # the node's REST gateway (queries, simulate, broadcast)
    chain_id: str = ""  # checked against the node's when set (akashnet-2 on mainnet); "" takes the node's
    key_file: FilePath | None = None  # the provider key: a mnemonic, a hex key, or `akash keys export` output
    key_passphrase_file: FilePath | None = None  # the passphrase of an exported (armored) key_file
    gas_price: Money = Dec.parse("0.025")  # per unit of gas, in gas_denom
    gas_denom: Literal["uakt", "uact"] = "uakt"  # what fees are paid in
    gas_adjustment: float = Field(1.5, ge=1.0, le=10.0)  # simulated gas x this is the limit
    inclusion_timeout: float = Field(60.0, gt=0, le=600)  # seconds to wait for a broadcast tx to be in a block
    max_blocks_per_poll: int = Field(50, ge=1, le=10_000)  # blocks the feed reads per call when catching up

    @model_validator(mode="after")
    def _urls(self) -> AkashSection:
        for name in ("rpc", "rest"):
            url = getattr(self, name)
            if not re.match(r"^https?://[^\s/]+", url):
                raise ValueError(f"chain.akash.{name}: {url!r} is not an http(s) URL (e.g. http://127.0.0.1:26657)")
        return self


class ChainSection(_Section):
    kind: Literal["mock", "akash"] = "mock"  # which chain: our mock chain (default) or a real Akash node
    url: str = "http://127.0.0.1:26680"  # the mock chain's endpoint
    key: str = "provider"  # the provider key's name in the keyring (mock chain)
    keyring: FilePath = DEFAULT_KEYRING  # the keyring file (gpu-provider tenant keys add)
    akash: AkashSection = Field(default_factory=AkashSection)  # used when kind is akash

    @model_validator(mode="after")
    def _akash_key(self) -> ChainSection:
        if self.kind == "akash" and self.akash.key_file is None:
            raise ValueError(
                "chain.kind akash needs chain.akash.key_file: a file holding the provider's mnemonic "
                "(or hex private key), e.g. a mounted Secret"
            )
        return self


class ProviderSection(_Section):
    host_uri: str = "http://127.0.0.1:8443"  # the built-in API default is plain HTTP on loopback
    attributes: dict[str, str] = Field(  # published on chain; orders' placement attributes must match them
        default_factory=lambda: {"host": "gpu-provider", "tier": "community"}
    )
    state_dir: FilePath = DEFAULT_STATE  # the chain cursor and the maintenance flag live here
    metrics_address: Address = "127.0.0.1:9464"  # Prometheus scrapes /metrics here; "" disables


class Deposit(_Section):
    denom: Literal["uakt", "uact"] = "uakt"  # the bid deposit's denom
    amount: Money = Dec.parse(500_000)  # the bid deposit (Akash's minimum: 500000uakt)


class Tenants(_Section):
    allow: list[str] | None = None  # None: everyone
    deny: list[str] = Field(default_factory=list)  # tenants never bid for


class BiddingSection(_Section):
    deposit: Deposit = Field(default_factory=Deposit)
    hold_blocks: int = Field(DEFAULT_HOLD_BLOCKS, ge=1, le=100_000)  # blocks a bid's capacity is held unanswered
    storage_classes: list[StorageClass] = Field(default_factory=lambda: list(STORAGE_CLASSES))  # offered to SDLs
    tenants: Tenants = Field(default_factory=Tenants)
    maintenance: bool = False  # no new bids, leases still served (`gpu-provider maintenance on` needs no restart)
    recheck_seconds: float = Field(5.0, gt=0, le=3600)  # orders skipped for capacity: tried again this often
    max_waiting_orders: int = Field(1000, ge=0, le=100_000)  # orders remembered for that; oldest forgotten first
    gap_rescan_seconds: float = Field(30.0, gt=0, le=3600)  # after feed gaps: chain reconciled at most this often
    register_debounce_seconds: float = Field(30.0, ge=0, le=86_400)  # GPU model changes published once this stable

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "hold_seconds" in data:
            raise ValueError(
                "hold_seconds is gone: holds are counted in blocks now; write hold_blocks (default 55, ~5.5 min)"
            )
        return data


DEFAULT_GPU_PRICES = {"h100": "1600", "h200": "2200", "a100": "900", "rtx4090": "300"}  # USD per GPU-month
DEFAULT_USD_PER_DENOM = {"uact": "0.000001", "uakt": "0.0000006"}


class LinearSection(_Section):
    cpu_core: Money = Dec.parse("1.60")  # USD per core-month
    memory_gib: Money = Dec.parse("0.80")  # USD per GiB-month
    ephemeral_gib: Money = Dec.parse("0.02")  # USD per GiB-month
    storage_gib: dict[str, Money] = Field(  # USD per GiB-month of persistent storage, by class
        default_factory=lambda: {k: Dec.parse(v) for k, v in LinearPricing().storage_gib.items()}
    )
    endpoint: Money = Dec.parse("0.05")  # USD per global endpoint-month
    gpu: dict[str, Money] = Field(  # USD per GPU-month by model (model.ram.interface, model.ram or model)
        default_factory=lambda: {k: Dec.parse(v) for k, v in DEFAULT_GPU_PRICES.items()}
    )
    gpu_default: Money = Dec.parse(100)  # USD per GPU-month for a model not in the table
    usd_per_denom: dict[str, Money] = Field(  # USD value of one unit of each denom (converts the rates)
        default_factory=lambda: {k: Dec.parse(v) for k, v in DEFAULT_USD_PER_DENOM.items()}
    )
    per_block: bool = False  # true: the rates above are per block in the order's denom

    def pricing(self) -> LinearPricing:
        return LinearPricing(
            cpu_core=self.cpu_core,
            memory_gib=self.memory_gib,
            ephemeral_gib=self.ephemeral_gib,
            storage_gib=dict(self.storage_gib),
            endpoint=self.endpoint,
            gpu=dict(self.gpu),
            gpu_default=self.gpu_default,
            usd_per_denom=dict(self.usd_per_denom),
            per_block=self.per_block,
        )


class ScriptSection(_Section):
    path: str = ""  # the price script (Akash's JSON on stdin, one decimal on stdout)
    timeout: float = Field(10.0, gt=0, le=300)  # seconds per run
    concurrency: int = Field(8, ge=1, le=256)  # runs at once


class PricingSection(_Section):
    strategy: Literal["linear", "script"] = "linear"  # linear rates, or an external price script
    linear: LinearSection = Field(default_factory=LinearSection)
    script: ScriptSection = Field(default_factory=ScriptSection)

    @model_validator(mode="after")
    def _script_needs_a_path(self) -> PricingSection:
        if self.strategy == "script" and not self.script.path:
            raise ValueError("strategy script needs script.path: the price script to run")
        return self


class StaticNode(_Section):
    name: str
    model: str = ""
    ram: str = ""
    interface: Literal["", "sxm", "pcie"] = ""
    gpus: int = Field(0, ge=0, le=64)
    cpu: int = Field(64, ge=1)
    memory_gib: int = Field(512, ge=1)
    count: int = Field(1, ge=1, le=100_000)


class GpuModel(_Section):
    key: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64)  # the model as tenants write it in SDL
    ram_gib: int = Field(ge=1, le=4096)  # the memory it is sold by (nominal GiB: 80 for an H100 80GB)
    interface: Literal["sxm", "pcie"] = "pcie"
    pci_device_ids: list[Annotated[int, Field(ge=0, le=0xFFFF)]] = Field(default_factory=list)  # NVML's, e.g. 0x2330
    names: list[str] = Field(default_factory=list)  # NVML names (GFD's gpu.product is the name with "-" for " ")

    def entry(self) -> ModelEntry:
        return ModelEntry(self.key, self.ram_gib, self.interface, tuple(self.pci_device_ids), tuple(self.names))


class InventorySection(_Section):
    kubeconfig: FilePath | None = None  # None: $KUBECONFIG, ~/.kube/config, then in-cluster credentials
    storage_capacity: dict[str, Size] = Field(default_factory=dict)  # persistent storage offered per class
    static: list[StaticNode] = Field(default_factory=list)  # fixed nodes instead of Kubernetes (demo, tests)
    gpu_models: list[GpuModel] = Field(default_factory=list)  # GPU models beyond the built-in table; these win

    def catalogue(self) -> Catalogue:
        """The built-in GPU model table plus the operator's entries (docs/operator/gpu-models.md)."""
        return DEFAULT_CATALOGUE.extended(m.entry() for m in self.gpu_models) if self.gpu_models else DEFAULT_CATALOGUE


class ApiSection(_Section):
    address: Address = "127.0.0.1:8443"  # the tenant API (HTTPS); "" disables it
    tls_cert: FilePath | None = None  # PEM certificate chain for HTTPS
    tls_key: FilePath | None = None  # its PEM private key
    insecure_http: bool = False  # plain HTTP: only for loopback demos and tests
    max_token_lifetime: int = Field(900, ge=60, le=86_400)  # seconds a tenant token may live
    max_manifest_bytes: Size = 1024 * 1024  # larger bodies are refused before they are read
    client_rate: float = Field(20.0, gt=0, le=10_000)  # requests/second per client address
    account_rate: float = Field(10.0, gt=0, le=10_000)  # authenticated requests/second per account
    max_follow_streams: int = Field(100, ge=1, le=10_000)  # websocket log/event follow streams at once
    max_follow_streams_per_account: int = Field(8, ge=1, le=1_000)  # follow streams per tenant account
    follow_max_seconds: float = Field(3600.0, ge=10, le=86_400)  # then the stream closes; clients reconnect

    @model_validator(mode="after")
    def _tls(self) -> ApiSection:
        if self.address and not self.insecure_http and (self.tls_cert is None or self.tls_key is None):
            raise ValueError(
                "the API serves HTTPS: set tls_cert and tls_key, or insecure_http: true for a loopback demo"
            )
        if self.insecure_http and self.address and not self.address.startswith(("127.", "localhost:", "[::1]")):
            raise ValueError("insecure_http is only allowed on a loopback address (127.x.x.x, localhost, [::1])")
        return self


class Orphans(_Section):
    interval_seconds: float = Field(300.0, ge=1, le=86_400)  # how often lease namespaces are checked
    grace_seconds: float = Field(600.0, ge=0, le=7 * 86_400)  # closed on chain this long before deletion
    dry_run: bool = False  # only report (log + gpu_provider_orphan_namespaces{state="would_delete"})


class DeploySection(_Section):
    namespace: str = Field("gpu-provider", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # manifests, leader Lease
    manifest_timeout_blocks: int = Field(50, ge=1, le=1_000_000)  # won lease without a manifest -> close
    ingress_domain: str = ""  # generated hostnames <id>.<domain>
    ingress_class: str = ""  # "" = the cluster's default IngressClass
    runtime_class: str = "nvidia"  # for GPU pods; "" = none
    global_service_type: Literal["NodePort", "LoadBalancer"] = "NodePort"  # for global non-HTTP exposes
    storage_classes: dict[str, str] = Field(default_factory=dict)  # SDL class -> StorageClass
    cluster_public_hostname: str = ""  # shown to tenants for NodePort endpoints
    blocked_hostnames: list[str] = Field(default_factory=list)  # exact names, or ".domain" for all under it
    dns_cidrs: list[str] = Field(default_factory=list)  # where cluster DNS answers when it is not a pod
    blocked_cidrs: list[str] = Field(default_factory=list)  # cluster-internal ranges beyond the private ones
    ingress_namespace: str = ""  # the ingress controller's namespace (allowed into lease namespaces)
    ingress_cidrs: list[str] = Field(default_factory=list)  # where the ingress controller connects from
    withdrawal_period_seconds: float = Field(3600.0, ge=0, le=30 * 86_400)  # per active lease; 0 = never
    close_failed_after_seconds: float = Field(0.0, ge=0, le=30 * 86_400)  # tenant-side failure -> close; 0 = never
    orphans: Orphans = Field(default_factory=Orphans)

    def settings(self) -> Any:
        from provider.deploy.builder import DeploySettings

        return DeploySettings(
            ingress_domain=self.ingress_domain,
            ingress_class=self.ingress_class,
            runtime_class=self.runtime_class,
            global_service_type=self.global_service_type,
            storage_classes=dict(self.storage_classes),
            cluster_public_hostname=self.cluster_public_hostname,
            dns_cidrs=tuple(self.dns_cidrs),
            blocked_cidrs=tuple(self.blocked_cidrs),
            ingress_namespace=self.ingress_namespace,
            ingress_cidrs=tuple(self.ingress_cidrs),
        )


class HaSection(_Section):
    """High availability: replicas elect a leader on a coordination.k8s.io Lease in deploy.namespace. Only
    the leader bids, deploys, withdraws and closes; every replica serves the API."""

    enabled: bool = False  # elect a leader among replicas (the chart turns it on)
    lease_name: str = Field("gpu-provider-leader", pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # the Lease
    identity: str = Field("", max_length=128)  # "" = $POD_NAME (or the host name) plus a random suffix
    lease_seconds: float = Field(10.0, ge=2, le=600)  # a standby takes over this long after the last renewal
    renew_seconds: float = Field(7.0, gt=0, le=600)  # the leader stops leading when it cannot renew this long
    retry_seconds: float = Field(2.0, gt=0, le=60)  # standby tries / leader renewals this often
    sync_seconds: float = Field(5.0, gt=0, le=600)  # replicas re-read stored manifests (and leases) this often

    @model_validator(mode="after")
    def _timings(self) -> HaSection:
        if not self.retry_seconds < self.renew_seconds < self.lease_seconds:
            raise ValueError(
                "ha timings must satisfy retry_seconds < renew_seconds < lease_seconds (a leader must give up "
                "before a standby may take over)"
            )
        return self


class Config(_Section):
    chain: ChainSection = Field(default_factory=ChainSection)
    provider: ProviderSection = Field(default_factory=ProviderSection)
    bidding: BiddingSection = Field(default_factory=BiddingSection)
    pricing: PricingSection = Field(default_factory=PricingSection)
    inventory: InventorySection = Field(default_factory=InventorySection)
    api: ApiSection = Field(default_factory=lambda: ApiSection(insecure_http=True))
    deploy: DeploySection = Field(default_factory=DeploySection)
    ha: HaSection = Field(default_factory=HaSection)

    @model_validator(mode="after")
    def _akash_host_uri(self) -> Config:
        if self.chain.kind == "akash" and not self.provider.host_uri.startswith("https://"):
            raise ValueError(
                f"provider.host_uri: {self.provider.host_uri!r} must be https:// on Akash (its chain refuses a "
                "provider whose host URI has another scheme); serve the API with TLS (api.tls_cert, api.tls_key)"
            )
        return self

    @model_validator(mode="after")
    def _ha_needs_a_cluster(self) -> Config:
        if self.ha.enabled and self.inventory.static:
            raise ValueError("ha.enabled needs a cluster (the leader lease lives there): drop inventory.static")
        return self

    def effective(self) -> dict[str, Any]:
        """The whole configuration as plain data (what --check-config prints)."""
        return self.model_dump()  # money and paths serialize to their text (PlainSerializer)


class EnvOverrides(BaseSettings):
    """The environment variables the chart and operators set; each wins over the file."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True)
    chain_url: str | None = Field(None, validation_alias=AliasChoices("GPU_PROVIDER_CHAIN_URL"))
    keyring: str | None = Field(None, validation_alias=AliasChoices("GPU_PROVIDER_KEYRING"))
    kubeconfig: str | None = Field(None, validation_alias=AliasChoices("KUBECONFIG"))
    node_name: str | None = Field(None, validation_alias=AliasChoices("NODE_NAME"))


def _env() -> EnvOverrides:
    return EnvOverrides()


def node_name_from_env() -> str:
    """The node an agent runs on: the DaemonSet sets NODE_NAME from spec.nodeName."""
    return _env().node_name or ""


def keyring_path_from_env() -> Path:
    return Path(_env().keyring or str(DEFAULT_KEYRING)).expanduser()


def kubeconfig_from_env() -> str | None:
    """Like kubectl: $KUBECONFIG (its first file), else ~/.kube/config when it exists, else None (in-cluster)."""
    named = _env().kubeconfig
    if named:
        return named.split(":")[0]
    default = Path.home() / ".kube" / "config"
    return str(default) if default.is_file() else None


def load(path: Path | None) -> Config:
    """Read the YAML config file (None: defaults only) and the environment overrides."""
    raw: Any = {}
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{path}: expected a mapping of sections (chain, provider, bidding, pricing, inventory, api, deploy, ha)"
            )
    try:
        config = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_explain(e, str(path) if path else "config")) from None
    env = _env()
    chain = config.chain.model_copy(
        update={
            **({"url": env.chain_url} if env.chain_url else {}),
            **({"keyring": Path(env.keyring).expanduser()} if env.keyring else {}),
        }
    )
    inventory = config.inventory
    if inventory.kubeconfig is None and not inventory.static:
        found = kubeconfig_from_env()
        if found:
            inventory = inventory.model_copy(update={"kubeconfig": Path(found)})
    return config.model_copy(update={"chain": chain, "inventory": inventory})


_HINTS = {
    "list_type": "is a {got}, not a list; write a YAML list, e.g. [a, b]",
    "bool_type": "{input!r} is a {got}, not a boolean; write true or false (no quotes)",
    "int_type": "{input!r} is a {got}, not a whole number; write e.g. 55 (no quotes)",
    "float_type": "{input!r} is a {got}, not a number; write e.g. 10 (no quotes)",
    "string_type": "{input!r} is a {got}, not a string; write text",
    "dict_type": "is a {got}, not a mapping; write key: value pairs",
    "model_type": "is a {got}, not a mapping; write key: value pairs",
    "extra_forbidden": "unknown key; known keys here: {known}",
    "literal_error": "{input!r} is not allowed; {msg}",
    "missing": "is required",
}


def _explain(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration ({error.error_count()} problem(s)):"]
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-")) or "(top level)"
        kind = item["type"]
        value = item.get("input")
        hint = _HINTS.get(kind)
        if hint is None:
            text = item["msg"].removeprefix("Value error, ")
        else:
            text = hint.format(
                input=value,
                got=_yaml_type(value),
                msg=item["msg"].lower(),
                known=", ".join(_known_keys(item["loc"][:-1])) or "none",
            )
        lines.append(f"  {loc}: {text}")
    return "\n".join(lines)


def _yaml_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "mapping"}.get(
        type(value), type(value).__name__
    )


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Config
    for part in loc:
        field = getattr(model, "model_fields", {}).get(str(part))
        if field is None:
            return []
        model = field.annotation
        if not isinstance(model, type) or not issubclass(model, BaseModel):
            return []
    return sorted(model.model_fields)
