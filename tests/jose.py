"""Tokens for the provider API minted by joserfc, a JOSE implementation independent of our own signing code."""

from __future__ import annotations

import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from joserfc import jwt as jose_jwt
from joserfc.jwk import OKPKey

from provider.chain.keys import Key


def jose_token(key: Key, claims: dict[str, Any] | None = None, **overrides: Any) -> str:
    """A token minted by joserfc (an independent JOSE implementation), signed with ``key``."""
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": key.address,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "version": "v1",
        "leases": {"access": "full"},
    }
    body.update(claims or {})
    body.update(overrides)
    jwk = OKPKey.import_key(_pem(key))
    return jose_jwt.encode({"alg": "EdDSA"}, body, jwk, algorithms=["EdDSA"])


def _pem(key: Key) -> bytes:
    return key.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
