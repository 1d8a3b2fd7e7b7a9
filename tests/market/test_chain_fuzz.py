"""Junk inside correctly signed transactions: the chain answers with a clear error, never a 500, and
keeps serving."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provider.chain.keys import Key, SignatureError
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
# any text, lone surrogates included (JSON can carry "\ud800"; it has no UTF-8 form)
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)
values = st.recursive(
    scalars,
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(any_text, c, max_size=4)),
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
        tx = sign_anything(key, chain_id, state["sequence"], tx_type, json.loads(json.dumps(msg)))
        r = http.post("/tx", content=json.dumps(tx), headers={"Content-Type": "application/json"})
        assert r.status_code < 500, r.text
        body = r.json()
        if r.status_code >= 400:
            assert body["code"] and body["message"]

    one()
    assert http.get("/status").status_code == 200
    http.close()


def sign_anything(key: Key, chain_id: str, sequence: int, tx_type: str, msg: Any) -> dict[str, Any]:
    """A signed transaction even when the message holds text with no UTF-8 form (signed over its
    surrogate-preserving bytes): the chain must refuse it with a 4xx, not fail with a 500."""
    try:
        return key.sign_tx(chain_id, sequence, tx_type, msg)
    except SignatureError:
        body = {"chain_id": chain_id, "account": key.address, "sequence": sequence, "type": tx_type, "msg": msg}
        raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
        tx = key.sign_tx(chain_id, sequence, tx_type, {})
        return {**tx, "msg": msg, "signature": base64.b64encode(key.private.sign(raw)).decode()}


def test_a_lone_surrogate_in_a_signed_transaction_is_a_4xx(chain_proc: ChainProcess) -> None:
    key = Key.generate("s")
    chain_id = httpx.get(chain_proc.url + "/status").json()["chain_id"]
    tx = sign_anything(key, chain_id, 1, "provider.create", {"host_uri": "https://x", "attributes": {"\ud800": "v"}})
    r = httpx.post(chain_proc.url + "/tx", content=json.dumps(tx), headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized" and "UTF-8" in r.json()["message"]


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
        msg = json.loads(json.dumps(_replace({**base, "dseq": state["dseq"]}, path, junk)))
        tx = sign_anything(key, chain_id, state["sequence"], "deployment.create", msg)
        # json.dumps escapes a lone surrogate; httpx's json= would try to encode it as UTF-8 and fail
        r = http.post("/tx", content=json.dumps(tx), headers={"Content-Type": "application/json"})
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
        ("/deployments/x/99999999999999999999", {}),  # out of SQLite's integer range
        ("/orders", {"dseq": "99999999999999999999"}),
        ("/events", {"after": "99999999999999999999:1"}),
        ("/orders", {"after": "o/99999999999999999999/1/1"}),
        ("/orders", {"after": "o/\u00b2/1/1"}),  # a unicode digit that int() accepts
    ]:
        r = http.get(path, params=params)
        assert 400 <= r.status_code < 500, (path, params, r.status_code, r.text)
    assert http.get("/status").status_code == 200
    http.close()


def test_request_bodies_are_bounded(chain_proc: ChainProcess) -> None:
    big = b'{"account": "' + b"a" * (2 << 20) + b'"}'
    r = httpx.post(chain_proc.url + "/tx", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["code"] == "body_too_large"

    def chunks() -> Any:  # no Content-Length: the limit still applies while reading
        for _ in range(40):
            yield b"x" * 65536

    r = httpx.post(chain_proc.url + "/tx", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert httpx.get(chain_proc.url + "/status").status_code == 200


def test_transaction_types_come_from_an_explicit_table(chain_proc: ChainProcess) -> None:
    key = Key.generate("t")
    chain_id = httpx.get(chain_proc.url + "/status").json()["chain_id"]
    for seq, alias in enumerate(("provider_create", "__init__", "_close_lease", "provider.create.x"), start=1):
        tx = key.sign_tx(chain_id, seq, alias, {"host_uri": "https://x", "attributes": {}})
        r = httpx.post(chain_proc.url + "/tx", json=tx)
        assert r.status_code == 400 and r.json()["code"] == "unknown_tx", (alias, r.text)


def test_too_many_groups_are_refused(chain_proc: ChainProcess) -> None:
    from tests.market.test_flow import deployment_msg

    key = Key.generate("t")
    httpx.post(chain_proc.url + "/faucet", json={"address": key.address, "denom": "uact", "amount": "100000000"})
    chain_id = httpx.get(chain_proc.url + "/status").json()["chain_id"]
    msg = deployment_msg(1, 5_000_000)
    msg["groups"] = msg["groups"] * 21
    r = httpx.post(chain_proc.url + "/tx", json=key.sign_tx(chain_id, 1, "deployment.create", msg))
    assert r.status_code == 400 and r.json()["code"] == "invalid_group" and "at most 20" in r.json()["message"]
