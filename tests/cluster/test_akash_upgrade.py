"""An install of the previous release, with a live Akash lease, upgraded to this one: the chain's identity
changed (the first block's hash before, a hash of the genesis now), and the upgrade moves the cursor and
the lease's labels to the new one with nothing torn down, re-bid or restarted.

The previous release is the real one: its source from this repository's history (LEGACY), run as the
daemon on a height-1 devnet (where its identity worked), with the tenant's real `akash` CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from provider.chain.types import BidId, OrderId
from provider.deploy import naming
from provider.deploy.naming import namespace_for
from provider.devcluster.akash import AkashDevnet, DevnetState
from tests.akash.test_daemon import bid_transactions
from tests.akash.test_node_conditions import rpc_status, status_of
from tests.cluster.lifecycle_kit import Daemon, gpu_sdl
from tests.cluster.test_akash_lifecycle import (
    _ready,
    _try,
    namespace_gone,
    secret_file,
    tenant_cli,
    tls_files,
    until,
)
from tests.cluster.waiting import wait_for
from tests.conftest import REPO

pytestmark = pytest.mark.cluster
LEGACY = "0fd2cff0ecfca3cbe8f88e2c4f22b7d1c665eca6"  # the last release that named the chain by its first block


@pytest.fixture(scope="module")
def legacy_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's source tree, with the Akash types it generated at build time (the same
    inputs, so the same files as this tree's committed ones)."""
    where = tmp_path_factory.mktemp("legacy-release")
    archive = subprocess.run(["git", "archive", LEGACY], cwd=REPO, capture_output=True, check=False)
    assert archive.returncode == 0, (
        f"the previous release {LEGACY[:12]} is not in this clone's history (a shallow clone?): "
        f"{archive.stderr.decode()[-500:]}"
    )
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    shutil.copytree(REPO / "provider/chain/akash/pb", where / "provider/chain/akash/pb")
    return where


@pytest.fixture(scope="module")
def first_block_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AkashDevnet, DevnetState]]:
    """A height-1 devnet that keeps every block: where the previous release's identity worked."""
    net = AkashDevnet(tmp_path_factory.mktemp("akash-height-1") / "state")
    try:
        yield net, net.up(timeout=300)
    finally:
        net.down()


def test_an_upgrade_moves_live_leases_to_the_new_chain_identity_without_touching_them(
    first_block_chain: tuple[AkashDevnet, DevnetState], legacy_source: Path, kubeconfig: Path,
    real_node: dict[str, Any], api: client.ApiClient, tmp_path: Path,
) -> None:  # fmt: skip
    devnet, chain = first_block_chain
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    custom = client.CustomObjectsApi(api)
    provider, tenant = chain.keys["provider"], chain.keys["tenant"]
    first_block = rpc_status(devnet, chain)["earliest_block_hash"]
    key_file = secret_file(tmp_path / "provider.key", chain.mnemonics["provider"])
    tenant_key = secret_file(tmp_path / "tenant.key", chain.mnemonics["tenant"])
    settings: dict[str, Any] = {
        "dns_ip": str(real_node["ip"]),
        "chain_section": {
            "kind": "akash",
            "akash": {"rpc": chain.rpc, "rest": chain.rest, "chain_id": chain.chain_id, "key_file": str(key_file)},
        },
        "tls": tls_files(tmp_path),
        "extra": {"bidding": {"deposit": {"denom": "uakt", "amount": 500000}}},
    }
    try:
        old = Daemon(tmp_path / "daemon", kubeconfig, None, source=legacy_source, **settings)
        old.setup()
        old.start()
        try:
            # a lease made and running under the previous release
            sdl_file = tmp_path / "lease.yaml"
            sdl_file.write_text(gpu_sdl(real_node["busybox"], model="h200"))
            created = devnet.tx(chain, "tenant", "deployment", "create", str(sdl_file), "--deposit", "50000000uact")
            event = next(e for e in created["events"] if e["type"] == "akash.deployment.v1.EventDeploymentCreated")
            dseq = int(json.loads({a["key"]: a["value"] for a in event["attributes"]}["id"])["dseq"])
            until(lambda: bid_transactions(devnet, chain)[(tenant, dseq)], "the old release's bid", old)
            devnet.tx(chain, "tenant", "market", "lease", "create", "--dseq", str(dseq), "--gseq", "1", "--oseq", "1",
                      "--provider", provider)  # fmt: skip
            ca = old.tls[2] if old.tls else Path()
            until(
                lambda: _try(lambda: tenant_cli(chain, tenant_key, ca, "send-manifest", str(dseq), str(sdl_file))),
                "the manifest to be accepted by the old release",
                old,
                timeout=60,
            )
            until(lambda: _ready(tenant_cli(chain, tenant_key, ca, "lease-status", f"{dseq}/1/1")), "ready", old)
        finally:
            old.stop()

        lease = BidId(OrderId(tenant, dseq, 1, 1), provider)
        ns = namespace_for(lease)
        (pod,) = core.list_namespaced_pod(ns).items
        (deployment,) = apps.list_namespaced_deployment(ns).items
        assert core.read_namespace(ns).metadata.labels[naming.GENESIS_LABEL] == first_block[:63]
        cursor_file = old.dir / "state" / "chain-cursor"
        assert json.loads(cursor_file.read_text())["genesis"] == first_block

        # the upgrade: the same config, keyring and state, this release
        new = old
        new.source = REPO
        new.start()
        try:
            identity = status_of(chain).genesis
            assert identity != first_block
            until(
                lambda: core.read_namespace(ns).metadata.labels[naming.GENESIS_LABEL] == identity,
                "the namespace's label to move to the new identity",
                new,
            )
            manifest = custom.get_namespaced_custom_object(
                "gpu-provider.io", "v1", new.namespace, "manifests", naming.manifest_name(lease)
            )
            assert manifest["metadata"]["labels"][naming.GENESIS_LABEL] == identity
            assert manifest["metadata"]["annotations"][naming.POD_GENESIS_ANNOTATION] == first_block[:63]
            until(lambda: json.loads(cursor_file.read_text())["genesis"] == identity, "the cursor to move", new)
            status = until(
                lambda: _ready(tenant_cli(chain, tenant_key, ca, "lease-status", f"{dseq}/1/1")), "ready", new
            )
            assert status["services"]["app"]["available"] == 1

            # nothing restarted, rolled, re-bid or reset
            moved = apps.read_namespaced_deployment(deployment.metadata.name, ns)
            assert moved.metadata.labels[naming.GENESIS_LABEL] == identity
            assert moved.spec.template.metadata.labels[naming.GENESIS_LABEL] == first_block[:63]
            assert moved.metadata.generation == deployment.metadata.generation
            assert [p.metadata.uid for p in core.list_namespaced_pod(ns).items] == [pod.metadata.uid]
            assert bid_transactions(devnet, chain)[(tenant, dseq)] == 1
            assert new.metric("gpu_provider_chain_resets_total") == 0
            assert "lease moved to the chain's current identity" in new.logs()

            # and the lease still ends as leases end
            devnet.tx(chain, "tenant", "deployment", "close", "--dseq", str(dseq))
            until(lambda: namespace_gone(core, ns), "the lease's namespace to go", new)
        finally:
            new.stop()
    finally:  # a failure must not leave the lease's pods holding the real node's GPU for later tests
        for ns_obj in core.list_namespace(label_selector=f"{naming.PREFIX}lease.provider={provider}").items:
            core.delete_namespace(ns_obj.metadata.name)
        for ns_obj in core.list_namespace(label_selector=f"{naming.PREFIX}lease.provider={provider}").items:
            wait_for(lambda n=ns_obj.metadata.name: namespace_gone(core, n), 180, "the lease namespace's cleanup")
