"""Account keys (ed25519) and signed transactions for the market, plus the local keyring file.

A transaction is signed over the canonical JSON of {chain_id, account, sequence, type, msg}: changing
any byte breaks the signature, and the strictly increasing per-account sequence makes a replay fail.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from provider.errors import ProviderError
from provider.files import write_private

ADDRESS_PREFIX = "gp1"


def address_of(public_key: bytes) -> str:
    """An account address: prefix + the first 20 bytes of sha256(public key), hex."""
    return ADDRESS_PREFIX + hashlib.sha256(public_key).digest()[:20].hex()


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_bytes(chain_id: str, account: str, sequence: int, tx_type: str, msg: Any) -> bytes:
    return canonical({"chain_id": chain_id, "account": account, "sequence": sequence, "type": tx_type, "msg": msg})


@dataclass(frozen=True)
class Key:
    name: str
    private: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Key:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> Key:
        return cls(name, Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest()))

    @property
    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def address(self) -> str:
        return address_of(self.public_bytes)

    def seed_bytes(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    def sign_tx(self, chain_id: str, sequence: int, tx_type: str, msg: Any) -> dict[str, Any]:
        try:
            signed = sign_bytes(chain_id, self.address, sequence, tx_type, msg)
        except UnicodeEncodeError as e:  # a lone surrogate: text that has no UTF-8 form
            raise SignatureError(
                f"cannot sign a {tx_type} transaction: it holds text with no UTF-8 form ({e})"
            ) from None
        signature = self.private.sign(signed)
        return {
            "account": self.address,
            "pubkey": base64.b64encode(self.public_bytes).decode(),
            "sequence": sequence,
            "type": tx_type,
            "msg": msg,
            "signature": base64.b64encode(signature).decode(),
        }


class SignatureError(ValueError):
    pass


class KeyringError(ProviderError):
    """A key is missing or already exists; the message says which and where."""


def verify_tx(chain_id: str, tx: dict[str, Any]) -> str:
    """Check a signed transaction's key, address and signature; returns the signer's address."""
    try:
        pub = base64.b64decode(tx["pubkey"], validate=True)
        sig = base64.b64decode(tx["signature"], validate=True)
        account, sequence, tx_type, msg = tx["account"], tx["sequence"], tx["type"], tx["msg"]
    except (KeyError, ValueError, TypeError) as e:
        raise SignatureError(f"malformed transaction: {e}") from None
    if not isinstance(sequence, int) or not isinstance(account, str) or not isinstance(tx_type, str):
        raise SignatureError("malformed transaction: account, sequence and type are required")
    if len(pub) != 32 or address_of(pub) != account:
        raise SignatureError("the public key does not belong to the signing account")
    try:
        signed = sign_bytes(chain_id, account, sequence, tx_type, msg)
    except (ValueError, TypeError, RecursionError) as e:  # e.g. a lone surrogate: text that has no UTF-8 form
        raise SignatureError(
            f"malformed transaction: text that cannot be encoded as UTF-8 ({e.__class__.__name__})"
        ) from None
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, signed)
    except InvalidSignature:
        raise SignatureError("bad signature: the transaction was not signed by this account or was altered") from None
    return account


class Keyring:
    """Named keys in a local JSON file: the file 0600 in a 0700 directory, written atomically.

    A write takes an exclusive lock (a ``.lock`` file beside the keyring), writes a fresh temporary
    file made with ``mkstemp`` in the same directory and set to 0600 before a byte is written, fsyncs
    it and renames it over the keyring, so a crash or a concurrent writer never leaves a partial or
    world-readable file, and a stale temporary file is never reused.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError):
            raise KeyringError(f"{self.path}: not a keyring file (invalid JSON)") from None
        if not isinstance(data, dict):
            raise KeyringError(f"{self.path}: not a keyring file")
        return {str(k): str(v) for k, v in data.items()}

    def names(self) -> list[str]:
        return sorted(self._load())

    def get(self, name: str) -> Key:
        keys = self._load()
        if name not in keys:
            raise KeyringError(
                f"no key named {name!r} in {self.path}; create it with: gpu-provider tenant keys add {name}"
            )
        try:
            seed = base64.b64decode(keys[name], validate=True)
            return Key(name, Ed25519PrivateKey.from_private_bytes(seed))
        except ValueError:
            raise KeyringError(f"{self.path}: key {name!r} is not a base64 ed25519 seed") from None

    def add(self, name: str, key: Key | None = None) -> Key:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _locked(directory / (self.path.name + ".lock")):
            keys = self._load()
            if name in keys:
                raise KeyringError(f"a key named {name!r} already exists in {self.path}")
            key = key or Key.generate(name)
            keys[name] = base64.b64encode(key.seed_bytes()).decode()
            write_private(self.path, json.dumps(keys, indent=2).encode())
        return key


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
