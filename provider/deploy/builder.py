"""The pure builder: (lease, manifest group, settings, node facts) -> every Kubernetes object of the lease.

No I/O, no clock: the same input gives the same objects, byte for byte (golden-file tests hold it).
Secrets never land anywhere but in Secret objects: env values and registry passwords are referenced
from the pod spec, so the Manifest object, the workload specs and our logs never carry them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from provider.chain.types import LeaseId
from provider.deploy import naming
from provider.domain import GPU_RESOURCE, NodeGpuFacts
from provider.inventory.models import DEFAULT_CATALOGUE, Catalogue
from sdl import spec as s

Obj = dict[str, Any]

AGENT_MODEL = "gpu-provider.io/gpu.model"
AGENT_RAM = "gpu-provider.io/gpu.ram"
AGENT_INTERFACE = "gpu-provider.io/gpu.interface"
GFD_PRODUCT = "nvidia.com/gpu.product"
GFD_PRESENT = "nvidia.com/gpu.present"
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8")
ENV_SECRET_SUFFIX = "-env"
PULL_SECRET_SUFFIX = "-registry"


@dataclass(frozen=True, slots=True)
class DeploySettings:
    """What the operator decides about every lease's objects (from the config's deploy section)."""

    ingress_domain: str = ""  # generated hostnames <id>.<domain>; "" = only the SDL's accept hosts
    ingress_class: str = ""  # "" = the cluster's default IngressClass
    runtime_class: str = "nvidia"  # for pods with GPUs; "" = none
    global_service_type: str = "NodePort"  # or LoadBalancer, for global non-HTTP exposes
    storage_classes: Mapping[str, str] = field(default_factory=dict)  # SDL class -> StorageClass ("" = default)
    cluster_public_hostname: str = ""
    dns_cidrs: tuple[str, ...] = ()  # where cluster DNS answers when it is not a kube-system pod
    blocked_cidrs: tuple[str, ...] = ()  # more internal ranges public egress must not reach
    ingress_namespace: str = ""  # namespace of the ingress controller's pods, allowed in
    ingress_cidrs: tuple[str, ...] = ()  # where the ingress controller connects from, when not a pod
    gpu_tolerations: tuple[str, ...] = (GPU_RESOURCE,)  # taint keys GPU nodes carry


@dataclass(frozen=True, slots=True)
class LeaseRef:
    id: LeaseId
    chain_id: str
    genesis: str
    # the chain identity the lease's pod and claim templates were first built with, when it differs from
    # ``genesis`` (an install from before the identity changed): kept there, since changing a template
    # label rolls every pod and a StatefulSet's claim templates cannot change at all
    pod_genesis: str = ""


def _meta(name: str, namespace: str | None, labels: Mapping[str, str]) -> Obj:
    meta: Obj = {"name": name, "labels": dict(sorted(labels.items()))}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def base_labels(ref: LeaseRef) -> dict[str, str]:
    return {
        naming.MANAGED_BY[0]: naming.MANAGED_BY[1],
        naming.CHAIN_LABEL: ref.chain_id[:63],
        naming.GENESIS_LABEL: ref.genesis[:63],
        **naming.lease_labels(ref.id),
    }


def gpu_alternatives(resources: s.Resources) -> list[tuple[str, str, str]]:
    """The (model, ram, interface) choices a unit's GPU attributes allow; ("*", "", "") is any model."""
    out: list[tuple[str, str, str]] = []
    for a in resources.gpu_attributes:
        parts = a.key.split("/")
        if len(parts) < 4 or parts[0] != "vendor" or parts[2] != "model":
            continue
        extra = dict(zip(parts[4::2], parts[5::2], strict=False))
        out.append((parts[3], extra.get("ram", ""), extra.get("interface", "")))
    return sorted(set(out))


def _expr(key: str, op: str, values: Iterable[str] = ()) -> Obj:
    e: Obj = {"key": key, "operator": op}
    vals = sorted(set(values))
    if vals:
        e["values"] = vals
    return e


def gpu_node_terms(
    resources: s.Resources, observed: Iterable[NodeGpuFacts], catalogue: Catalogue = DEFAULT_CATALOGUE
) -> list[Obj]:
    """Required node-affinity terms (ORed) matching exactly the nodes whose GPUs the unit asked for.

    A node is read the way the inventory reads it: our agent's labels when it has them, otherwise GPU
    Feature Discovery's product label, mapped through the catalogue (and, for products the catalogue
    does not list, as the inventory identified them on the nodes it saw).
    """
    facts = list(observed)
    terms: list[Obj] = []
    for model, ram, interface in gpu_alternatives(resources):
        if model == "*":
            terms.append({"matchExpressions": [_expr(AGENT_MODEL, "Exists")]})
            terms.append({"matchExpressions": [_expr(AGENT_MODEL, "DoesNotExist"), _expr(GFD_PRESENT, "In", ["true"])]})
            continue
        agent = [_expr(AGENT_MODEL, "In", [model])]
        if ram:
            agent.append(_expr(AGENT_RAM, "In", [ram]))
        if interface:
            agent.append(_expr(AGENT_INTERFACE, "In", [interface]))
        terms.append({"matchExpressions": agent})

        def fits(m: str, r: str, i: str) -> bool:
            return m == model and (not ram or r == ram) and (not interface or i == interface)  # noqa: B023

        products = {
            n.replace(" ", "-") for e in catalogue.entries if fits(e.key, e.ram_class, e.interface) for n in e.names
        }
        products |= {f.product for f in facts if f.product and fits(f.model, f.ram_class, f.interface)}
        # a product the catalogue knows under another shape must not match through an observed node
        products = {p for p in products if _catalogue_fits(catalogue, p, fits)}
        if products:
            terms.append({"matchExpressions": [_expr(AGENT_MODEL, "DoesNotExist"), _expr(GFD_PRODUCT, "In", products)]})
    return terms


def _catalogue_fits(catalogue: Catalogue, product: str, fits: Any) -> bool:
    """A product the catalogue knows fits only as the catalogue describes it; an unknown one is trusted
    as the inventory identified it on a node."""
    known = catalogue.from_product_label(product)
    return not known.known or bool(fits(known.model, known.ram_class, known.interface))


def _quantity_env(ref: LeaseRef, settings: DeploySettings) -> list[Obj]:
    o = ref.id.order
    values = {
        "AKASH_GROUP_SEQUENCE": str(o.gseq),
        "AKASH_DEPLOYMENT_SEQUENCE": str(o.dseq),
        "AKASH_ORDER_SEQUENCE": str(o.oseq),
        "AKASH_OWNER": o.owner,
        "AKASH_PROVIDER": ref.id.provider,
        "AKASH_CLUSTER_PUBLIC_HOSTNAME": settings.cluster_public_hostname,
    }
    return [{"name": k, "value": v} for k, v in values.items()]


def env_values(svc: s.ManifestService) -> dict[str, str]:
    """The service's env as the container will see it (a later duplicate wins, as in Kubernetes)."""
    out: dict[str, str] = {}
    for kv in svc.env or ():
        name, _, value = kv.partition("=")
        out[name] = value
    return out


def _volumes(svc: s.ManifestService) -> tuple[list[Obj], list[Obj], list[Obj], int, int]:
    """(pod volumes, container mounts, claim templates, ephemeral bytes, ram-volume bytes)."""
    by_name = {v.name: v for v in svc.resources.storage or ()}
    mounts = {p.name: p for p in (svc.params.storage or ()) if svc.params} if svc.params else {}
    pod_volumes: list[Obj] = []
    container_mounts: list[Obj] = []
    claims: list[Obj] = []
    ephemeral = ram = 0
    for name, vol in sorted(by_name.items()):
        cls = vol.storage_class
        mount = mounts.get(name)
        vname = f"vol-{name}"[:63].lower().replace("_", "-")
        if cls == "ram":
            ram += vol.size
            pod_volumes.append({"name": vname, "emptyDir": {"medium": "Memory", "sizeLimit": str(vol.size)}})
        elif vol.persistent:
            claims.append({"name": vname, "class": cls or "default", "size": vol.size})
        else:
            ephemeral += vol.size
            if mount is None:
                continue
            pod_volumes.append({"name": vname, "emptyDir": {"sizeLimit": str(vol.size)}})
        if mount is not None:
            container_mounts.append({"name": vname, "mountPath": mount.mount, "readOnly": mount.read_only})
    return pod_volumes, container_mounts, claims, ephemeral, ram


def _ports(svc: s.ManifestService) -> list[Obj]:
    seen = sorted({(e.port, e.proto) for e in svc.expose})
    return [{"containerPort": p, "protocol": proto} for p, proto in seen]


def _container(
    ref: LeaseRef, svc: s.ManifestService, settings: DeploySettings, mounts: list[Obj], eph: int, ram: int
) -> Obj:
    r = svc.resources
    limits: Obj = {"cpu": f"{r.cpu_millis or 0}m", "memory": str((r.memory_bytes or 0) + ram)}
    if eph:
        limits["ephemeral-storage"] = str(eph)
    if r.gpu_units:
        limits[GPU_RESOURCE] = str(r.gpu_units)
    env = _quantity_env(ref, settings)
    tenant_env = env_values(svc)
    env = [e for e in env if e["name"] not in tenant_env]  # a tenant's own value wins, as on Akash
    env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": svc.name + ENV_SECRET_SUFFIX, "key": k}}} for k in tenant_env
    ]
    c: Obj = {
        "name": svc.name,
        "image": svc.image,
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": dict(limits), "limits": dict(limits)},
        "securityContext": {"privileged": False, "allowPrivilegeEscalation": False},
    }
    if svc.command:
        c["command"] = list(svc.command)
    if svc.args:
        c["args"] = list(svc.args)
    if env:
        c["env"] = env
    ports = _ports(svc)
    if ports:
        c["ports"] = ports
    if mounts:
        c["volumeMounts"] = mounts
    return c


def _pod(
    ref: LeaseRef, svc: s.ManifestService, settings: DeploySettings, labels: dict[str, str], node_terms: list[Obj]
) -> tuple[Obj, list[Obj]]:
    pod_volumes, mounts, claims, eph, ram = _volumes(svc)
    spec: Obj = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_container(ref, svc, settings, mounts, eph, ram)],
    }
    if svc.credentials is not None:
        spec["imagePullSecrets"] = [{"name": svc.name + PULL_SECRET_SUFFIX}]
    if pod_volumes:
        spec["volumes"] = pod_volumes
    if svc.resources.gpu_units:
        if settings.runtime_class:
            spec["runtimeClassName"] = settings.runtime_class
        spec["tolerations"] = [
            {"key": k, "operator": "Exists", "effect": "NoSchedule"} for k in settings.gpu_tolerations
        ]
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": node_terms}}
        }
    return {"metadata": {"labels": labels}, "spec": spec}, claims


def _workload(
    ref: LeaseRef,
    ns: str,
    svc: s.ManifestService,
    settings: DeploySettings,
    observed: list[NodeGpuFacts],
    catalogue: Catalogue,
) -> Obj:
    labels = {**base_labels(ref), naming.SERVICE_LABEL: svc.name}
    pod_labels = {**labels, naming.GENESIS_LABEL: ref.pod_genesis[:63]} if ref.pod_genesis else labels
    terms = gpu_node_terms(svc.resources, observed, catalogue) if svc.resources.gpu_units else []
    template, claims = _pod(ref, svc, settings, dict(sorted(pod_labels.items())), terms)
    selector = {"matchLabels": {naming.SERVICE_LABEL: svc.name}}
    if claims:
        templates = []
        for c in claims:
            pvc_spec: Obj = {
                "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Filesystem",
                "resources": {"requests": {"storage": str(c["size"])}},
            }
            target = settings.storage_classes.get(c["class"], "" if c["class"] == "default" else c["class"])
            if target:
                pvc_spec["storageClassName"] = target
            templates.append(
                {"metadata": {"name": c["name"], "labels": dict(sorted(pod_labels.items()))}, "spec": pvc_spec}
            )
        return {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta(svc.name, ns, labels),
            "spec": {
                "replicas": svc.count,
                "serviceName": svc.name,
                "selector": selector,
                "podManagementPolicy": "Parallel",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "revisionHistoryLimit": 1,
                "template": template,
                "volumeClaimTemplates": templates,
            },
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(svc.name, ns, labels),
        "spec": {
            "replicas": svc.count,
            "selector": selector,
            # never more pods than the lease paid for: a GPU surge would need GPUs nobody reserved
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "revisionHistoryLimit": 2,
            "template": template,
        },
    }


def _services(ref: LeaseRef, ns: str, svc: s.ManifestService, settings: DeploySettings) -> list[Obj]:
    labels = {**base_labels(ref), naming.SERVICE_LABEL: svc.name}
    selector = {naming.SERVICE_LABEL: svc.name}
    internal, public = [], []
    for e in svc.expose:
        if e.global_ and not e.is_ingress:
            public.append(e)
        else:
            internal.append(e)
    out: list[Obj] = []
    ports = sorted({(e.port, e.proto) for e in internal})
    if ports:  # a ClusterIP for service-to-service traffic, and as the ingress target
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _meta(svc.name, ns, labels),
                "spec": {
                    "type": "ClusterIP",
                    "selector": selector,
                    "ports": [
                        {"name": f"{proto.lower()}-{port}", "port": port, "targetPort": port, "protocol": proto}
                        for port, proto in ports
                    ],
                },
            }
        )
    if public:
        public_ports = sorted({(e.effective_external_port, e.port, e.proto) for e in public})
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _meta(svc.name + "-np", ns, labels),
                "spec": {
                    "type": settings.global_service_type,
                    "selector": selector,
                    "ports": [
                        {"name": f"{proto.lower()}-{ext}-{port}", "port": ext, "targetPort": port, "protocol": proto}
                        for ext, port, proto in public_ports
                    ],
                },
            }
        )
    return out


def hosts_of(ref: LeaseRef, svc: s.ManifestService, expose: s.ServiceExpose, settings: DeploySettings) -> list[str]:
    hosts = list(expose.hosts or ())
    if settings.ingress_domain:
        hosts.append(naming.generated_host(ref.id, svc.name, settings.ingress_domain))
    return sorted(set(hosts))


def _ingresses(ref: LeaseRef, ns: str, svc: s.ManifestService, settings: DeploySettings) -> list[Obj]:
    labels = {**base_labels(ref), naming.SERVICE_LABEL: svc.name}
    out = []
    for e in svc.expose:
        if not e.is_ingress:
            continue
        hosts = hosts_of(ref, svc, e, settings)
        if not hosts:
            continue
        spec: Obj = {
            "rules": [
                {
                    "host": h,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": svc.name, "port": {"number": e.port}}},
                            }
                        ]
                    },
                }
                for h in hosts
            ]
        }
        if settings.ingress_class:
            spec["ingressClassName"] = settings.ingress_class
        out.append(
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": _meta(f"{svc.name}-{e.port}", ns, labels),
                "spec": spec,
            }
        )
    return out


def _secrets(ref: LeaseRef, ns: str, svc: s.ManifestService) -> list[Obj]:
    labels = {**base_labels(ref), naming.SERVICE_LABEL: svc.name}
    out: list[Obj] = []
    env = env_values(svc)
    if env:
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _meta(svc.name + ENV_SECRET_SUFFIX, ns, labels),
                "type": "Opaque",
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(env.items())},
            }
        )
    c = svc.credentials
    if c is not None:
        auth = base64.b64encode(f"{c.username}:{c.password}".encode()).decode()
        entry: Obj = {"username": c.username, "password": c.password, "auth": auth}
        if c.email:
            entry["email"] = c.email
        config = json.dumps({"auths": {c.host: entry}}, sort_keys=True, separators=(",", ":"))
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _meta(svc.name + PULL_SECRET_SUFFIX, ns, labels),
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
            }
        )
    return out


def _network_policy(ref: LeaseRef, ns: str, group: s.ManifestGroup, settings: DeploySettings) -> Obj:
    """Pods talk to their own namespace, to DNS and to the public internet; nothing else in the cluster.
    In: from the namespace, from the ingress controller, and on the global ports from outside."""
    same_ns: Obj = {"podSelector": {}}
    ingress: list[Obj] = [{"from": [same_ns]}]
    peers: list[Obj] = []
    if settings.ingress_namespace:
        peers.append(
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.ingress_namespace}}}
        )
    peers += [{"ipBlock": {"cidr": c}} for c in settings.ingress_cidrs]
    http_ports = sorted({(e.port, e.proto) for svc in group.services for e in svc.expose if e.is_ingress})
    if peers and http_ports:
        ingress.append({"from": peers, "ports": [{"port": p, "protocol": proto} for p, proto in http_ports]})
    public_ports = sorted(
        {(e.port, e.proto) for svc in group.services for e in svc.expose if e.global_ and not e.is_ingress}
    )
    if public_ports:
        ingress.append(
            {
                "from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                "ports": [{"port": p, "protocol": proto} for p, proto in public_ports],
            }
        )
    dns_ports = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    dns_peers: list[Obj] = [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    dns_peers += [{"ipBlock": {"cidr": c}} for c in settings.dns_cidrs]
    blocked = sorted(set(PRIVATE_RANGES) | set(settings.blocked_cidrs))
    egress = [
        {"to": [same_ns]},
        {"to": dns_peers, "ports": dns_ports},
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": blocked}}]},
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("lease-isolation", ns, base_labels(ref)),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": ingress, "egress": egress},
    }


def namespace_object(ref: LeaseRef) -> Obj:
    ns = naming.namespace_for(ref.id)
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(ns, None, base_labels(ref))}


def build_objects(
    ref: LeaseRef,
    group: s.ManifestGroup,
    settings: DeploySettings,
    observed: Iterable[NodeGpuFacts] = (),
    catalogue: Catalogue = DEFAULT_CATALOGUE,
) -> list[Obj]:
    """Every object of the lease, in apply order: namespace, policy, secrets, services, workloads, ingresses."""
    facts = list(observed)
    ns = naming.namespace_for(ref.id)
    objs: list[Obj] = [namespace_object(ref), _network_policy(ref, ns, group, settings)]
    services = sorted(group.services, key=lambda v: v.name)
    for svc in services:
        objs += _secrets(ref, ns, svc)
    for svc in services:
        objs += _services(ref, ns, svc, settings)
    for svc in services:
        objs.append(_workload(ref, ns, svc, settings, facts, catalogue))
    for svc in services:
        objs += _ingresses(ref, ns, svc, settings)
    return objs


def redacted(objs: Iterable[Obj]) -> list[Obj]:
    """The objects with every Secret's data replaced: what may be logged or stored outside a Secret."""
    out = []
    for o in objs:
        if o.get("kind") == "Secret":
            out.append({**o, "data": dict.fromkeys(o.get("data", {}), "<redacted>")})
        else:
            out.append(o)
    return out
