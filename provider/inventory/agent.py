"""The node agent: publishes what NVML sees on this node's Node object.

Labels carry every fact the deployer and inventory select on (model, ram class, interface, count,
healthy count); an annotation carries the full JSON. The node is patched only when something changed,
so the agent is cheap to run every few seconds and never churns the API server.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict

from provider.domain import HostGpus
from provider.inventory.nvml import Probe
from provider.kube import AGENT_PREFIX, Kube

log = logging.getLogger(__name__)

ANNOTATION = AGENT_PREFIX + "gpus"
LABELS = ("gpu.present", "gpu.model", "gpu.ram", "gpu.interface", "gpu.count", "gpu.healthy")
_VOLATILE = ("utilization_percent", "memory_used_bytes", "temperature_celsius", "power_watts")


def desired_metadata(host: HostGpus) -> tuple[dict[str, str | None], dict[str, str]]:
    """Labels (None = remove) and the annotation for what the probe found."""
    labels: dict[str, str | None] = {AGENT_PREFIX + k: None for k in LABELS}
    gpus = [g for g in host.gpus if g.model]
    if gpus:
        model, _ = Counter(g.model for g in gpus).most_common(1)[0]
        same = [g for g in gpus if g.model == model]
        labels.update(
            {
                AGENT_PREFIX + "gpu.present": "true",
                AGENT_PREFIX + "gpu.model": model,
                AGENT_PREFIX + "gpu.ram": Counter(g.ram_class for g in same).most_common(1)[0][0],
                AGENT_PREFIX + "gpu.interface": Counter(g.interface for g in same).most_common(1)[0][0] or None,
                AGENT_PREFIX + "gpu.count": str(len(same)),
                AGENT_PREFIX + "gpu.healthy": str(sum(1 for g in same if g.healthy and not g.mig_enabled)),
            }
        )
    payload = {
        "driver": host.driver_version,
        "cuda": host.cuda_version,
        "error": host.error,
        "gpus": [{k: v for k, v in asdict(g).items() if k not in _VOLATILE} for g in host.gpus],
    }
    return labels, {ANNOTATION: json.dumps(payload, sort_keys=True, separators=(",", ":"))}


class Agent:
    def __init__(self, probe: Probe, kube: Kube, node_name: str) -> None:
        self.probe = probe
        self.kube = kube
        self.node = node_name

    def sync(self) -> bool:
        """Read the GPUs and update the node if anything changed. Returns True when it patched."""
        host = self.probe.read(with_metrics=False)
        labels, annotations = desired_metadata(host)
        current_labels, current_annotations = self.kube.node_metadata(self.node)
        label_changes = {k: v for k, v in labels.items() if current_labels.get(k) != v}
        annotation_changes = {k: v for k, v in annotations.items() if current_annotations.get(k) != v}
        if not label_changes and not annotation_changes:
            return False
        self.kube.patch_node_metadata(self.node, label_changes, dict(annotation_changes))
        log.info(
            "node gpu facts updated node=%s gpus=%d model=%s changed=%s",
            self.node,
            len(host.gpus),
            labels.get(AGENT_PREFIX + "gpu.model"),
            sorted([*label_changes, *annotation_changes]),
        )
        return True
