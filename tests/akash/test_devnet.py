"""The Akash devnet runs Akash's own node (v2.0.1 from source): it makes blocks, its keys hold AKT and
ACT (minted through the oracle price and the BME vault), and a GPU SDL deployed with the real `akash`
CLI becomes an open order on chain with its GPU requirement, as the bid engine will see it."""

from __future__ import annotations

import base64
import json
import time

import pytest

import sdl
from provider.devcluster.akash import AkashDevnet, DevnetState
from tests.conftest import REPO

pytestmark = pytest.mark.akash

GPU_SDL = REPO / "sdl" / "examples" / "llm-inference.yaml"  # one H100 80GB SXM, priced in uact


def test_it_is_akashs_own_node_making_one_second_blocks(devnet: AkashDevnet, chain: DevnetState) -> None:
    assert devnet.akash(chain, "version").strip() == "2.0.1"
    first = devnet.height(chain)
    time.sleep(3)
    assert devnet.height(chain) >= first + 2
    status = devnet.status()
    assert status["running"] and status["chain_id"] == chain.chain_id
    for url in (status["rpc"], status["rest"]):
        assert url.startswith("http://127.0.0.1:")


def test_the_provider_and_the_tenant_hold_akt_and_act(devnet: AkashDevnet, chain: DevnetState) -> None:
    for name in ("provider", "tenant"):
        address = chain.keys[name]
        assert address.startswith("akash1")
        assert devnet.balance(chain, address, "uakt") > 1_000_000_000
        assert devnet.balance(chain, address, "uact") > 0, f"no ACT for the {name}"


def test_a_gpu_sdl_deployed_with_the_akash_cli_is_an_open_order(devnet: AkashDevnet, chain: DevnetState) -> None:
    result = devnet.tx(chain, "tenant", "deployment", "create", str(GPU_SDL), "--deposit", "5000000uact")
    created = [e for e in result["events"] if e["type"] == "akash.deployment.v1.EventDeploymentCreated"]
    assert created, result["events"]
    attrs = {a["key"]: a["value"] for a in created[0]["attributes"]}
    dseq = json.loads(attrs["id"])["dseq"]
    # the chain's version hash of the SDL is the one our SDL library computes (what manifests are checked by)
    assert base64.b64decode(json.loads(attrs["hash"])) == sdl.parse(GPU_SDL.read_bytes()).version
    orders = devnet._get(
        f"{chain.rest}/akash/market/v1beta5/orders/list?filters.owner={chain.keys['tenant']}&filters.dseq={dseq}"
    )
    assert orders is not None
    (order,) = orders["orders"]
    assert order["state"] == "open"
    (unit,) = order["spec"]["resources"]
    assert unit["resource"]["gpu"]["units"]["val"] == "1"
    gpu_attrs = {a["key"]: a["value"] for a in unit["resource"]["gpu"]["attributes"]}
    assert gpu_attrs == {"vendor/nvidia/model/h100/ram/80Gi/interface/sxm": "true"}
    assert unit["price"]["denom"] == "uact"
