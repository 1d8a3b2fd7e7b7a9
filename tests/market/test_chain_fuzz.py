"""Junk inside correctly signed transactions: the chain answers with a clear error, never a 500, and
keeps serving."""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provider.chain.keys import Key
from tests.market.conftest import ChainProcess

TYPES = [
    "provider.create",
    "audit.sign",
    "deployment.create",
    "deployment.close",
    "bid.create",
    "bid.close",
    "lease.create",
    "lease.close",
    "lease.withdraw",
    "nope",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=8), c, max_size=4)),
    max_leaves=12,
)
fields = st.sampled_from(
    [
        "dseq",
        "groups",
        "version",
        "deposit",
        "order",
        "price",
        "bid",
        "lease",
        "provider",
        "attributes",
        "host_uri",
        "reason",
        "amount",
        "denom",
    ]
)
msgs = st.dictionaries(fields, values, max_size=5)


def test_signed_junk_never_breaks_the_chain(chain_proc: ChainProcess) -> None:
    key = Key.generate("fuzzer")
    chain_id = httpx.get(chain_proc.url + "/status").json()["chain_id"]
    http = httpx.Client(base_url=chain_proc.url, timeout=10)
    state = {"sequence": 0}

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.sampled_from(TYPES), msgs)
    def one(tx_type: str, msg: dict[str, Any]) -> None:
        state["sequence"] += 1
        tx = key.sign_tx(chain_id, state["sequence"], tx_type, json.loads(json.dumps(msg)))
        r = http.post("/tx", json=tx)
        assert r.status_code < 500, r.text
        body = r.json()
        if r.status_code >= 400:
            assert body["code"] and body["message"]

    one()
    assert http.get("/status").status_code == 200
    http.close()


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))] + [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))] + [path]
    return [path]


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[head] = _replace(value[head], rest, new)
    return copy


def test_near_valid_deployments_never_break_the_chain(chain_proc: ChainProcess) -> None:
    import sdl
    from tests.conftest import REPO

    parsed = sdl.parse((REPO / "sdl/examples/llm-inference.yaml").read_bytes())
    base = {
        "dseq": 1,
        "groups": parsed.groups_json(),
        "version": parsed.version.hex(),
        "deposit": {"denom": "uact", "amount": "5000000"},
    }
    key = Key.generate("tenant")
    http = httpx.Client(base_url=chain_proc.url, timeout=10)
    http.post("/faucet", json={"address": key.address, "denom": "uact", "amount": "1000000000"})
    chain_id = http.get("/status").json()["chain_id"]
    paths = _leaves(base)
    state = {"sequence": 0, "dseq": 1}

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.sampled_from(paths), values)
    def one(path: tuple[Any, ...], junk: Any) -> None:
        state["sequence"] += 1
        state["dseq"] += 1
        msg = _replace({**base, "dseq": state["dseq"]}, path, junk)
        r = http.post(
            "/tx", json=key.sign_tx(chain_id, state["sequence"], "deployment.create", json.loads(json.dumps(msg)))
        )
        assert r.status_code < 500, r.text

    one()
    orders = http.get("/orders", params={"limit": 1000}).json()["items"]
    for order in orders:  # whatever was accepted is a readable order
        assert order["spec"]["resources"]
    http.close()


def test_junk_queries_get_clear_errors(chain_proc: ChainProcess) -> None:
    http = httpx.Client(base_url=chain_proc.url, timeout=10)
    for path, params in [
        ("/orders", {"after": "a/b/c/d"}),
        ("/orders", {"after": "x"}),
        ("/bids", {"after": "a/1/2/3"}),
        ("/leases", {"after": "1/2/3/4/5/6"}),
        ("/orders", {"limit": "-1"}),
        ("/orders", {"dseq": "ten"}),
        ("/events", {"after": "1:x"}),
        ("/events", {"wait": "999"}),
        ("/deployments/x/notanumber", {}),
        ("/providers/nobody", {}),
    ]:
        r = http.get(path, params=params)
        assert 400 <= r.status_code < 500, (path, params, r.status_code, r.text)
    assert http.get("/status").status_code == 200
    http.close()
