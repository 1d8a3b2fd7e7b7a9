"""Exact money: the 18-decimal fixed point, and the mock chain's escrow conserving every unit."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sdl
from provider.chain.keys import Key
from provider.chain.mock.state import Chain, ChainParams, TxError
from provider.money import ZERO, Dec, MoneyError
from tests.conftest import REPO


@pytest.mark.parametrize(
    "text,atto",
    [
        ("0", 0),
        ("12", 12 * 10**18),
        ("0.5", 5 * 10**17),
        ("-3.000001", -3_000_001 * 10**12),
        ("1." + "0" * 17 + "1", 10**18 + 1),
    ],
)
def test_parse_is_exact(text: str, atto: int) -> None:
    assert Dec.parse(text).atto == atto
    assert Dec.parse(str(Dec.parse(text))) == Dec.parse(text)


@pytest.mark.parametrize(
    "bad", ["1e30", "NaN", "inf", "1.0000000000000000001", "", " ", "1,5", "0x10", 1.5, True, None]
)
def test_parse_refuses_what_is_not_an_exact_amount(bad: object) -> None:
    with pytest.raises(MoneyError):
        Dec.parse(bad)


def test_huge_amounts_stay_exact() -> None:
    # a context-precision Decimal (28 digits) would round this sum; the fixed point never does
    a = Dec.parse("12345678901234567890123.123456789012345678")
    b = Dec.parse("0.000000000000000001")
    assert str(a + b) == "12345678901234567890123.123456789012345679"
    assert (a + b - a) == b
    assert Dec.parse("1").legacy() == "1.000000000000000000"


@given(st.integers(-(10**40), 10**40), st.integers(-(10**40), 10**40), st.integers(0, 10**6))
def test_arithmetic_matches_exact_rationals(x: int, y: int, n: int) -> None:
    a, b = Dec(x), Dec(y)
    assert (a + b).to_fraction() == a.to_fraction() + b.to_fraction()
    assert (a - b).to_fraction() == a.to_fraction() - b.to_fraction()
    assert a.times(n).to_fraction() == a.to_fraction() * n
    q = Dec.from_fraction(Fraction(x, max(1, abs(y))), 6, "ceiling")
    exact = Fraction(x, 10**18) / Fraction(max(1, abs(y)), 10**18)
    assert q.to_fraction() >= exact and q.to_fraction() - exact < Fraction(1, 10**6)


def test_from_decimal_rounds_only_when_asked() -> None:
    assert Dec.from_decimal(Decimal("1E+3")) == Dec.parse(1000)
    with pytest.raises(MoneyError):
        Dec.from_decimal(Decimal("0." + "0" * 18 + "1"))
    assert Dec.from_decimal(Decimal("0." + "0" * 18 + "1"), "ceiling") == Dec(1)
    with pytest.raises(MoneyError):
        Dec.from_decimal(Decimal("1E+1000"))


# -- escrow conservation -----------------------------------------------------------------------

EXAMPLE = sdl.parse((REPO / "sdl/examples/llm-inference.yaml").read_bytes())


def _deployment(dseq: int, price: str, deposit: str) -> dict[str, Any]:
    groups = EXAMPLE.groups_json()
    groups[0]["resources"][0]["price"] = {"denom": "uact", "amount": price}
    return {
        "dseq": dseq,
        "groups": groups,
        "version": EXAMPLE.version.hex(),
        "deposit": {"denom": "uact", "amount": deposit},
    }


class Signer:
    def __init__(self, chain: Chain, key: Key) -> None:
        self.chain, self.key, self.seq = chain, key, 0

    def __call__(self, tx_type: str, msg: dict[str, Any]) -> dict[str, Any] | None:
        self.seq += 1
        try:
            return self.chain.submit(self.key.sign_tx(self.chain.params.chain_id, self.seq, tx_type, msg))
        except TxError:
            return None


prices = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(5000), places=6).map(str)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("deploy"), prices, st.integers(500_000, 3_000_000).map(str)),
        st.tuples(st.just("accept"), st.integers(0, 5)),
        st.tuples(st.just("withdraw"), st.integers(0, 5)),
        st.tuples(st.just("close"), st.integers(0, 5)),
        st.tuples(st.just("provider_close"), st.integers(0, 5)),
        st.tuples(st.just("blocks"), st.integers(1, 40)),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
def test_escrow_in_equals_paid_out_plus_refunded(tmp_path: Path, flow: list[tuple[Any, ...]]) -> None:
    """Over any flow of deployments, bids, leases, withdrawals, closes and blocks: every unit the tenant
    put in escrow is either with the provider (withdrawn or unsettled) or refunded, to the last unit."""
    db = tmp_path / f"chain-{abs(hash(str(flow)))}.sqlite"
    chain = Chain(db, ChainParams(bid_timeout_blocks=30))
    tenant, provider = Signer(chain, Key.generate("t")), Signer(chain, Key.generate("p"))
    start = Dec.parse(10**12)
    chain.fund(tenant.key.address, "uact", start)
    chain.fund(provider.key.address, "uakt", Dec.parse(10**9))
    provider("provider.create", {"attributes": {}, "host_uri": "https://p"})
    deposited = ZERO
    dseqs: list[int] = []
    try:
        for step in flow:
            kind = step[0]
            if kind == "deploy":
                dseq = len(dseqs) + 1
                if tenant("deployment.create", _deployment(dseq, step[1], step[2])) is not None:
                    dseqs.append(dseq)
                    deposited += Dec.parse(step[2])
                    order = {"owner": tenant.key.address, "dseq": dseq, "gseq": 1, "oseq": 1}
                    provider("bid.create", {"order": order, "price": {"denom": "uact", "amount": step[1]},
                                            "deposit": {"denom": "uakt", "amount": "500000"}})  # fmt: skip
            elif dseqs:
                dseq = dseqs[step[1] % len(dseqs)] if kind != "blocks" else 0
                lease = {
                    "owner": tenant.key.address,
                    "dseq": dseq,
                    "gseq": 1,
                    "oseq": 1,
                    "provider": provider.key.address,
                }
                if kind == "accept":
                    tenant("lease.create", {"bid": lease})
                elif kind == "withdraw":
                    provider("lease.withdraw", {"lease": lease})
                elif kind == "close":
                    tenant("deployment.close", {"dseq": dseq})
                elif kind == "provider_close":
                    provider(
                        "bid.close",
                        {"order": {k: lease[k] for k in ("owner", "dseq", "gseq", "oseq")}, "reason": "test"},
                    )
                else:
                    chain.advance(step[1])
        tenant_now = Dec.parse(chain.balances(tenant.key.address).get("uact", "0"))
        provider_now = Dec.parse(chain.balances(provider.key.address).get("uact", "0"))
        in_escrow = ZERO
        unsettled = ZERO
        for dseq in dseqs:
            dep = chain.deployment(tenant.key.address, dseq)
            assert dep is not None
            in_escrow += Dec.parse(dep["escrow"]["amount"])
        for row in chain.query("leases", {"owner": tenant.key.address}, "", 1000)[0]:
            unsettled += Dec.parse(row["unsettled"])
        spent = start - tenant_now  # what left the tenant: escrow still held + paid to the provider
        assert spent == in_escrow + provider_now + unsettled
        assert deposited >= spent  # refunds came back exactly
    finally:
        chain.close()
