"""Orphan cleanup: lease namespaces whose lease the chain positively reports closed.

A namespace is ours to delete only when all of these hold:

* its labels name a lease whose provider is this daemon's address (another key's tenants are not ours);
* its chain-identity labels equal the chain we are connected to (a reset chain, or another chain,
  knows nothing of these tenants: silence is not "closed");
* the chain answered, for that very lease, ``state == "closed"`` (unreachable, unknown or active all
  keep it);
* it has been seen in that state for ``grace_seconds`` (a lease that is being torn down by the lease
  service, or a chain hiccup, is never raced).

In dry-run mode nothing is deleted; the ``gpu_provider_orphan_namespaces{state="would_delete"}`` gauge
and a log line say what would have been.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from provider.chain.port import ChainError, ChainPort
from provider.chain.types import ChainStatus, LeaseId
from provider.deploy import naming
from provider.deploy.deployer import Deployer
from provider.errors import KubeError
from provider.metrics import LeaseMetrics

log = logging.getLogger("provider.leases.orphans")


@dataclass(frozen=True)
class ReaperSettings:
    interval_seconds: float = 300.0
    grace_seconds: float = 600.0
    dry_run: bool = False


@dataclass(frozen=True)
class Verdict:
    namespace: str
    lease: LeaseId | None
    action: str  # "keep" | "would_delete" | "delete"
    reason: str


class OrphanReaper:
    def __init__(
        self,
        chain: ChainPort,
        deployer: Deployer,
        metrics: LeaseMetrics,
        settings: ReaperSettings | None = None,
        live: Callable[[], set[LeaseId]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chain = chain
        self.deployer = deployer
        self.metrics = metrics
        self.settings = settings or ReaperSettings()
        self.me = chain.address
        self._live = live or set
        self._clock = clock
        self._closed_since: dict[str, float] = {}

    async def sweep(self) -> list[Verdict]:
        """One pass over every lease namespace; returns what was decided for each (nothing when the chain
        or the cluster cannot be asked)."""
        try:
            status = await self.chain.status()
            found = await asyncio.to_thread(self.deployer.lease_namespaces)
        except (ChainError, KubeError) as e:
            log.warning("orphan sweep skipped: cannot ask the chain or the cluster error=%r", str(e)[:300])
            return []
        chain_id = status.chain_id[:63]
        live = self._live()
        verdicts: list[Verdict] = []
        for name, labels in found:
            lease = naming.lease_of(labels)
            if lease is None:
                verdicts.append(Verdict(name, None, "keep", "unlabelled"))
            elif lease.provider != self.me:
                verdicts.append(Verdict(name, lease, "keep", "other_provider"))
            elif labels.get(naming.CHAIN_LABEL) != chain_id or not _same_history(status, labels):
                verdicts.append(Verdict(name, lease, "keep", "other_chain"))
            elif lease in live:
                verdicts.append(Verdict(name, lease, "keep", "live"))
            else:
                try:
                    on_chain = await self.chain.lease(lease)
                except ChainError as e:  # no answer is not "closed": stop here, try next time
                    log.warning("orphan sweep stopped: the chain did not answer error=%r", str(e)[:300])
                    return verdicts
                verdicts.append(self._judge(name, lease, None if on_chain is None else on_chain.state))
        seen = {v.namespace for v in verdicts}
        self._closed_since = {k: v for k, v in self._closed_since.items() if k in seen}
        for v in verdicts:
            if v.action == "delete":
                await self._delete(v)
        self._publish(verdicts)
        return verdicts

    def _judge(self, name: str, lease: LeaseId, state: str | None) -> Verdict:
        if state is None:
            self._closed_since.pop(name, None)
            return Verdict(name, lease, "keep", "unknown_lease")
        if state != "closed":
            self._closed_since.pop(name, None)
            return Verdict(name, lease, "keep", "active")
        since = self._closed_since.setdefault(name, self._clock())
        if self._clock() - since < self.settings.grace_seconds:
            return Verdict(name, lease, "keep", "grace")
        if self.settings.dry_run:
            log.info("orphan namespace would be deleted (dry run) namespace=%s lease=%s", name, lease)
            return Verdict(name, lease, "would_delete", "closed")
        return Verdict(name, lease, "delete", "closed")

    async def _delete(self, v: Verdict) -> None:
        assert v.lease is not None
        try:
            await asyncio.to_thread(self.deployer.teardown, v.lease)
        except KubeError as e:
            self.metrics.reconcile_errors.labels(reason="kube").inc()
            log.warning("orphan namespace not deleted namespace=%s error=%r", v.namespace, str(e)[:300])
            return
        self._closed_since.pop(v.namespace, None)
        self.metrics.orphans_deleted.inc()
        log.info("orphan namespace deleted namespace=%s lease=%s (closed on chain)", v.namespace, v.lease)

    def _publish(self, verdicts: list[Verdict]) -> None:
        counts = {"kept": 0, "waiting": 0, "would_delete": 0}
        for v in verdicts:
            if v.action == "would_delete":
                counts["would_delete"] += 1
            elif v.reason == "grace":
                counts["waiting"] += 1
            elif v.action == "keep":
                counts["kept"] += 1
        for state, n in counts.items():
            self.metrics.orphans.labels(state=state).set(n)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception:  # a bug here must never take the daemon down; it is logged and retried
                log.exception("orphan sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.interval_seconds)


def _same_history(status: ChainStatus, labels: dict[str, str]) -> bool:
    """The namespace's chain identity label names this chain (its current identity, or an older release's
    name for the same history: a label is cut to 63 characters)."""
    found = labels.get(naming.GENESIS_LABEL, "")
    return found == status.genesis[:63] or status.names(found)
