"""A watch-fed cache of what the deployer created: lease namespaces, workloads, services and pods.

One list then one long watch per resource, across all namespaces, filtered by our managed-by label (so a
busy cluster's other pods cost nothing). Each object is slimmed to the fields the monitor reads. The
monitor and the status API read lease state from here, so a status request or a monitor pass makes no
API call; a changed namespace is reported through ``on_change`` (called on the watch's thread).

A watch that ends is resumed from its last resourceVersion; one that the server expired (410 Gone) or
that failed is listed again. ``synced`` is false until every resource has been listed and while one of
them is being listed again after a failure: readers then fall back to asking the API server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from provider.deploy import naming
from provider.errors import KubeError
from provider.kube import Kube

log = logging.getLogger("provider.deploy.watch")

RESOURCES = {
    "namespaces": "/api/v1/namespaces",
    "deployments": "/apis/apps/v1/deployments",
    "statefulsets": "/apis/apps/v1/statefulsets",
    "services": "/api/v1/services",
    "pods": "/api/v1/pods",
    "events": "/api/v1/events",  # warnings only, and only those in lease namespaces are kept
}
# controller warnings that leave a workload without pods, which the pods themselves cannot show
WORKLOAD_WARNINGS = frozenset(
    {"FailedCreate", "ProvisioningFailed", "FailedBinding", "FailedMount", "FailedAttachVolume"}
)
MAX_EVENTS_PER_NAMESPACE = 50
Obj = dict[str, Any]


def slim(resource: str, obj: Obj) -> Obj:
    """Only what the monitor reads (keeps the daemon's memory flat with thousands of leases)."""
    meta = obj.get("metadata", {})
    out: Obj = {
        "metadata": {
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "labels": meta.get("labels") or {},
            **({"deletionTimestamp": meta["deletionTimestamp"]} if meta.get("deletionTimestamp") else {}),
        }
    }
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if resource in ("deployments", "statefulsets"):
        out["spec"] = {"replicas": spec.get("replicas", 0)}
        out["status"] = {
            k: status[k]
            for k in ("availableReplicas", "readyReplicas", "updatedReplicas", "observedGeneration")
            if k in status
        }
    elif resource == "services":
        out["spec"] = {"type": spec.get("type", ""), "ports": spec.get("ports", [])}
    elif resource == "events":
        involved = obj.get("involvedObject") or {}
        out.update(
            type=obj.get("type", ""),
            reason=obj.get("reason", ""),
            message=str(obj.get("message", ""))[:500],
            involvedObject={"kind": involved.get("kind", ""), "name": involved.get("name", "")},
            lastTimestamp=obj.get("lastTimestamp") or obj.get("eventTime") or "",
        )
    elif resource == "pods":
        out["spec"] = {"nodeName": spec.get("nodeName", "")}
        out["status"] = {
            "phase": status.get("phase", ""),
            "conditions": [
                {k: c.get(k) for k in ("type", "status", "reason", "message")} for c in status.get("conditions", [])
            ],
            "containerStatuses": [
                {k: c.get(k) for k in ("name", "state", "lastState", "ready", "restartCount")}
                for c in status.get("containerStatuses", [])
            ],
        }
    return out


class WatchCache:
    def __init__(
        self,
        kube: Kube,
        on_change: Callable[[str], None] | None = None,
        watch_seconds: int = 60,
    ) -> None:
        self.kube = kube
        self.on_change = on_change
        self.watch_seconds = watch_seconds
        self.selector = f"{naming.MANAGED_BY[0]}={naming.MANAGED_BY[1]}"
        self._lock = threading.Lock()
        # resource -> namespace -> name -> slim object
        self._store: dict[str, dict[str, dict[str, Obj]]] = {r: {} for r in RESOURCES}
        self._listed: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.events = 0

    # -- reading ---------------------------------------------------------------------------------
    @property
    def synced(self) -> bool:
        with self._lock:
            return len(self._listed) == len(RESOURCES)

    def get(self, resource: str, namespace: str) -> list[Obj]:
        """The cached objects of one kind in one namespace (for namespaces: the namespace itself)."""
        with self._lock:
            if resource == "namespaces":
                found = self._store["namespaces"].get("", {}).get(namespace)
                return [found] if found is not None else []
            return list(self._store[resource].get(namespace, {}).values())

    # -- running ---------------------------------------------------------------------------------
    def start(self) -> None:
        for resource in RESOURCES:
            t = threading.Thread(target=self._run, args=(resource,), name=f"watch-{resource}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.synced:
                return True
            time.sleep(0.05)
        return self.synced

    def _run(self, resource: str) -> None:
        delay = 0.5
        version = ""
        while not self._stop.is_set():
            try:
                if resource == "events" and not self._has_listed("namespaces"):  # it filters by them
                    self._stop.wait(0.05)
                    continue
                if not version:
                    version = self._list(resource)
                version = self._watch(resource, version)
                delay = 0.5
            except KubeError as e:
                with self._lock:
                    self._listed.discard(resource)  # readers fall back to the API until it is listed again
                log.warning("watch of %s failed, listing again in %.1fs error=%r", resource, delay, str(e)[:300])
                version = ""
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
            except Exception:  # a bug must not silently freeze the cache: say so and start over
                with self._lock:
                    self._listed.discard(resource)
                log.exception("watch of %s crashed, listing again", resource)
                version = ""
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def _list(self, resource: str) -> str:
        body = self.kube.request("GET", RESOURCES[resource], query=self._query(resource), what=f"listing {resource}")
        fresh: dict[str, dict[str, Obj]] = {}
        for obj in body.get("items", []):
            if not self._wanted(resource, obj):
                continue
            s = slim(resource, obj)
            ns = s["metadata"]["namespace"] or ""
            fresh.setdefault(ns, {})[s["metadata"]["name"]] = s
        with self._lock:
            before = self._store[resource]
            self._store[resource] = fresh
            self._listed.add(resource)
        changed = set(before) | set(fresh)
        if resource == "namespaces":
            changed = set(before.get("", {})) | set(fresh.get("", {}))
        for ns in changed:
            self._notify(ns)
        return str(body.get("metadata", {}).get("resourceVersion", ""))

    def _has_listed(self, resource: str) -> bool:
        with self._lock:
            return resource in self._listed

    def _query(self, resource: str) -> list[tuple[str, str]]:
        if resource == "events":
            return [("fieldSelector", "type=Warning")]
        return [("labelSelector", self.selector)]

    def _wanted(self, resource: str, obj: Obj) -> bool:
        """Events: only workload warnings in a lease namespace we know (namespaces are created first)."""
        if resource != "events":
            return True
        if obj.get("reason") not in WORKLOAD_WARNINGS:
            return False
        ns = obj.get("metadata", {}).get("namespace", "")
        with self._lock:
            return ns in self._store["namespaces"].get("", {})

    def _watch(self, resource: str, version: str) -> str:
        """Follow one watch to its end; returns the version to resume from ("" = list again)."""
        query = [*self._query(resource), ("resourceVersion", version)]
        for event in self.kube.watch(RESOURCES[resource], query, self.watch_seconds):
            if self._stop.is_set():
                return version
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:  # expired: list again
                    return ""
                raise KubeError(f"watch of {resource} sent an error: {str(obj.get('message', ''))[:200]}")
            version = str(obj.get("metadata", {}).get("resourceVersion", version))
            if kind == "BOOKMARK" or not self._wanted(resource, obj):
                continue
            s = slim(resource, obj)
            name, ns = s["metadata"]["name"], s["metadata"]["namespace"] or ""
            with self._lock:
                self.events += 1
                bucket = self._store[resource].setdefault(ns, {})
                if kind == "DELETED":
                    bucket.pop(name, None)
                else:
                    bucket[name] = s
                    while len(bucket) > MAX_EVENTS_PER_NAMESPACE and resource == "events":
                        bucket.pop(min(bucket, key=lambda k: str(bucket[k].get("lastTimestamp", ""))))
                if not bucket:
                    self._store[resource].pop(ns, None)
            self._notify(name if resource == "namespaces" else ns)
        return version

    def _notify(self, namespace: str) -> None:
        if self.on_change is not None:
            try:
                self.on_change(namespace)
            except Exception:
                log.exception("watch change callback failed namespace=%s", namespace)
