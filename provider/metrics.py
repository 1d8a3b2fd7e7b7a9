"""Prometheus metrics (prometheus-client). The registry is passed in; nothing is global. Base units,
``_total`` counters, and no ids in labels (reasons come from bounded sets)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

FEED_GAP_REASONS = ("pruned", "block_events_not_kept", "not_indexed")


class BidMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.orders_seen = Counter(
            "gpu_provider_orders_seen_total", "Orders the bid engine evaluated.", registry=registry
        )
        self.orders_skipped = Counter(
            "gpu_provider_orders_skipped_total", "Orders not bid on, by reason.", ["reason"], registry=registry
        )
        self.bids_placed = Counter("gpu_provider_bids_placed_total", "Bids the chain accepted.", registry=registry)
        self.bids_failed = Counter(
            "gpu_provider_bids_failed_total",
            "Bids the chain refused or that could not be sent, by error code.",
            ["code"],
            registry=registry,
        )
        self.leases_won = Counter("gpu_provider_leases_won_total", "Leases created from our bids.", registry=registry)
        self.bids_lost = Counter(
            "gpu_provider_bids_lost_total", "Our bids that lost or timed out.", ["outcome"], registry=registry
        )
        self.last_order_seen = Gauge(
            "gpu_provider_last_order_seen_timestamp_seconds", "Unix time the last order was seen.", registry=registry
        )
        self.last_bid_placed = Gauge(
            "gpu_provider_last_bid_placed_timestamp_seconds",
            "Unix time the last bid was accepted by the chain.",
            registry=registry,
        )
        self.reservations = Gauge("gpu_provider_reservations", "Capacity holds currently open.", registry=registry)
        self.feed_height = Gauge(
            "gpu_provider_chain_feed_height", "Block height of the last chain event handled.", registry=registry
        )
        self.chain_height = Gauge(
            "gpu_provider_chain_height", "The chain's height in the last answer of the chain feed.", registry=registry
        )
        self.feed_last_poll = Gauge(
            "gpu_provider_chain_feed_last_poll_timestamp_seconds",
            "Unix time the chain feed last answered (it long-polls; a stalled feed stops moving this).",
            registry=registry,
        )
        self.inventory_refresh_failures = Counter(
            "gpu_provider_inventory_refresh_failures_total",
            "Cluster inventory reads (nodes, pods) that failed.",
            registry=registry,
        )
        self.inventory_last_refresh = Gauge(
            "gpu_provider_inventory_last_refresh_timestamp_seconds",
            "Unix time the cluster inventory was last read successfully.",
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "gpu_provider_bid_decision_seconds",
            "Time from reading an order to the chain answering our bid.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.events_failed = Counter(
            "gpu_provider_chain_events_failed_total",
            "Chain events that could not be handled and were skipped, by reason (malformed | refused | internal).",
            ["reason"],
            registry=registry,
        )
        self.events_retried = Counter(
            "gpu_provider_chain_events_retried_total",
            "Attempts to handle a chain event again after the chain or cluster failed mid-way.",
            registry=registry,
        )
        self.chain_resets = Counter(
            "gpu_provider_chain_resets_total",
            "Starts where the chain was not the one the cursor belonged to (reset or another chain).",
            registry=registry,
        )
        self.holds_expired = Counter(
            "gpu_provider_holds_expired_total",
            "Capacity holds whose bid went unanswered past the hold height; the bid is closed on chain.",
            registry=registry,
        )
        self.maintenance = Gauge(
            "gpu_provider_maintenance",
            "1 while maintenance mode is on (no new bids; leases are still served).",
            registry=registry,
        )
        self.orders_waiting = Gauge(
            "gpu_provider_orders_waiting",
            "Open orders skipped for want of capacity, tried again when capacity comes back.",
            registry=registry,
        )
        self.bids_after_waiting = Counter(
            "gpu_provider_bids_after_waiting_total",
            "Bids placed on an order first skipped for want of capacity, once capacity came back.",
            registry=registry,
        )
        self.feed_gaps = Counter(
            "gpu_provider_chain_feed_gaps_total",
            "Times the chain feed passed over heights it could not read whole, by reason (pruned: the node no "
            "longer has them | block_events_not_kept: read from the tx index | not_indexed).",
            ["reason"],
            registry=registry,
        )
        self.feed_gap_blocks = Counter(
            "gpu_provider_chain_feed_gap_blocks_total",
            "Blocks the chain feed could not read whole, by reason (as gpu_provider_chain_feed_gaps_total).",
            ["reason"],
            registry=registry,
        )
        self.feed_rescans = Counter(
            "gpu_provider_chain_feed_rescans_total",
            "Reconciliations with the chain's open orders, bids and leases after feed gaps.",
            registry=registry,
        )
        self.capability_updates = Counter(
            "gpu_provider_capability_updates_total",
            "Times the GPU models published on chain were updated after start (a model added or removed).",
            registry=registry,
        )
        for reason in FEED_GAP_REASONS:  # every series from 0, so the first gap after a start counts in increase()
            self.feed_gaps.labels(reason=reason)
            self.feed_gap_blocks.labels(reason=reason)
        self.leases_refused = Counter(
            "gpu_provider_leases_refused_total",
            "Won leases closed on chain because their capacity could not be allocated, by reason.",
            ["reason"],
            registry=registry,
        )


LEASE_STATES = ("awaiting_manifest", "deploying", "ready", "degraded", "failed", "closing")
MANIFEST_REFUSALS = (
    "malformed", "no_deployment", "no_lease", "version", "groups", "hostname", "update", "unavailable", "internal",
)  # fmt: skip


class LeaderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.leader = Gauge(
            "gpu_provider_leader",
            "1 while this replica leads (bids, deploys, withdraws); 0 on a standby. Always 1 without HA.",
            registry=registry,
        )
        self.transitions = Counter(
            "gpu_provider_leader_transitions_total", "Times this replica started or stopped leading.", registry=registry
        )

    def set(self, leading: bool) -> None:
        self.leader.set(1 if leading else 0)
        self.transitions.inc()


class LeaseMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.leases = Gauge("gpu_provider_leases", "Active leases by lifecycle state.", ["state"], registry=registry)
        for s in LEASE_STATES:
            self.leases.labels(state=s).set(0)
        self.manifests_received = Counter(
            "gpu_provider_manifests_received_total", "Manifests accepted from tenants.", registry=registry
        )
        self.manifests_refused = Counter(
            "gpu_provider_manifests_refused_total", "Manifests refused, by reason.", ["reason"], registry=registry
        )
        for r in MANIFEST_REFUSALS:
            self.manifests_refused.labels(reason=r)
        self.deploy_seconds = Histogram(
            "gpu_provider_deploy_duration_seconds",
            "Time from a won lease's manifest being accepted to all its replicas available.",
            buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
            registry=registry,
        )
        self.reconcile_errors = Counter(
            "gpu_provider_reconcile_errors_total",
            "Failed attempts to apply or tear down a lease's objects, by reason (kube | invalid | internal).",
            ["reason"],
            registry=registry,
        )
        self.manifest_timeouts = Counter(
            "gpu_provider_manifest_timeouts_total",
            "Won leases closed on our side because no manifest came in time.",
            registry=registry,
        )
        self.failed_closes = Counter(
            "gpu_provider_failed_lease_closes_total",
            "Leases closed on our side because they stayed failed for a tenant-side cause "
            "(deploy.close_failed_after_seconds).",
            registry=registry,
        )
        self.teardowns = Counter(
            "gpu_provider_lease_teardowns_total", "Lease namespaces deleted after the lease closed.", registry=registry
        )
        self.orphans = Gauge(
            "gpu_provider_orphan_namespaces",
            "Lease namespaces of the last orphan sweep: kept (live, or not provably closed), waiting (closed on "
            "chain, in the grace period), would_delete (closed past the grace period, dry-run mode).",
            ["state"],
            registry=registry,
        )
        for s in ("kept", "waiting", "would_delete"):
            self.orphans.labels(state=s).set(0)
        self.orphans_deleted = Counter(
            "gpu_provider_orphan_namespaces_deleted_total",
            "Lease namespaces deleted because the chain reported their lease closed.",
            registry=registry,
        )
        self.withdrawals = Counter(
            "gpu_provider_withdrawals_total",
            "Lease withdrawals sent to the chain, by outcome (ok | failed).",
            ["outcome"],
            registry=registry,
        )
        for o in ("ok", "failed"):
            self.withdrawals.labels(outcome=o)
        self.withdrawn = Counter(
            "gpu_provider_withdrawn_total",
            "Lease earnings moved to the provider's account by our withdrawals, by denomination (base units).",
            ["denom"],
            registry=registry,
        )
