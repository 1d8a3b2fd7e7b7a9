"""The whole lease on Akash's own chain and the dev cluster's real node: the tenant deploys with the real
`akash` CLI, our daemon (`chain.kind: akash`) bids with a real transaction, the tenant leases with
`akash tx market lease create`, sends the manifest with our tenant CLI and an Akash key (ES256K tokens),
the workload runs on the real node with its GPU, escrow pays the lease and our periodic withdrawal moves
it to the provider's balance (to the unit), and `akash tx deployment close` takes the namespace away."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

import sdl
from provider.chain.types import BidId, OrderId
from provider.deploy.naming import namespace_for
from provider.devcluster import pki
from provider.devcluster.akash import AkashDevnet, DevnetState
from tests.cluster.lifecycle_kit import Daemon, daemon_running, gpu_sdl
from tests.cluster.waiting import wait_for
from tests.conftest import REPO

pytestmark = pytest.mark.cluster
WAIT = 180.0


def tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: Akash wants an https host URI."""
    ca_key, server_key = pki.key(), pki.key()
    ca = pki.cert("gpu-provider test CA", ca_key, None)
    server = pki.cert("127.0.0.1", server_key, (ca, ca_key), server=True, sans=("127.0.0.1",))
    paths = (directory / "tls.crt", directory / "tls.key", directory / "ca.crt")
    for path, data in zip(paths, (pki.pem_cert(server), pki.pem_key(server_key), pki.pem_cert(ca)), strict=True):
        path.write_bytes(data)
    paths[1].chmod(0o600)
    return paths


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def daemon(kubeconfig: Path, chain: DevnetState, real_node: dict[str, Any], tmp_path: Path) -> Iterator[Daemon]:
    key_file = secret_file(tmp_path / "provider.key", chain.mnemonics["provider"])
    with daemon_running(
        kubeconfig,
        None,
        real_node,
        tmp_path / "daemon",
        chain_section={
            "kind": "akash",
            "akash": {"rpc": chain.rpc, "rest": chain.rest, "chain_id": chain.chain_id, "key_file": str(key_file)},
        },
        tls=tls_files(tmp_path),
        deploy_extra={"withdrawal_period_seconds": 2},
        # the bid deposit in uakt (fees are too), so the provider's uact balance moves only by what leases pay
        extra={"bidding": {"deposit": {"denom": "uakt", "amount": 500000}}},
    ) as d:
        yield d


def until(check: Any, what: str, daemon: Daemon, timeout: float = WAIT) -> Any:
    """wait_for, failing at once with the daemon's log when the daemon has exited."""

    def alive_and(check_: Any = check) -> Any:
        assert daemon.proc is not None and daemon.proc.poll() is None, f"the daemon exited:\n{daemon.logs()[-3000:]}"
        return check_()

    try:
        return wait_for(alive_and, timeout, what)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{daemon.logs()[-3000:]}") from None


def tenant_cli(chain: DevnetState, key_file: Path, ca: Path, *args: str) -> Any:
    """Our tenant CLI with the tenant's Akash key (ES256K tokens), trusting the provider's CA; its JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", "provider.cli", "tenant", "--chain-kind", "akash", "--akash-rpc", chain.rpc,
         "--akash-rest", chain.rest, "--key-file", str(key_file), *args],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
        env={**os.environ, "SSL_CERT_FILE": str(ca)},
    )  # fmt: skip
    assert proc.returncode == 0, f"tenant {' '.join(args)} failed: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


WITHDRAWALS = "message.sender='{}' AND message.action='/akash.market.v1beta5.MsgWithdrawLease'"


def withdrawals(devnet: AkashDevnet, chain: DevnetState) -> int:
    """uact the provider received from its own MsgWithdrawLease transactions (the chain's tx index)."""
    provider, total = chain.keys["provider"], 0
    for response in devnet.txs(chain, WITHDRAWALS.format(provider)):
        if int(response.get("code", 0)):
            continue
        for e in response["events"]:
            attrs = {a["key"]: a["value"] for a in e["attributes"]}
            if e["type"] == "coin_received" and attrs.get("receiver") == provider:
                amount = attrs["amount"]
                assert amount.endswith("uact"), amount
                total += int(amount.removesuffix("uact"))
    return total


def test_an_akash_lease_from_the_cli_runs_on_the_real_node_pays_and_goes_away(
    devnet: AkashDevnet, chain: DevnetState, daemon: Daemon, real_node: dict[str, Any], api: client.ApiClient,
    tmp_path: Path,
) -> None:  # fmt: skip
    core = client.CoreV1Api(api)
    provider, tenant = chain.keys["provider"], chain.keys["tenant"]
    tenant_key = secret_file(tmp_path / "tenant.key", chain.mnemonics["tenant"])
    assert daemon.tls is not None and daemon.url.startswith("https://")
    ca = daemon.tls[2]
    sdl_file = tmp_path / "lease.yaml"
    sdl_file.write_text(gpu_sdl(real_node["busybox"], model="h200"))
    version = sdl.parse(sdl_file.read_bytes()).version
    uact_before = devnet.balance(chain, provider, "uact")

    # the tenant deploys with Akash's CLI; our daemon bids with a real transaction
    created = devnet.tx(chain, "tenant", "deployment", "create", str(sdl_file), "--deposit", "50000000uact")
    event = next(e for e in created["events"] if e["type"] == "akash.deployment.v1.EventDeploymentCreated")
    attrs = {a["key"]: a["value"] for a in event["attributes"]}
    dseq = int(json.loads(attrs["id"])["dseq"])
    assert base64.b64decode(json.loads(attrs["hash"])) == version  # the chain holds the SDL's version

    def our_bid() -> Any:
        found = devnet._get(
            f"{chain.rest}/akash/market/v1beta5/bids/list?filters.provider={provider}&filters.dseq={dseq}"
        )
        return (found or {}).get("bids")

    (bid,) = until(our_bid, "our bid", daemon)
    assert bid["bid"]["state"] == "open" and bid["bid"]["price"]["denom"] == "uact"

    # the tenant leases with Akash's CLI, then sends the manifest with our CLI and its Akash key
    devnet.tx(chain, "tenant", "market", "lease", "create", "--dseq", str(dseq), "--gseq", "1", "--oseq", "1",
              "--provider", provider)  # fmt: skip
    sent = until(
        lambda: _try(lambda: tenant_cli(chain, tenant_key, ca, "send-manifest", str(dseq), str(sdl_file))),
        "the manifest to be accepted",
        daemon,
        timeout=60,
    )
    assert sent == {"sent": [f"{daemon.url}/deployment/{dseq}/manifest"]}

    status = until(
        lambda: _ready(tenant_cli(chain, tenant_key, ca, "lease-status", f"{dseq}/1/1")),
        "the lease to be ready",
        daemon,
    )
    assert status["services"]["app"]["available"] == 1 and status["errors"] == []
    lease_id = BidId(OrderId(tenant, dseq, 1, 1), provider)
    ns = namespace_for(lease_id)
    (pod,) = core.list_namespaced_pod(ns).items
    assert pod.spec.node_name == real_node["name"]
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"

    # escrow pays the lease; our periodic withdrawals move it to the provider, to the unit
    until(lambda: withdrawals(devnet, chain) > 0 and devnet.balance(chain, provider, "uact") > uact_before,
          "a withdrawal", daemon)  # fmt: skip
    until(lambda: _withdrawn_twice(devnet, chain), "a second withdrawal", daemon, timeout=60)
    deadline = time.monotonic() + 30
    while True:  # read both sides between two withdrawals (each takes a block to land)
        paid = withdrawals(devnet, chain)
        balance = devnet.balance(chain, provider, "uact")
        payments = devnet._get(f"{chain.rest}/akash/escrow/v1/types/payments?xid=deployment/{tenant}/{dseq}")
        if paid == withdrawals(devnet, chain) or time.monotonic() > deadline:
            break
    assert balance - uact_before == paid
    (payment,) = (payments or {})["payments"]
    assert int(payment["state"]["withdrawn"]["amount"].split(".")[0]) == paid  # the escrow's own count
    assert payment["state"]["owner"] == provider

    # the tenant closes with Akash's CLI: the lease closes on chain and the namespace goes
    devnet.tx(chain, "tenant", "deployment", "close", "--dseq", str(dseq))

    until(lambda: namespace_gone(core, ns), "the lease's namespace to go", daemon)
    lease = devnet._get(
        f"{chain.rest}/akash/market/v1beta5/leases/info?id.owner={tenant}&id.dseq={dseq}&id.gseq=1&id.oseq=1"
        f"&id.provider={provider}"
    )
    assert lease["lease"]["state"] == "closed"
    assert "lease earnings withdrawn" in daemon.logs()


def namespace_gone(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
    except client.ApiException as e:
        return bool(e.status == 404)
    return False


def _try(call: Any) -> Any:
    try:
        return call()
    except AssertionError:
        return None  # the daemon has not seen the lease yet: the provider refuses the manifest until it has


def _ready(status: Any) -> Any:
    return status if status.get("state") == "ready" else None


def _withdrawn_twice(devnet: AkashDevnet, chain: DevnetState) -> bool:
    return len(devnet.txs(chain, WITHDRAWALS.format(chain.keys["provider"]))) >= 2
