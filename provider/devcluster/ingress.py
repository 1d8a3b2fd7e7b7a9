"""The dev cluster's ingress controller: Traefik v3 (pinned in hack/devcluster/traefik), the default
IngressClass, serving HTTP on a loopback port and proxying straight to pod IPs over the real node's bridge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from provider.files import write_private

CLASS = "traefik"
CONTROLLER = "traefik.io/ingress-controller"

RBAC_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["services", "endpoints", "secrets", "nodes"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    {
        "apiGroups": ["networking.k8s.io", "extensions"],
        "resources": ["ingresses", "ingressclasses"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": ["networking.k8s.io", "extensions"], "resources": ["ingresses/status"], "verbs": ["update"]},
]


def ingress_class() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": CLASS, "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": CONTROLLER},
    }


def write_config(path: Path, *, web_port: int, admin_port: int, api_url: str, token: str, ca: Path) -> None:
    """Traefik's static configuration (JSON is YAML): the token makes it private to root."""
    config = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {"web": {"address": f"127.0.0.1:{web_port}"}, "admin": {"address": f"127.0.0.1:{admin_port}"}},
        "ping": {"entryPoint": "admin"},
        "log": {"level": "INFO"},
        "providers": {
            "kubernetesIngress": {
                "endpoint": api_url,
                "token": token,
                "certAuthFilePath": str(ca),
                "ingressEndpoint": {"ip": "127.0.0.1"},
            }
        },
    }
    write_private(path, json.dumps(config, indent=2).encode())
