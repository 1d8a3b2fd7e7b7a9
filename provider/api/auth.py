"""Tenant authentication for the provider API: Akash's JWT (chain-sdk specs/jwt-schema.json), checked
against the issuer's public key on chain, and what a verified token allows.

The verifier is a port: ``ChainKeyVerifier`` takes the algorithms a chain's keys sign with (EdDSA for
the mock chain's ed25519 keys; the Akash adapter's ``AkashTokenVerifier`` brings ES256K and ES256KADR36). PyJWT does the JOSE work. A token
lives at most ``max_lifetime`` seconds (15 min unless the operator allows more), with at most 60 s of
clock skew. An unknown issuer costs at most one chain lookup per ``negative_ttl``: answers, found or
not, are cached.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from provider.errors import ProviderError

Scope = Literal[
    "send-manifest", "get-manifest", "logs", "shell", "events", "status", "restart", "hostname-migrate", "ip-migrate"
]
Access = Literal["full", "scoped", "granular"]
MAX_TOKEN_BYTES = 8192
MAX_SKEW = 60
REQUIRED_CLAIMS = ("iss", "iat", "nbf", "exp")
ADDRESS = re.compile(r"^[a-z][a-z0-9]{0,15}1[a-z0-9]{20,90}$")  # bech32 (akash1...) or the mock chain's gp1<hex>


class AuthError(ProviderError):
    """401: no token, or one that is not valid (the message says why, never echoing the token)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DeploymentGrant(_Strict):
    dseq: int = Field(ge=1)
    scope: list[Scope] = Field(min_length=1)
    gseq: int | None = Field(None, ge=0)
    oseq: int | None = Field(None, ge=0)
    services: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _nested(self) -> DeploymentGrant:
        if self.oseq is not None and self.gseq is None:
            raise ValueError("oseq needs gseq")
        return self


class ProviderGrant(_Strict):
    provider: str
    access: Access
    scope: list[Scope] | None = Field(None, min_length=1)
    deployments: list[DeploymentGrant] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> ProviderGrant:
        if self.access == "scoped" and not self.scope:
            raise ValueError("scoped access needs scope")
        if self.access == "granular" and not self.deployments:
            raise ValueError("granular access needs deployments")
        return self


class LeaseGrants(_Strict):
    access: Access
    scope: list[Scope] | None = Field(None, min_length=1)
    permissions: list[ProviderGrant] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> LeaseGrants:
        if self.access == "scoped" and not self.scope:
            raise ValueError("scoped access needs leases.scope")
        if self.access == "granular" and not self.permissions:
            raise ValueError("granular access needs leases.permissions")
        if self.permissions and len({p.provider for p in self.permissions}) != len(self.permissions):
            raise ValueError("a provider appears twice in leases.permissions")
        return self


class Claims(_Strict):
    iss: str = Field(pattern=ADDRESS.pattern)
    iat: int = Field(ge=0)
    nbf: int = Field(ge=0)
    exp: int = Field(ge=0)
    jti: str | None = Field(None, min_length=1)
    version: Literal["v1"]
    leases: LeaseGrants


@dataclass(frozen=True, slots=True)
class Target:
    """What a request touches: the scope it needs and the lease (or deployment) it names."""

    scope: Scope
    dseq: int
    gseq: int | None = None
    oseq: int | None = None


@dataclass(frozen=True, slots=True)
class Tenant:
    """A verified caller: its address and what its token grants on this provider."""

    address: str
    claims: Claims

    def allows(self, provider: str, target: Target) -> bool:
        grants = self.claims.leases
        if grants.access == "full":
            return True
        if grants.access == "scoped":
            return target.scope in (grants.scope or ())
        for p in grants.permissions or ():
            if p.provider != provider:
                continue
            if p.access == "full":
                return True
            if p.access == "scoped":
                return target.scope in (p.scope or ())
            return any(_grants(d, target) for d in p.deployments or ())
        return False

    def services(self, provider: str, target: Target) -> frozenset[str] | None:
        """The services a granular grant limits this target to (None: all of them)."""
        grants = self.claims.leases
        if grants.access != "granular":
            return None
        names: set[str] = set()
        for p in grants.permissions or ():
            if p.provider == provider and p.access == "granular":
                for d in p.deployments or ():
                    if _grants(d, target):
                        names.update(d.services)
            elif p.provider == provider:
                return None
        return frozenset(names)


def _grants(d: DeploymentGrant, t: Target) -> bool:
    return (
        d.dseq == t.dseq
        and t.scope in d.scope
        and (d.gseq is None or t.gseq is None or d.gseq == t.gseq)
        and (d.oseq is None or t.oseq is None or d.oseq == t.oseq)
    )


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Tenant:
        """The verified caller, or AuthError."""
        ...


KeyLookup = Callable[[str], Awaitable[bytes | None]]


class PublicKeys:
    """Account public keys from the chain, cached (found: ``ttl``; not found: ``negative_ttl``), bounded."""

    def __init__(self, lookup: KeyLookup, ttl: float = 600.0, negative_ttl: float = 30.0, size: int = 10_000) -> None:
        self.lookup = lookup
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.size = size
        self.lookups = 0  # chain lookups made (tests and metrics read it)
        self._cache: OrderedDict[str, tuple[float, bytes | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[bytes | None]] = {}

    async def get(self, address: str) -> bytes | None:
        now = time.monotonic()
        hit = self._cache.get(address)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(address)
            return hit[1]
        pending = self._inflight.get(address)
        if pending is not None:  # one lookup per address at a time, however many callers
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._inflight[address] = future
        try:
            self.lookups += 1
            key = await self.lookup(address)
            self._cache[address] = (now + (self.ttl if key else self.negative_ttl), key)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
            future.set_result(key)
            return key
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._inflight[address]


class ChainKeyVerifier:
    """Verifies tokens signed with the issuer's chain key (EdDSA over ed25519 on the mock chain)."""

    algorithms: tuple[str, ...] = ("EdDSA",)

    def __init__(
        self, keys: PublicKeys, max_lifetime: int = 900, skew: int = MAX_SKEW, cache_size: int = 10_000
    ) -> None:
        self.keys = keys
        self.max_lifetime = max_lifetime
        self.skew = min(skew, MAX_SKEW)
        # tokens already verified, until they expire: a client polling with one token pays for one
        # signature check, not one per request (the same string carries the same signature)
        self._verified: OrderedDict[str, Tenant] = OrderedDict()
        self._cache_size = cache_size

    def public_key(self, raw: bytes) -> Any:
        return Ed25519PublicKey.from_public_bytes(raw)

    def decode(self, token: str, raw: bytes, iss: str) -> dict[str, Any]:
        """The payload once the signature (by ``raw``, the key of account ``iss``) and the times check
        out; PyJWT's exceptions otherwise. Chains whose signatures PyJWT does not know override it."""
        payload: dict[str, Any] = jwt.decode(
            token,
            key=self.public_key(raw),
            algorithms=list(self.algorithms),
            leeway=self.skew,
            options={"require": list(REQUIRED_CLAIMS), "verify_aud": False},
        )
        return payload

    async def verify(self, token: str) -> Tenant:
        known = self._verified.get(token)
        if known is not None:
            if time.time() <= known.claims.exp + self.skew:
                self._verified.move_to_end(token)
                return known
            del self._verified[token]  # expired: verified again below, which says so
        tenant = await self._verify(token)
        self._verified[token] = tenant
        while len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return tenant

    async def _verify(self, token: str) -> Tenant:
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(f"token longer than {MAX_TOKEN_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("not a JWT (expected header.payload.signature)") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise AuthError(f"algorithm {alg!r} is not accepted here; sign with {', '.join(self.algorithms)}")
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not ADDRESS.match(iss):
            raise AuthError("iss must be the account address of the lease owner")
        raw = await self.keys.get(iss)
        if raw is None:
            raise AuthError(f"account {iss} has no public key on chain (it has never signed a transaction)")
        try:
            payload = self.decode(token, raw, iss)
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidSignatureError:
            raise AuthError("signature does not match the issuer's public key") from None
        except jwt.PyJWTError as e:
            raise AuthError(f"invalid token: {e}") from None
        except ValueError:
            raise AuthError("the issuer's public key on chain is not an ed25519 key") from None
        try:
            claims = Claims.model_validate(payload)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "claims"
            raise AuthError(f"claims do not follow Akash's JWT schema: {where}: {first['msg']}") from None
        if claims.exp - claims.iat > self.max_lifetime:
            raise AuthError(
                f"token lifetime {claims.exp - claims.iat}s is over the {self.max_lifetime}s this provider allows"
            )
        if not claims.nbf <= claims.exp:
            raise AuthError("nbf is after exp")
        return Tenant(claims.iss, claims)


def mint(
    private_key: Any,
    issuer: str,
    *,
    scope: list[str] | None = None,
    lifetime: int = 300,
    now: float | None = None,
    grants: dict[str, Any] | None = None,
) -> str:
    """A token for the tenant CLI: ``scope`` None means full access to every lease of ``issuer``."""
    t = int(now if now is not None else time.time())
    leases = grants or ({"access": "full"} if scope is None else {"access": "scoped", "scope": scope})
    claims = {"iss": issuer, "iat": t, "nbf": t, "exp": t + lifetime, "version": "v1", "leases": leases}
    return jwt.encode(claims, private_key, algorithm="EdDSA")
