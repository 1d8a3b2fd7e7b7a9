"""Akash tenants' JWTs (chain-sdk's go/util/jwt): signed with the account's secp256k1 key, either

- ``ES256K``: the 64-byte r||s signature over sha256 of ``header.payload`` (what `provider-services`
  and the Akash CLI make), or
- ``ES256KADR36``: the same key signing an ADR-36 off-chain document that wraps ``header.payload``
  (what Keplr, Leap and Akash Console make: wallets sign only that document), namely the amino JSON
  sign doc with one ``sign/MsgSignData`` message whose ``data`` is base64(``header.payload``) and whose
  ``signer`` is the account, chain id "", zero account number, sequence and fee, keys sorted.

Verified against the issuer's public key on chain, low-S only, as Cosmos' ``VerifySignature``. Checked
against the tokens in chain-sdk's own test data (tests/unit/test_akash_parts.py).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt

from provider.api.auth import REQUIRED_CLAIMS, ChainKeyVerifier
from provider.chain.akash.keys import AkashKey, verify

ES256K = "ES256K"
ES256KADR36 = "ES256KADR36"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def adr36_document(signer: str, data: bytes) -> bytes:
    """The bytes a wallet signs for ADR-36 ``data`` from ``signer`` (sorted, compact amino JSON)."""
    doc = {
        "account_number": "0",
        "chain_id": "",
        "fee": {"amount": [], "gas": "0"},
        "memo": "",
        "msgs": [{"type": "sign/MsgSignData", "value": {"data": base64.b64encode(data).decode(), "signer": signer}}],
        "sequence": "0",
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_message(alg: str, signer: str, signing_input: bytes) -> bytes:
    """What the key signed (sha256 is applied by the signature): the JWS input, or its ADR-36 wrapping."""
    if alg == ES256KADR36:
        return adr36_document(signer, signing_input)
    if alg == ES256K:
        return signing_input
    raise ValueError(f"not an Akash JWT algorithm: {alg!r}")


def verify_signature(token: str, public_key: bytes, signer: str) -> bool:
    """Whether ``token``'s signature is ``signer``'s (public key ``public_key``), by its header's alg."""
    try:
        signing_input, _, signature = token.rpartition(".")
        alg = jwt.get_unverified_header(token).get("alg")
        message = signed_message(str(alg), signer, signing_input.encode())
        return verify(public_key, message, _unb64url(signature))
    except (ValueError, jwt.PyJWTError):
        return False


def sign(key: AkashKey, claims: dict[str, Any], alg: str = ES256K) -> str:
    """A token signed by ``key`` (for our tenant CLI and tests; Akash's own signer mints theirs)."""
    header = _b64url(json.dumps({"alg": alg, "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}"
    return f"{signing_input}.{_b64url(key.sign(signed_message(alg, key.address, signing_input.encode())))}"


def mint(key: AkashKey, scope: list[str] | None = None, lifetime: int = 300, alg: str = ES256K) -> str:
    """A v1 token for ``key``'s own leases: full access, or the given scopes."""
    now = int(time.time())
    leases = {"access": "full"} if scope is None else {"access": "scoped", "scope": scope}
    claims = {"iss": key.address, "iat": now, "nbf": now, "exp": now + lifetime, "version": "v1", "leases": leases}
    return sign(key, claims, alg)


class AkashTokenVerifier(ChainKeyVerifier):
    """The provider API's verifier on Akash: ES256K and ES256KADR36 by the issuer's key on chain."""

    algorithms = (ES256K, ES256KADR36)

    def decode(self, token: str, raw: bytes, iss: str) -> dict[str, Any]:
        if not verify_signature(token, raw, iss):
            raise jwt.InvalidSignatureError("signature does not match")
        payload: dict[str, Any] = jwt.decode(
            token,
            options={
                "verify_signature": False,  # checked above, by the rules PyJWT does not know
                "verify_exp": True,
                "verify_nbf": True,
                "verify_iat": True,
                "require": list(REQUIRED_CLAIMS),
            },
            leeway=self.skew,
        )
        return payload
