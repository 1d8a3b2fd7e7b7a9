"""Names and labels of what a lease owns in the cluster: pure functions of the lease id.

The namespace is Akash's: base32hex (lowercase, no padding) of SHA-224 over
``owner/dseq/gseq/oseq/provider``, a 45-character DNS label, so Akash tooling that computes it ports
over. Objects carry the lease id in labels (never in metric labels) and the chain identity, so orphan
cleanup can tell our live tenants from leftovers of another chain.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping

from provider.chain.types import LeaseId, OrderId

PREFIX = "gpu-provider.io/"
MANAGED_BY = ("app.kubernetes.io/managed-by", "gpu-provider")
LEASE_PARTS = ("owner", "dseq", "gseq", "oseq", "provider")
SERVICE_LABEL = PREFIX + "service"
CHAIN_LABEL = PREFIX + "chain-id"
GENESIS_LABEL = PREFIX + "chain-genesis"
POD_GENESIS_ANNOTATION = PREFIX + "pod-chain-genesis"  # on a Manifest: the identity its pod templates keep
FIELD_MANAGER = "gpu-provider"


def namespace_for(lease: LeaseId) -> str:
    digest = hashlib.sha224(str(lease).encode()).digest()
    return base64.b32hexencode(digest).decode().rstrip("=").lower()


def lease_labels(lease: LeaseId) -> dict[str, str]:
    o = lease.order
    return {
        PREFIX + "lease.owner": o.owner,
        PREFIX + "lease.dseq": str(o.dseq),
        PREFIX + "lease.gseq": str(o.gseq),
        PREFIX + "lease.oseq": str(o.oseq),
        PREFIX + "lease.provider": lease.provider,
    }


def lease_of(labels: Mapping[str, str]) -> LeaseId | None:
    """The lease an object belongs to, from its labels (None when they are missing or damaged)."""
    try:
        owner, dseq, gseq, oseq, provider = (labels[PREFIX + "lease." + p] for p in LEASE_PARTS)
        return LeaseId(OrderId(owner, int(dseq), int(gseq), int(oseq)), provider)
    except (KeyError, ValueError):
        return None


def manifest_name(lease: LeaseId) -> str:
    """The Manifest object's name in the provider's namespace: the lease's namespace name."""
    return namespace_for(lease)


def generated_host(lease: LeaseId, service: str, domain: str) -> str:
    """A stable hostname for a service's HTTP expose: ``<26 base32 chars>.<domain>``."""
    digest = hashlib.sha256(f"{lease}/{service}".encode()).digest()
    return base64.b32encode(digest).decode().rstrip("=").lower()[:26] + "." + domain.strip(".")
