"""The Kubernetes adapter: the only module that uses the kubernetes client library.

It speaks domain types (NodeView, PodView) to the rest of the daemon and translates ApiException into
KubeError. Every call blocks; services run them off the event loop.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity
from urllib3.exceptions import ProtocolError

from provider.deploy import naming
from provider.domain import GPU_RESOURCE, NodeGpuFacts, NodeView, PodView, Resources
from provider.errors import KubeError
from provider.inventory.models import DEFAULT_CATALOGUE, Catalogue

LEASE_LABEL = "gpu-provider.io/lease"
AGENT_PREFIX = "gpu-provider.io/"
MIG_PREFIX = "nvidia.com/mig-"
REQUEST_TIMEOUT = 30


def _lines(raw: Any, chunk_size: int, partial_tail: bool) -> Iterator[bytes]:
    """The newline-separated lines of a streamed body, as they arrive; with ``partial_tail``, also what
    follows the last newline when the body ends."""
    pending = b""
    for chunk in raw.stream(chunk_size):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield line
    if partial_tail and pending:
        yield pending


class LineStream:
    """Lines of a streamed response body, as they arrive; ``close()`` (from any thread) ends the iteration."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._closed = False

    def __iter__(self) -> Iterator[str]:
        try:
            for line in _lines(self._raw, 8192, partial_tail=True):
                yield line.decode("utf-8", "replace")
        except (OSError, ProtocolError, ValueError, AttributeError):  # closed under us, or the server went away
            return
        finally:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._raw.close()
                self._raw.release_conn()


def _q(value: Any) -> Decimal:
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError):
        return Decimal(0)


def resources_from(values: Mapping[str, Any] | None) -> tuple[Resources, dict[str, int]]:
    values = values or {}
    res = Resources(
        cpu_millis=int(_q(values.get("cpu", 0)) * 1000),
        memory_bytes=int(_q(values.get("memory", 0))),
        ephemeral_bytes=int(_q(values.get("ephemeral-storage", 0))),
        gpus=int(_q(values.get(GPU_RESOURCE, 0))),
    )
    mig = {k: int(_q(v)) for k, v in values.items() if k.startswith(MIG_PREFIX)}
    return res, mig


def gpu_facts(labels: Mapping[str, str], catalogue: Catalogue = DEFAULT_CATALOGUE) -> NodeGpuFacts:
    """Our agent's labels win; otherwise derive from GPU Feature Discovery's."""
    product = labels.get("nvidia.com/gpu.product", "")
    model = labels.get(AGENT_PREFIX + "gpu.model", "")
    ram = labels.get(AGENT_PREFIX + "gpu.ram", "")
    interface = labels.get(AGENT_PREFIX + "gpu.interface", "")
    if product and not model:
        memory_mib = _int(labels.get("nvidia.com/gpu.memory", "0"))
        ident = catalogue.from_product_label(product, memory_mib)
        model, ram, interface = ident.model, ram or ident.ram_class, interface or ident.interface
    healthy = labels.get(AGENT_PREFIX + "gpu.healthy")
    return NodeGpuFacts(
        model=model,
        ram_class=ram,
        interface=interface,
        product=product,
        physical_gpus=_int(labels.get(AGENT_PREFIX + "gpu.count") or labels.get("nvidia.com/gpu.count", "0")),
        replicas=max(1, _int(labels.get("nvidia.com/gpu.replicas", "1"))),
        sharing=labels.get("nvidia.com/gpu.sharing-strategy", "none"),
        healthy_gpus=_int(healthy) if healthy is not None else None,
    )


def _lease_label(labels: Mapping[str, str]) -> str:
    """The lease id a pod belongs to: from the deployer's lease labels, else the older single label."""
    lease = naming.lease_of(labels)
    return str(lease) if lease is not None else labels.get(LEASE_LABEL, "")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


class Kube:
    """A thin, typed face of the Kubernetes API for the daemon."""

    def __init__(self, kubeconfig: str | None = None, catalogue: Catalogue = DEFAULT_CATALOGUE) -> None:
        try:
            if kubeconfig:
                api = config.new_client_from_config(config_file=kubeconfig)
            else:
                config.load_incluster_config()
                api = client.ApiClient()
        except (config.ConfigException, OSError) as e:
            where = kubeconfig or "the in-cluster service account"
            raise KubeError(f"cannot load Kubernetes credentials from {where}: {e}") from e
        self.api = api
        self.core = client.CoreV1Api(api)
        self.catalogue = catalogue

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as e:
            raise KubeError(f"{what} failed: {e.status} {e.reason}: {(e.body or '')[:300]}", e.status) from e
        except OSError as e:  # urllib3 connection errors derive from OSError
            raise KubeError(f"{what} failed: cannot reach the Kubernetes API ({e})") from e

    def list_nodes(self) -> list[NodeView]:
        items = self._call("listing nodes", self.core.list_node).items
        return [self._node(n) for n in items]

    def _node(self, n: Any) -> NodeView:
        alloc, mig = resources_from(n.status.allocatable if n.status else None)
        labels = n.metadata.labels or {}
        conditions = (n.status.conditions if n.status else None) or []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        return NodeView(
            name=n.metadata.name,
            allocatable=alloc,
            gpu=gpu_facts(labels, self.catalogue),
            ready=ready,
            schedulable=not bool(n.spec and n.spec.unschedulable),
            mig=mig,
        )

    def list_pods(self) -> list[PodView]:
        items = self._call(
            "listing pods",
            self.core.list_pod_for_all_namespaces,
            field_selector="status.phase!=Succeeded,status.phase!=Failed",
        ).items
        out: list[PodView] = []
        for p in items:
            total, mig = Resources(), dict[str, int]()
            for c in p.spec.containers or []:
                req, m = resources_from(c.resources.requests if c.resources else None)
                if c.resources and c.resources.limits and not c.resources.requests:
                    req, m = resources_from(c.resources.limits)  # requests default to limits
                total = total + req
                for k, v in m.items():
                    mig[k] = mig.get(k, 0) + v
            init_max = Resources()  # init containers run one at a time: the largest one counts
            for c in p.spec.init_containers or []:
                req, _ = resources_from(c.resources.requests if c.resources else None)
                init_max = init_max.maximum(req)
            total = total.maximum(init_max)
            out.append(
                PodView(
                    namespace=p.metadata.namespace,
                    name=p.metadata.name,
                    node=p.spec.node_name or "",
                    requests=total,
                    mig=mig,
                    lease=_lease_label(p.metadata.labels or {}),
                )
            )
        return out

    def node_metadata(self, name: str) -> tuple[dict[str, str], dict[str, str]]:
        n = self._call(f"reading node {name}", self.core.read_node, name)
        return dict(n.metadata.labels or {}), dict(n.metadata.annotations or {})

    def patch_node_metadata(
        self, name: str, labels: Mapping[str, str | None], annotations: Mapping[str, str | None]
    ) -> None:
        body = {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}}
        self._call(f"updating node {name}", self.core.patch_node, name, body)

    def dump(self, obj: Any) -> str:
        return json.dumps(self.api.sanitize_for_serialization(obj))

    # -- the deployer's REST face: plain paths and JSON, server-side apply ---------------------------
    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        what: str = "",
        timeout: float = REQUEST_TIMEOUT,
    ) -> Any:
        """One API request by path; JSON back (None for an empty body). A 4xx/5xx is a KubeError with
        its status; 404 is KubeError(status=404) so callers can treat "gone" as done."""
        raw = self.request_raw(method, path, body, query, content_type, what, timeout, accept="application/json")
        return json.loads(raw) if raw else None

    def request_raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
        what: str = "",
        timeout: float = REQUEST_TIMEOUT,
        accept: str = "*/*",
    ) -> bytes:
        what = what or f"{method} {path}"
        headers = {"Content-Type": content_type, "Accept": accept}
        resp = self._send(method, path, list(query or []), headers, body, timeout, what)
        try:
            payload: bytes = resp.read() or b""
        except OSError as e:
            raise KubeError(f"{what} failed: cannot reach the Kubernetes API ({e})") from e
        if resp.status >= 400:
            message = payload[:400].decode("utf-8", "replace")
            with contextlib.suppress(ValueError, AttributeError):
                message = str(json.loads(payload).get("message", message))
            raise KubeError(f"{what} failed: {resp.status}: {message}", resp.status)
        return payload

    def _send(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: Any,
        timeout: Any,
        what: str,
    ) -> Any:
        """One request through the client's configuration (auth, TLS); its response, body not read yet.
        Not reaching the API server, or the client's own refusal, is a KubeError naming ``what``."""
        try:
            m, url, sent_headers, data, _ = self.api.param_serialize(
                method=method,
                resource_path=path,
                query_params=query,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            return self.api.call_api(m, url, header_params=sent_headers, body=data, _request_timeout=timeout)
        except ApiException as e:
            raise KubeError(f"{what} failed: {e.status} {e.reason}: {(e.body or '')[:300]}", e.status) from e
        except OSError as e:
            raise KubeError(f"{what} failed: cannot reach the Kubernetes API ({e})") from e

    def _open(
        self, path: str, query: list[tuple[str, str]], what: str, read_timeout: float | None, accept: str = "*/*"
    ) -> Any:
        """A GET whose body is streamed: the raw response, its status checked (the caller releases it)."""
        resp = self._send("GET", path, query, {"Accept": accept}, None, (10, read_timeout), what)
        if resp.status >= 400:
            body = resp.response.read(400)
            resp.response.release_conn()
            raise KubeError(f"{what} failed: {resp.status}: {body!r}", resp.status)
        return resp.response

    def watch(self, path: str, query: list[tuple[str, str]], timeout_seconds: int = 60) -> Iterator[dict[str, Any]]:
        """A watch on a collection: yields each event ({"type", "object"}) as the server sends it, until the
        server ends the watch (after ``timeout_seconds``). The caller passes ``resourceVersion``."""
        what = f"watching {path}"
        params = [*query, ("watch", "true"), ("timeoutSeconds", str(timeout_seconds)), ("allowWatchBookmarks", "true")]
        raw = self._open(path, params, what, timeout_seconds + 30, accept="application/json")
        try:
            for line in _lines(raw, 65536, partial_tail=False):
                if line.strip():
                    yield json.loads(line)
        except (OSError, ProtocolError) as e:
            raise KubeError(f"{what} broke off: {e}") from e
        finally:
            raw.release_conn()

    def open_stream(self, path: str, query: list[tuple[str, str]], what: str = "") -> LineStream:
        """A long GET whose body is read line by line as it arrives (a followed log); close() ends it
        from another thread."""
        return LineStream(self._open(path, query, what or f"streaming {path}", None))

    def apply(self, path: str, obj: Mapping[str, Any], field_manager: str, dry_run: bool = False) -> Any:
        """Server-side apply of one object at ``path`` (its own URL), forcing our field manager's ownership."""
        query = [("fieldManager", field_manager), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        kind = obj.get("kind", "object")
        name = obj.get("metadata", {}).get("name", "")
        # JSON is YAML, but the API server's YAML decoder refuses JSON's surrogate-pair escapes (\\ud83d...)
        # for characters beyond the BMP: send them as UTF-8 instead.
        try:
            body = json.dumps(obj, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise KubeError(f"applying {kind} {name} failed: it holds text that is not valid Unicode", 422) from None
        return self.request("PATCH", path, body, query, "application/apply-patch+yaml", what=f"applying {kind} {name}")
