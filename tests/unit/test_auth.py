"""Token verification with tokens minted by joserfc (independent of our PyJWT signing), the grants a
token carries, and the public-key cache: an unknown issuer costs one chain lookup."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from provider.api.auth import AuthError, ChainKeyVerifier, PublicKeys, Target, mint
from provider.chain.keys import Key
from tests.jose import jose_token

TENANT = Key.generate("tenant")
PROVIDER = "gp1" + "c" * 40


def _verifier(known: dict[str, bytes]) -> tuple[ChainKeyVerifier, PublicKeys]:
    async def lookup(address: str) -> bytes | None:
        return known.get(address)

    keys = PublicKeys(lookup)
    return ChainKeyVerifier(keys), keys


def _verify(token: str, known: dict[str, bytes] | None = None) -> Any:
    v, _ = _verifier(known if known is not None else {TENANT.address: TENANT.public_bytes})
    return asyncio.run(v.verify(token))


def test_a_valid_joserfc_token_verifies() -> None:
    who = _verify(jose_token(TENANT))
    assert who.address == TENANT.address and who.allows(PROVIDER, Target("status", 1, 1, 1))


def test_our_own_minted_token_verifies() -> None:
    assert _verify(mint(TENANT.private, TENANT.address, scope=["status"])).address == TENANT.address


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": -120}, "expired"),  # times are seconds from now, taken when the test runs
        ({"nbf": 600, "exp": 800}, "not valid yet"),
        ({"exp": 3600}, "lifetime"),
        ({"version": "v2"}, "schema"),
        ({"leases": {"access": "scoped"}}, "schema"),
        ({"leases": {"access": "full"}, "extra": 1}, "schema"),
    ],
)
def test_bad_claims_are_refused(overrides: dict[str, Any], message: str) -> None:
    now = int(time.time())
    claims = {k: now + v if k in ("exp", "nbf") else v for k, v in overrides.items()}
    with pytest.raises(AuthError, match=message):
        _verify(jose_token(TENANT, **claims))


def test_a_forged_token_is_refused() -> None:
    other = Key.generate("other")
    with pytest.raises(AuthError, match="signature"):
        _verify(jose_token(other, iss=TENANT.address))


def test_an_unknown_issuer_costs_one_lookup() -> None:
    v, keys = _verifier({})
    token = jose_token(Key.generate("stranger"))

    async def go() -> None:
        for _ in range(5):
            with pytest.raises(AuthError, match="no public key"):
                await v.verify(token)

    asyncio.run(go())
    assert keys.lookups == 1


def test_granular_grants() -> None:
    grants = {
        "access": "granular",
        "permissions": [
            {
                "provider": PROVIDER,
                "access": "granular",
                "deployments": [{"dseq": 5, "scope": ["logs"], "services": ["web"]}],
            }
        ],
    }
    who = _verify(jose_token(TENANT, leases=grants))
    assert who.allows(PROVIDER, Target("logs", 5, 1, 1))
    assert not who.allows(PROVIDER, Target("status", 5, 1, 1))
    assert not who.allows(PROVIDER, Target("logs", 6, 1, 1))
    assert not who.allows("gp1" + "d" * 40, Target("logs", 5, 1, 1))
    assert who.services(PROVIDER, Target("logs", 5, 1, 1)) == frozenset({"web"})


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    async def lookup(address: str) -> bytes | None:
        return TENANT.public_bytes if address == TENANT.address else None

    verifier = ChainKeyVerifier(PublicKeys(lookup), skew=0)
    checks = []
    real = verifier._verify

    async def counted(token: str) -> Any:
        checks.append(token)
        return await real(token)

    monkeypatch.setattr(verifier, "_verify", counted)
    now = int(time.time())
    token = jose_token(TENANT, iat=now, nbf=now, exp=now + 2)
    for _ in range(3):
        assert asyncio.run(verifier.verify(token)).address == TENANT.address
    assert len(checks) == 1  # one signature check for three requests
    time.sleep(max(0.0, now + 2.2 - time.time()))
    # past its expiry the remembered token is checked again, and refused
    with pytest.raises(AuthError, match="expired"):
        asyncio.run(verifier.verify(token))
    assert len(checks) == 2
