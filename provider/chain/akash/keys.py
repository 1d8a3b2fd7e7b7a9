"""Akash account keys: secp256k1 from a BIP-39 mnemonic at Cosmos' path, bech32 ``akash`` addresses,
and the low-S compact signatures Cosmos SDK verifies.

The cryptography is libsecp256k1's (coincurve), BIP-39 is Trezor's ``mnemonic``, BIP-32 derivation is
``bip32`` and bech32 the reference ``bech32`` package. A key's ``repr`` never shows the private key.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import bech32
from bip32 import BIP32
from coincurve import PrivateKey, PublicKey
from mnemonic import Mnemonic

from provider.errors import ProviderError

PREFIX = "akash"
HD_PATH = "m/44'/118'/0'/0/0"  # Cosmos' coin type; what `akash keys add` derives
log = logging.getLogger(__name__)


class AkashKeyError(ProviderError):
    """A mnemonic, key or address that cannot be used; the message says why (never the key itself)."""


def _ripemd160(data: bytes) -> bytes:
    try:
        return hashlib.new("ripemd160", data).digest()
    except ValueError:  # OpenSSL 3 builds without the legacy provider: bip32's own implementation
        from bip32.ripemd160 import ripemd160

        digest: bytes = ripemd160(data)
        return digest


def bech32_address(raw: bytes, prefix: str = PREFIX) -> str:
    """A 20-byte account (or module) address in bech32 with the given prefix."""
    words = bech32.convertbits(raw, 8, 5)
    encoded = bech32.bech32_encode(prefix, words) if words is not None else None
    if not encoded:
        raise AkashKeyError(f"cannot encode {len(raw)} bytes as a bech32 address")
    return str(encoded)


def address_bytes(address: str, prefix: str = PREFIX) -> bytes:
    """The 20 bytes behind a bech32 address; AkashKeyError when it is not a valid ``prefix`` address."""
    hrp, words = bech32.bech32_decode(address)
    if hrp is None or words is None:
        raise AkashKeyError(f"{address!r} is not a bech32 address (bad characters or checksum)")
    if hrp != prefix:
        raise AkashKeyError(f"{address!r} is not an {prefix} address (prefix {hrp!r})")
    raw = bech32.convertbits(words, 5, 8, False)
    if raw is None or len(raw) != 20:
        raise AkashKeyError(f"{address!r} does not hold a 20-byte account address")
    return bytes(raw)


def address_of(public_key: bytes, prefix: str = PREFIX) -> str:
    """The account address of a compressed secp256k1 public key: ripemd160(sha256(key)), bech32."""
    return bech32_address(_ripemd160(hashlib.sha256(public_key).digest()), prefix)


@dataclass(frozen=True)
class AkashKey:
    name: str
    private: PrivateKey = field(repr=False)

    @classmethod
    def from_mnemonic(cls, name: str, words: str, passphrase: str = "", path: str = HD_PATH) -> AkashKey:
        text = " ".join(words.split())
        checker = Mnemonic("english")
        if not checker.check(text):
            raise AkashKeyError(
                f"key {name!r}: not a valid BIP-39 mnemonic ({len(text.split())} words; wrong word or checksum)"
            )
        seed = Mnemonic.to_seed(text, passphrase)
        try:
            secret: bytes = BIP32.from_seed(seed).get_privkey_from_path(path)
        except Exception as e:  # bip32 raises its own errors for a malformed path
            raise AkashKeyError(f"key {name!r}: cannot derive {path}: {e}") from None
        return cls(name, PrivateKey(secret))

    @classmethod
    def from_private_bytes(cls, name: str, secret: bytes) -> AkashKey:
        if len(secret) != 32:
            raise AkashKeyError(f"key {name!r}: a secp256k1 private key is 32 bytes, not {len(secret)}")
        try:
            return cls(name, PrivateKey(secret))
        except ValueError:
            raise AkashKeyError(f"key {name!r}: not a valid secp256k1 private key") from None

    @classmethod
    def generate(cls, name: str) -> tuple[AkashKey, str]:
        """A new key and its 24-word mnemonic (the only way to back it up)."""
        words = Mnemonic("english").generate(strength=256)
        return cls.from_mnemonic(name, words), words

    def secret_bytes(self) -> bytes:
        return bytes(self.private.secret)

    @property
    def public_bytes(self) -> bytes:
        """The 33-byte compressed public key (what Cosmos puts in a transaction's signer info)."""
        return bytes(self.private.public_key.format(compressed=True))

    @property
    def address(self) -> str:
        return address_of(self.public_bytes)

    def sign(self, message: bytes) -> bytes:
        """A 64-byte r||s signature over sha256(message), S in the lower half (libsecp256k1 always
        normalises it, and Cosmos SDK refuses the other half)."""
        return bytes(self.private.sign_recoverable(message)[:64])


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether a 64-byte r||s signature over sha256(message) is valid for this compressed key. A high-S
    signature is refused, as Cosmos SDK refuses it."""
    if len(signature) != 64:
        return False
    try:
        key = PublicKey(public_key)
        from coincurve.ecdsa import cdata_to_der, deserialize_compact

        return bool(key.verify(cdata_to_der(deserialize_compact(signature)), message))
    except (ValueError, TypeError):
        return False


ARMOR = "TENDERMINT PRIVATE KEY"
_AMINO_SECP256K1 = bytes.fromhex("e1b0f79b20")  # amino prefix of tendermint/PrivKeySecp256k1, then 32 bytes
# cosmos-sdk's export (crypto/armor.go): argon2id(passphrase, salt), then ChaCha20-Poly1305 with a zero nonce
_ARGON2 = {"time_cost": 1, "memory_cost": 64 * 1024, "parallelism": 4, "hash_len": 32}


def _crc24(data: bytes) -> int:
    """OpenPGP's CRC-24 (RFC 4880 6.1), the armor's checksum."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def from_armored(name: str, text: str, passphrase: str) -> AkashKey:
    """A key exported by `akash keys export` (ASCII armor, argon2id + ChaCha20-Poly1305)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 4 or lines[0] != f"-----BEGIN {ARMOR}-----" or lines[-1] != f"-----END {ARMOR}-----":
        raise AkashKeyError(f"key {name!r}: not an armored private key from `akash keys export`")
    try:
        blank = lines.index("")
        headers = dict(line.split(": ", 1) for line in lines[1:blank])
        body = [line for line in lines[blank + 1 : -1] if not line.startswith("=")]
        checksums = [line[1:] for line in lines[blank + 1 : -1] if line.startswith("=")]
        data = base64.b64decode("".join(body), validate=True)
        salt = bytes.fromhex(headers["salt"])
    except (ValueError, KeyError):
        raise AkashKeyError(f"key {name!r}: the armored key is malformed (headers, salt or body)") from None
    if checksums and base64.b64decode(checksums[0] + "=" * (-len(checksums[0]) % 4)) != _crc24(data).to_bytes(3, "big"):
        raise AkashKeyError(f"key {name!r}: the armored key's checksum does not match (damaged in copying?)")
    if headers.get("type", "secp256k1") != "secp256k1":
        raise AkashKeyError(f"key {name!r}: a {headers['type']} key; Akash accounts are secp256k1")
    if headers.get("kdf") != "argon2":
        raise AkashKeyError(
            f"key {name!r}: exported with the {headers.get('kdf')!r} KDF (an old Cosmos SDK); export it again "
            "with a current `akash keys export`, or use the mnemonic"
        )
    from argon2.low_level import Type, hash_secret_raw
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    secret = hash_secret_raw(passphrase.encode(), salt, type=Type.ID, **_ARGON2)
    try:
        plain = ChaCha20Poly1305(secret).decrypt(bytes(12), data, None)
    except InvalidTag:
        raise AkashKeyError(f"key {name!r}: wrong passphrase for the armored key") from None
    if len(plain) != 37 or not plain.startswith(_AMINO_SECP256K1):
        raise AkashKeyError(f"key {name!r}: the armored key does not hold a secp256k1 private key")
    return AkashKey.from_private_bytes(name, plain[5:])


def read_passphrase(path: Path) -> str:
    """An exported key's passphrase from a file (a mounted Secret), without its line end."""
    try:
        return path.read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise AkashKeyError(f"cannot read the passphrase file {path}: {e}") from None


def load_key_file(path: Path, name: str = "provider", passphrase: str | None = None) -> AkashKey:
    """The key in ``path``: a BIP-39 mnemonic (12 to 24 words), a 32-byte private key in hex, or a key from
    `akash keys export` (with its ``passphrase``), as a mounted Secret holds it. Errors name the file and
    what was wrong, never its content."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as e:
        raise AkashKeyError(f"cannot read the key file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise AkashKeyError(f"the key file {path} is not text (a mnemonic or a hex private key)") from None
    if mode & stat.S_IROTH:
        log.warning("the key file is readable by every user; make it 0600 (or 0440 with the group) file=%s", path)
    if text.startswith(f"-----BEGIN {ARMOR}-----"):
        if passphrase is None:
            raise AkashKeyError(f"the key file {path} is an exported (encrypted) key: give its passphrase too")
        try:
            return from_armored(name, text, passphrase)
        except AkashKeyError as e:
            raise AkashKeyError(f"the key file {path}: {e}") from None
    if re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", text):
        return AkashKey.from_private_bytes(name, bytes.fromhex(text.removeprefix("0x")))
    words = text.split()
    if len(words) not in (12, 15, 18, 21, 24):
        raise AkashKeyError(
            f"the key file {path} holds neither a 12-24 word mnemonic nor a 64-digit hex private key"
            f" ({len(words)} words)"
        )
    try:
        return AkashKey.from_mnemonic(name, text)
    except AkashKeyError:
        raise AkashKeyError(f"the key file {path}: not a valid BIP-39 mnemonic (wrong word or checksum)") from None
