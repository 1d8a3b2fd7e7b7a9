"""The cluster side of the deployer: stores accepted manifests durably (a Manifest object plus a Secret),
applies a lease's objects with server-side apply, tears a lease down, and reads back what runs.

Every method blocks (the kubernetes client); the lease service calls them off the event loop.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from provider.chain.types import LeaseId
from provider.deploy import naming
from provider.deploy.builder import DeploySettings, LeaseRef, base_labels, build_objects
from provider.deploy.watch import WORKLOAD_WARNINGS, WatchCache
from provider.domain import NodeGpuFacts
from provider.errors import KubeError
from provider.inventory.models import DEFAULT_CATALOGUE, Catalogue
from provider.kube import Kube, LineStream
from sdl import spec as s
from sdl.manifest import manifest_from_json

log = logging.getLogger("provider.deploy")

GROUP = "gpu-provider.io"
CRD_NAME = "manifests." + GROUP
_CORE = {"Namespace": "namespaces", "Secret": "secrets", "Service": "services", "ConfigMap": "configmaps"}
_PLURALS = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "Ingress": "ingresses",
    "NetworkPolicy": "networkpolicies",
    "Manifest": "manifests",
    "CustomResourceDefinition": "customresourcedefinitions",
}


def path_of(obj: dict[str, Any]) -> str:
    """The URL of one object, from its apiVersion, kind, namespace and name."""
    api, kind, meta = obj["apiVersion"], obj["kind"], obj["metadata"]
    name, ns = meta["name"], meta.get("namespace")
    if kind == "Namespace":
        return f"/api/v1/namespaces/{name}"
    if kind in _CORE:
        return f"/api/v1/namespaces/{ns}/{_CORE[kind]}/{name}"
    plural = _PLURALS[kind]
    if ns is None:
        return f"/apis/{api}/{plural}/{name}"
    return f"/apis/{api}/namespaces/{ns}/{plural}/{name}"


def crd() -> dict[str, Any]:
    """The Manifest CRD (``gpu-provider setup`` and the chart install it; the daemon only checks it)."""
    lease_props = {p: {"type": "integer" if p in ("dseq", "gseq", "oseq") else "string"} for p in naming.LEASE_PARTS}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {naming.MANAGED_BY[0]: naming.MANAGED_BY[1]}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": "manifests", "singular": "manifest", "kind": "Manifest", "listKind": "ManifestList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "additionalPrinterColumns": [
                        {"name": "Owner", "type": "string", "jsonPath": ".spec.lease.owner"},
                        {"name": "DSeq", "type": "integer", "jsonPath": ".spec.lease.dseq"},
                        {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["lease", "version", "group", "secretName"],
                                    "properties": {
                                        "lease": {
                                            "type": "object",
                                            "required": list(naming.LEASE_PARTS),
                                            "properties": lease_props,
                                        },
                                        "version": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                                        "group": {
                                            "type": "object",
                                            "description": "the manifest group, env values and registry passwords removed",
                                            "x-kubernetes-preserve-unknown-fields": True,
                                        },
                                        "secretName": {"type": "string"},
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


@dataclass(frozen=True, slots=True)
class StoredManifest:
    lease: LeaseId
    version: str
    group: s.ManifestGroup
    group_json: dict[str, Any]  # complete (with secrets): what the lease deploys
    genesis: str = ""  # the chain identity it was stored under (its label)
    pod_genesis: str = ""  # the identity its pods were first built with, when that was an older one


def public_group(group_json: dict[str, Any]) -> dict[str, Any]:
    """The group without env values and registry passwords (what the Manifest object may show)."""
    out: dict[str, Any] = json.loads(json.dumps(group_json))
    for svc in out.get("services", []):
        if svc.get("env"):
            svc["env"] = [kv.partition("=")[0] + "=<secret>" for kv in svc["env"]]
        if svc.get("credentials"):
            svc["credentials"] = {**svc["credentials"], "password": "<secret>"}
    return out


@dataclass
class ServiceState:
    name: str
    kind: str = "Deployment"
    replicas: int = 0
    total: int = 0
    available: int = 0
    ready: int = 0
    updated: int = 0
    observed_generation: int = 0
    ports: list[dict[str, Any]] = field(default_factory=list)  # forwarded (NodePort) ports


@dataclass
class LeaseObservation:
    """What the cluster shows of one lease: workloads, tenant-visible problems, and whether it exists."""

    namespace: str
    exists: bool
    services: dict[str, ServiceState] = field(default_factory=dict)
    problems: list[dict[str, str]] = field(default_factory=list)  # {service, reason, message, side}


TENANT_REASONS = {
    "ErrImagePull": "image",
    "ImagePullBackOff": "image",
    "InvalidImageName": "image",
    "CrashLoopBackOff": "crash",
    "CreateContainerConfigError": "config",
    "CreateContainerError": "config",
    "RunContainerError": "crash",
    "OOMKilled": "oom",
    "Error": "crash",
}


class Deployer:
    def __init__(
        self,
        kube: Kube,
        settings: DeploySettings,
        provider_namespace: str,
        catalogue: Catalogue = DEFAULT_CATALOGUE,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.namespace = provider_namespace
        self.catalogue = catalogue
        self.cache: WatchCache | None = None  # set by the daemon: observe() then reads it, not the API

    # -- setup ----------------------------------------------------------------------------------
    def install(self) -> None:
        """Install the Manifest CRD and the provider's namespace (what ``gpu-provider setup`` does)."""
        self.kube.apply(path_of(crd()), crd(), naming.FIELD_MANAGER)
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        self.kube.apply(path_of(ns), ns, naming.FIELD_MANAGER)

    def check_installed(self) -> str | None:
        """None when the CRD and namespace exist; else what is missing and the command that fixes it."""
        missing = []
        for what, path in (
            (
                f"the CustomResourceDefinition {CRD_NAME}",
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}",
            ),
            (f"the namespace {self.namespace}", f"/api/v1/namespaces/{self.namespace}"),
        ):
            try:
                self.kube.request("GET", path, what=f"reading {what}")
            except KubeError as e:
                if e.status != 404:
                    raise
                missing.append(what)
        if not missing:
            return None
        return f"{' and '.join(missing)} missing: run `gpu-provider setup` (or install the Helm chart) first"

    # -- durable manifests ----------------------------------------------------------------------
    def _manifest_path(self, lease: LeaseId) -> str:
        return f"/apis/{GROUP}/v1/namespaces/{self.namespace}/manifests/{naming.manifest_name(lease)}"

    def store(self, ref: LeaseRef, version: str, group_json: dict[str, Any]) -> None:
        name = naming.manifest_name(ref.id)
        labels = base_labels(ref)
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"manifest-{name}", "namespace": self.namespace, "labels": labels},
            "type": "Opaque",
            "data": {"group.json": base64.b64encode(json.dumps(group_json, sort_keys=True).encode()).decode()},
        }
        o = ref.id.order
        obj = {
            "apiVersion": f"{GROUP}/v1",
            "kind": "Manifest",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": labels,
                **({"annotations": {naming.POD_GENESIS_ANNOTATION: ref.pod_genesis}} if ref.pod_genesis else {}),
            },
            "spec": {
                "lease": {
                    "owner": o.owner,
                    "dseq": o.dseq,
                    "gseq": o.gseq,
                    "oseq": o.oseq,
                    "provider": ref.id.provider,
                },
                "version": version,
                "group": public_group(group_json),
                "secretName": f"manifest-{name}",
            },
        }
        self.kube.apply(path_of(secret), secret, naming.FIELD_MANAGER)
        self.kube.apply(path_of(obj), obj, naming.FIELD_MANAGER)

    def load(self, lease: LeaseId) -> StoredManifest | None:
        try:
            obj = self.kube.request("GET", self._manifest_path(lease), what="reading a stored manifest")
        except KubeError as e:
            if e.status == 404:
                return None
            raise
        return self._stored(obj)

    def _stored(self, obj: dict[str, Any]) -> StoredManifest | None:
        spec = obj.get("spec", {})
        meta = obj.get("metadata", {})
        labels = meta.get("labels") or {}
        lease = naming.lease_of(labels)
        if lease is None:
            return None
        secret = self.kube.request(
            "GET",
            f"/api/v1/namespaces/{self.namespace}/secrets/{spec.get('secretName', '')}",
            what="reading a manifest secret",
        )
        group_json = json.loads(base64.b64decode(secret["data"]["group.json"]))
        group = manifest_from_json([group_json])[0]
        return StoredManifest(
            lease,
            str(spec.get("version", "")),
            group,
            group_json,
            str(labels.get(naming.GENESIS_LABEL, "")),
            str((meta.get("annotations") or {}).get(naming.POD_GENESIS_ANNOTATION, "")),
        )

    def stored_versions(self) -> dict[LeaseId, str]:
        """The version of every stored manifest, from one list (no secrets read): what a replica compares
        with its own records to notice a manifest another replica accepted."""
        items = self.kube.request("GET", f"/apis/{GROUP}/v1/namespaces/{self.namespace}/manifests")["items"]
        out: dict[LeaseId, str] = {}
        for obj in items:
            lease = naming.lease_of(obj.get("metadata", {}).get("labels", {}))
            if lease is not None:
                out[lease] = str(obj.get("spec", {}).get("version", ""))
        return out

    def stored(self) -> list[StoredManifest]:
        """Every manifest this provider accepted (a restart rebuilds its leases from them)."""
        items = self.kube.request("GET", f"/apis/{GROUP}/v1/namespaces/{self.namespace}/manifests")["items"]
        out = []
        for obj in items:
            try:
                found = self._stored(obj)
            except (KubeError, ValueError, KeyError) as e:
                log.error("stored manifest unreadable name=%s error=%r", obj.get("metadata", {}).get("name"), str(e))
                continue
            if found is not None:
                out.append(found)
        return out

    def forget(self, lease: LeaseId) -> None:
        name = naming.manifest_name(lease)
        for path in (self._manifest_path(lease), f"/api/v1/namespaces/{self.namespace}/secrets/manifest-{name}"):
            try:
                self.kube.request("DELETE", path, what=f"deleting {path}")
            except KubeError as e:
                if e.status != 404:
                    raise

    # -- apply and teardown ----------------------------------------------------------------------
    def objects(self, ref: LeaseRef, group: s.ManifestGroup, observed: Iterable[NodeGpuFacts]) -> list[dict[str, Any]]:
        return build_objects(ref, group, self.settings, observed, self.catalogue)

    def apply(self, objs: list[dict[str, Any]], dry_run: bool = False) -> None:
        for obj in objs:
            self.kube.apply(path_of(obj), obj, naming.FIELD_MANAGER, dry_run=dry_run)

    def observed_gpus(self) -> list[NodeGpuFacts]:
        return [n.gpu for n in self.kube.list_nodes() if n.gpu.model]

    def teardown(self, lease: LeaseId) -> None:
        """Delete the lease's namespace (everything in it goes with it) and its stored manifest."""
        try:
            self.kube.request(
                "DELETE", f"/api/v1/namespaces/{naming.namespace_for(lease)}", what="deleting a lease namespace"
            )
        except KubeError as e:
            if e.status != 404:
                raise
        self.forget(lease)

    def host_owners(self) -> dict[str, str]:
        """Every hostname our Ingresses serve, and the owner (tenant address) of the lease it belongs to."""
        items = self.kube.request(
            "GET",
            "/apis/networking.k8s.io/v1/ingresses",
            query=[("labelSelector", f"{naming.MANAGED_BY[0]}={naming.MANAGED_BY[1]}")],
            what="listing ingresses",
        )["items"]
        out: dict[str, str] = {}
        for ing in items:
            lease = naming.lease_of(ing["metadata"].get("labels", {}))
            if lease is None:
                continue
            for rule in ing["spec"].get("rules", []):
                if rule.get("host"):
                    out[rule["host"].lower()] = lease.order.owner
        return out

    def lease_namespaces(self) -> list[tuple[str, dict[str, str]]]:
        """Every namespace this software created for a lease (any provider key, any chain), with its labels;
        namespaces already being deleted are left out."""
        items = self.kube.request(
            "GET",
            "/api/v1/namespaces",
            query=[("labelSelector", f"{naming.MANAGED_BY[0]}={naming.MANAGED_BY[1]}")],
            what="listing lease namespaces",
        )["items"]
        return [
            (ns["metadata"]["name"], dict(ns["metadata"].get("labels") or {}))
            for ns in items
            if naming.PREFIX + "lease.owner" in (ns["metadata"].get("labels") or {})
            and not ns["metadata"].get("deletionTimestamp")
        ]

    def namespace_exists(self, lease: LeaseId) -> bool:
        try:
            self.kube.request("GET", f"/api/v1/namespaces/{naming.namespace_for(lease)}")
        except KubeError as e:
            if e.status == 404:
                return False
            raise
        return True

    # -- reading back ----------------------------------------------------------------------------
    def observe(self, lease: LeaseId, group: s.ManifestGroup | None) -> LeaseObservation:
        """What runs for a lease: from the watch cache when it is synced (no API call), else the API."""
        ns = naming.namespace_for(lease)
        cache = self.cache
        if cache is not None and cache.synced:
            return observation(
                ns,
                bool(cache.get("namespaces", ns)),
                [("Deployment", w) for w in cache.get("deployments", ns)]
                + [("StatefulSet", w) for w in cache.get("statefulsets", ns)],
                cache.get("services", ns),
                cache.get("pods", ns),
                self.settings.cluster_public_hostname,
                cache.get("events", ns),
            )
        if not self.namespace_exists(lease):
            return LeaseObservation(ns, False)
        workloads = [
            (kind, w)
            for kind, plural in (("Deployment", "deployments"), ("StatefulSet", "statefulsets"))
            for w in self.kube.request("GET", f"/apis/apps/v1/namespaces/{ns}/{plural}")["items"]
        ]
        return observation(
            ns,
            True,
            workloads,
            self.kube.request("GET", f"/api/v1/namespaces/{ns}/services")["items"],
            self.kube.request("GET", f"/api/v1/namespaces/{ns}/pods")["items"],
            self.settings.cluster_public_hostname,
            [
                e
                for e in self.kube.request(
                    "GET", f"/api/v1/namespaces/{ns}/events", query=[("fieldSelector", "type=Warning")]
                )["items"]
                if e.get("reason") in WORKLOAD_WARNINGS
            ],
        )

    def events(self, lease: LeaseId, limit: int = 200) -> list[dict[str, Any]]:
        ns = naming.namespace_for(lease)
        items = self.kube.request("GET", f"/api/v1/namespaces/{ns}/events")["items"]
        out = [_event(e) for e in items]
        out.sort(key=lambda e: str(e["time"]))
        return out[-limit:]

    def follow_logs(
        self, lease: LeaseId, services: frozenset[str] | None, tail: int
    ) -> list[tuple[str, str, LineStream]]:
        """(service, line name, stream) for each running container of the lease: its last ``tail`` lines
        (all when negative), then what it prints until it ends or the stream is closed."""
        ns = naming.namespace_for(lease)
        out = []
        try:
            for pod in self.kube.request("GET", f"/api/v1/namespaces/{ns}/pods")["items"]:
                svc = pod["metadata"].get("labels", {}).get(naming.SERVICE_LABEL, "")
                if services is not None and svc not in services:
                    continue
                name = pod["metadata"]["name"]
                query = [("container", svc), ("follow", "true")] + ([("tailLines", str(tail))] if tail >= 0 else [])
                try:
                    stream = self.kube.open_stream(
                        f"/api/v1/namespaces/{ns}/pods/{name}/log", query, what=f"following logs of {name}"
                    )
                except KubeError as e:
                    if e.status in (400, 404):  # not started yet, or gone
                        continue
                    raise
                out.append((svc, f"{svc}-{name.rsplit('-', 1)[-1]}", stream))
        except BaseException:
            for _, _, s in out:
                s.close()
            raise
        return out

    def follow_events(
        self, lease: LeaseId, tail: int, emit: Callable[[dict[str, Any]], None], stop: threading.Event
    ) -> None:
        """Blocking: emit the lease's last ``tail`` events, then each new or updated one (a watch), until
        ``stop`` is set. Watches are short, so a stop is noticed within seconds."""
        ns = naming.namespace_for(lease)
        listing = self.kube.request("GET", f"/api/v1/namespaces/{ns}/events", what="listing events")
        past = sorted((_event(x) for x in listing["items"]), key=lambda e: str(e["time"]))
        for e in past if tail < 0 else past[len(past) - tail :]:
            emit(e)
        version = str(listing.get("metadata", {}).get("resourceVersion", ""))
        while not stop.is_set():
            for change in self.kube.watch(f"/api/v1/namespaces/{ns}/events", [("resourceVersion", version)], 5):
                obj = change.get("object") or {}
                if change.get("type") == "ERROR":
                    return
                version = str(obj.get("metadata", {}).get("resourceVersion", version))
                if change.get("type") in ("ADDED", "MODIFIED"):
                    emit(_event(obj))
                if stop.is_set():
                    return

    def logs(self, lease: LeaseId, services: frozenset[str] | None, tail: int) -> list[dict[str, str]]:
        ns = naming.namespace_for(lease)
        out = []
        for pod in self.kube.request("GET", f"/api/v1/namespaces/{ns}/pods")["items"]:
            svc = pod["metadata"].get("labels", {}).get(naming.SERVICE_LABEL, "")
            if services is not None and svc not in services:
                continue
            name = pod["metadata"]["name"]
            query = [("container", svc)] + ([("tailLines", str(tail))] if tail >= 0 else [])
            try:
                text = self.kube.request_raw(
                    "GET", f"/api/v1/namespaces/{ns}/pods/{name}/log", query=query, what=f"reading logs of {name}"
                ).decode("utf-8", "replace")
            except KubeError as e:
                if e.status in (400, 404):  # not started yet, or gone
                    continue
                raise
            out += [
                {"name": f"{svc}-{name.rsplit('-', 1)[-1]}", "service": svc, "message": line}
                for line in text.splitlines()
            ]
        return out


def _event(e: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes event as the tenant sees it."""
    return {
        "type": e.get("type", ""),
        "reason": e.get("reason", ""),
        "note": e.get("message", ""),
        "object": {
            "kind": e.get("involvedObject", {}).get("kind", ""),
            "name": e.get("involvedObject", {}).get("name", ""),
        },
        "time": e.get("lastTimestamp") or e.get("eventTime") or "",
    }


def problems(pods: list[dict[str, Any]]) -> list[dict[str, str]]:
    """What a tenant can act on (or must know), from its pods: unschedulable, image, crash, config, OOM."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for pod in pods:
        svc = pod["metadata"].get("labels", {}).get(naming.SERVICE_LABEL, "")
        status = pod.get("status", {})
        for cond in status.get("conditions", []):
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                out[(svc, "unschedulable")] = {
                    "service": svc,
                    "reason": "unschedulable",
                    "message": str(cond.get("message", ""))[:500],
                    "side": "provider",
                }
        for cs in status.get("containerStatuses", []):
            state, last = cs.get("state", {}), cs.get("lastState", {})
            waiting = state.get("waiting") or {}
            term = state.get("terminated") or last.get("terminated") or {}
            reason = waiting.get("reason") or ""
            message = waiting.get("message") or ""
            if reason in TENANT_REASONS:
                out[(svc, reason)] = {"service": svc, "reason": reason, "message": message[:500], "side": "tenant"}
            if term.get("reason") == "OOMKilled":
                out[(svc, "OOMKilled")] = {
                    "service": svc,
                    "reason": "OOMKilled",
                    "message": f"the container used more than its memory limit (exit {term.get('exitCode')})",
                    "side": "tenant",
                }
    return sorted(out.values(), key=lambda p: (p["service"], p["reason"]))


def observation(
    ns: str,
    exists: bool,
    workloads: list[tuple[str, dict[str, Any]]],
    services: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    public_hostname: str,
    warnings: list[dict[str, Any]] | None = None,
) -> LeaseObservation:
    """A lease's observation from its namespace's objects (API or cache, full or slimmed). Controller
    warnings (a pod the cluster would not create, a volume it could not provide) are shown while a
    service is short of replicas: then nothing else tells why."""
    seen = LeaseObservation(ns, exists)
    if not exists:
        return seen
    for kind, w in workloads:
        st = w.get("status", {})
        name = w["metadata"]["name"]
        replicas = int(w.get("spec", {}).get("replicas", 0))
        seen.services[name] = ServiceState(
            name=name,
            kind=kind,
            replicas=replicas,
            total=replicas,
            available=int(st.get("availableReplicas", 0)),
            ready=int(st.get("readyReplicas", 0)),
            updated=int(st.get("updatedReplicas", 0)),
            observed_generation=int(st.get("observedGeneration", 0)),
        )
    for svc in services:
        owner = svc["metadata"].get("labels", {}).get(naming.SERVICE_LABEL, "")
        if owner in seen.services and svc["spec"].get("type") in ("NodePort", "LoadBalancer"):
            for p in svc["spec"].get("ports", []):
                seen.services[owner].ports.append(
                    {
                        "host": public_hostname,
                        "port": p.get("targetPort"),
                        "externalPort": p.get("nodePort", p.get("port")),
                        "proto": p.get("protocol", "TCP"),
                        "name": owner,
                    }
                )
    seen.problems = problems(pods)
    short = {name for name, st in seen.services.items() if st.available < st.total}
    if short:
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for e in sorted(warnings or [], key=lambda e: str(e.get("lastTimestamp") or "")):
            involved = e.get("involvedObject") or {}
            name, kind = str(involved.get("name", "")), involved.get("kind", "")
            owner = name if kind == "StatefulSet" else name.rsplit("-", 1)[0] if kind == "ReplicaSet" else ""
            if owner and owner not in short:
                continue
            latest[(owner, str(e.get("reason", "")))] = {
                "service": owner,
                "reason": str(e.get("reason", "")),
                "message": str(e.get("message", ""))[:500],
                "side": "provider",
            }
        seen.problems = sorted([*seen.problems, *latest.values()], key=lambda p: (p["service"], p["reason"]))
    return seen
