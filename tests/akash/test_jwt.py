"""Tenant JWTs minted by Akash's own signer (chain-sdk go/util/jwt, built by hack/akash-jwt/build.sh),
verified by the provider's verifier against the tenant's public key as Akash's node serves it: our
verifier is checked against Akash's signer and Akash's chain, not against itself."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from typing import Any

import pytest

from provider.api.auth import AuthError, PublicKeys, Tenant
from provider.chain.akash.chain import AkashChain
from provider.chain.akash.jwt import AkashTokenVerifier
from provider.devcluster.akash import DevnetState
from tests.conftest import REPO

pytestmark = pytest.mark.akash


@pytest.fixture(scope="session")
def akash_jwt() -> str:
    proc = subprocess.run(
        ["bash", str(REPO / "hack" / "akash-jwt" / "build.sh")], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"Akash's JWT signer did not build:\n{proc.stderr[-3000:]}", pytrace=False)
    return proc.stdout.strip().splitlines()[-1]


def mint(tool: str, mnemonic: str, alg: str, claims: dict[str, Any]) -> str:
    request = json.dumps({"mnemonic": mnemonic, "claims": claims})
    proc = subprocess.run([tool, alg], input=request, capture_output=True, text=True, check=True, timeout=60)
    return proc.stdout.strip()


def claims(iss: str, lifetime: int = 300, age: int = 0) -> dict[str, Any]:
    now = int(time.time()) - age
    return {"iss": iss, "iat": now, "nbf": now, "exp": now + lifetime, "version": "v1", "leases": {"access": "full"}}


def verify(chain: DevnetState, token: str) -> Tenant:
    async def go() -> Tenant:
        adapter = AkashChain(chain.rest, chain.rpc)
        try:
            return await AkashTokenVerifier(PublicKeys(adapter.account_public_key)).verify(token)
        finally:
            await adapter.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("alg", ["ES256K", "ES256KADR36"])
def test_tokens_from_akashs_signer_verify_against_the_chains_key(akash_jwt: str, chain: DevnetState, alg: str) -> None:
    tenant = chain.keys["tenant"]
    token = mint(akash_jwt, chain.mnemonics["tenant"], alg, claims(tenant))
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "==")) == {"alg": alg, "typ": "JWT"}
    verified = verify(chain, token)
    assert verified.address == tenant and verified.claims.leases.access == "full"
    # the tenant's key signing claims that name another account: refused against that account's key
    with pytest.raises(AuthError, match="signature does not match"):
        verify(chain, mint(akash_jwt, chain.mnemonics["tenant"], alg, claims(chain.keys["provider"])))
    with pytest.raises(AuthError, match="expired"):
        verify(chain, mint(akash_jwt, chain.mnemonics["tenant"], alg, claims(tenant, lifetime=60, age=600)))
