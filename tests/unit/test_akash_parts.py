"""The Akash adapter's pure parts: keys and addresses, the signed transaction's bytes, Akash's JSON in
our domain types, and refusals turned into stable codes. The devnet tests (tests/akash) check the same
parts against Akash's own node; these pin the details and the bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

import sdl
from provider.api.auth import AuthError, PublicKeys
from provider.app import build_chain
from provider.chain.akash import convert
from provider.chain.akash import jwt as akash_jwt
from provider.chain.akash.chain import END_OF_BLOCK, AkashChain, _parse_cursor, _received, chain_identity
from provider.chain.akash.client import GenesisHead, _object_not_found, parse_genesis_head, tx_error
from provider.chain.akash.jwt import AkashTokenVerifier
from provider.chain.akash.keys import (
    AkashKey,
    AkashKeyError,
    address_bytes,
    address_of,
    bech32_address,
    from_armored,
    load_key_file,
    verify,
)
from provider.chain.akash.pb.akash.market.v1beta5 import bidmsg_pb2
from provider.chain.akash.pb.cosmos.crypto.secp256k1 import keys_pb2
from provider.chain.akash.pb.cosmos.tx.signing.v1beta1 import signing_pb2
from provider.chain.akash.pb.cosmos.tx.v1beta1 import tx_pb2
from provider.chain.akash.tx import Fee, build, dec_coin
from provider.chain.port import ChainError
from provider.chain.types import Coin
from provider.config import Config, load
from provider.errors import ConfigError
from provider.money import Dec
from tests.conftest import REPO, SHARED

# The well-known all-"abandon" test mnemonic; cosmjs and Keplr derive this address from it at m/44'/118'/0'/0/0
ABANDON = "abandon " * 11 + "about"
ABANDON_COSMOS = "cosmos19rl4cm2hmr8afy4kldpxz3fka4jguq0auqdal4"
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def test_a_mnemonic_derives_cosmos_standard_address() -> None:
    key = AkashKey.from_mnemonic("k", ABANDON)
    assert address_of(key.public_bytes, "cosmos") == ABANDON_COSMOS
    assert key.address.startswith("akash1")
    assert address_bytes(key.address) == address_bytes(ABANDON_COSMOS, "cosmos")
    assert AkashKey.from_mnemonic("k", "  " + ABANDON.upper().lower().replace(" ", "\n ") + " ").address == key.address


def test_bad_mnemonics_and_addresses_are_named_without_key_material() -> None:
    with pytest.raises(AkashKeyError, match="not a valid BIP-39 mnemonic"):
        AkashKey.from_mnemonic("k", "abandon " * 12)  # wrong checksum word
    with pytest.raises(AkashKeyError, match="32 bytes"):
        AkashKey.from_private_bytes("k", b"\x01" * 31)
    with pytest.raises(AkashKeyError, match="not a valid secp256k1"):
        AkashKey.from_private_bytes("k", b"\x00" * 32)
    with pytest.raises(AkashKeyError, match="not an akash address"):
        address_bytes(ABANDON_COSMOS)
    with pytest.raises(AkashKeyError, match="checksum"):
        address_bytes(ABANDON_COSMOS[:-1] + "5", "cosmos")
    key = AkashKey.from_mnemonic("k", ABANDON)
    assert key.secret_bytes().hex() not in repr(key)
    assert bech32_address(bytes(20)).startswith("akash1")


def test_signatures_are_low_s_and_verify_only_their_message() -> None:
    key, words = AkashKey.generate("k")
    assert len(words.split()) == 24 and AkashKey.from_mnemonic("k", words).address == key.address
    for i in range(32):
        message = f"sign doc {i}".encode()
        sig = key.sign(message)
        assert len(sig) == 64
        assert int.from_bytes(sig[32:], "big") <= SECP256K1_ORDER // 2
        assert verify(key.public_bytes, message, sig)
        assert not verify(key.public_bytes, message + b"!", sig)
    high = sig[:32] + (SECP256K1_ORDER - int.from_bytes(sig[32:], "big")).to_bytes(32, "big")
    assert not verify(key.public_bytes, message, high)  # Cosmos refuses the malleable twin


def test_a_transaction_is_signed_in_direct_mode_over_its_sign_doc() -> None:
    key = AkashKey.from_mnemonic("k", ABANDON)
    msg = bidmsg_pb2.MsgCreateBid(price=dec_coin("uact", Dec.parse("800.25")))
    raw = tx_pb2.TxRaw.FromString(build(key, "chain-x", 7, 3, [msg], Fee(120000, 3000, "uakt"), memo="m"))
    body = tx_pb2.TxBody.FromString(raw.body_bytes)
    auth = tx_pb2.AuthInfo.FromString(raw.auth_info_bytes)
    assert body.memo == "m" and body.messages[0].type_url == "/akash.market.v1beta5.MsgCreateBid"
    assert bidmsg_pb2.MsgCreateBid.FromString(body.messages[0].value).price.amount == "800250000000000000000"
    (signer,) = auth.signer_infos
    assert signer.sequence == 3 and signer.mode_info.single.mode == signing_pb2.SIGN_MODE_DIRECT
    assert signer.public_key.type_url == "/cosmos.crypto.secp256k1.PubKey"
    assert keys_pb2.PubKey.FromString(signer.public_key.value).key == key.public_bytes
    assert auth.fee.gas_limit == 120000 and [(c.denom, c.amount) for c in auth.fee.amount] == [("uakt", "3000")]
    doc = tx_pb2.SignDoc(
        body_bytes=raw.body_bytes, auth_info_bytes=raw.auth_info_bytes, chain_id="chain-x", account_number=7
    ).SerializeToString()
    assert verify(key.public_bytes, doc, raw.signatures[0])
    other = tx_pb2.SignDoc(
        body_bytes=raw.body_bytes, auth_info_bytes=raw.auth_info_bytes, chain_id="chain-y", account_number=7
    ).SerializeToString()
    assert not verify(key.public_bytes, other, raw.signatures[0])  # bound to its chain


def test_chain_group_specs_read_as_the_sdl_writes_them() -> None:
    """The chain's JSON for the corpus' GPU SDL (recorded from the devnet's REST gateway): quantity
    becomes size, endpoint kinds are numbered, empty attributes dropped, amounts LegacyDec."""
    recorded = json.loads((REPO / "tests" / "fixtures" / "akash" / "order-llm-inference.json").read_text())
    spec = sdl.parse((REPO / "sdl" / "examples" / "llm-inference.yaml").read_bytes())
    order = convert.order(recorded["orders"][0])
    assert order.group == spec.groups[0].to_json()
    assert order.state == "open" and order.id.gseq == 1 and order.created_height == 122
    kinds = {"resource": {"endpoints": [{"kind": "RANDOM_PORT", "sequence_number": 2}, {"kind": "LEASED_IP"}]}}
    group = convert.group_spec({"resources": [{**kinds, "count": 1, "price": {"denom": "uakt", "amount": "1.5"}}]})
    assert group["resources"][0]["resource"]["endpoints"] == [
        {"kind": 1, "sequence_number": 2},
        {"kind": 2, "sequence_number": 0},
    ]
    assert group["resources"][0]["price"]["amount"] == "1.500000000000000000"


def test_typed_events_become_the_engines_events() -> None:
    oid = {"owner": "akash1o", "dseq": "21", "gseq": 1, "oseq": 1}
    bid = {**oid, "provider": "akash1p", "bseq": 0}

    def attrs(**values: object) -> list[dict[str, object]]:
        return [{"key": k, "value": json.dumps(v)} for k, v in values.items()] + [{"key": "msg_index", "value": "0"}]

    order = convert.event(5, 3, "akash.market.v1.EventOrderCreated", attrs(id=oid))
    assert order is not None and order.type == "order_created" and order.cursor == "5:3"
    assert order.data == {"order": {"owner": "akash1o", "dseq": 21, "gseq": 1, "oseq": 1}}
    lease = convert.event(
        6, 0, "akash.market.v1.EventLeaseCreated", attrs(id=bid, price={"denom": "uact", "amount": "7.5"})
    )
    assert lease is not None and lease.type == "lease_created"
    assert lease.data["lease"]["provider"] == "akash1p" and lease.data["price"] == {"denom": "uact", "amount": "7.5"}
    closed = convert.event(7, 1, "akash.market.v1.EventLeaseClosed", attrs(id=bid, reason="lease_closed_owner"))
    assert closed is not None and closed.data["reason"] == "lease_closed_owner"
    assert convert.event(7, 2, "coin_received", attrs(receiver="x")) is None
    assert convert.event(7, 2, "akash.oracle.v1.EventAggregatedPrice", attrs(price="1")) is None
    with pytest.raises(KeyError):  # the feed logs and skips an event it cannot read
        convert.event(7, 3, "akash.market.v1.EventOrderCreated", attrs(other=1))


def test_refusals_map_to_stable_codes_and_permanence() -> None:
    seq = tx_error(
        32, "sdk", "account sequence mismatch, expected 5, got 4: incorrect account sequence", "MsgCreateBid"
    )
    assert seq.code == "bad_sequence" and seq.status == 503
    exists = tx_error(
        2,
        "market",
        "failed to execute message; message index: 0: invalid bid: bid exists from provider",
        "MsgCreateBid",
    )
    assert exists.code == "bid_exists" and exists.status == 400 and "market code 2" in str(exists)
    other = tx_error(9, "x", "something new", "MsgCreateBid")
    assert other.code == "tx_failed" and "something new" in str(other)
    assert isinstance(other, ChainError) and not other.unreachable


def test_cursors_and_withdrawn_amounts() -> None:
    assert _parse_cursor("") == (0, END_OF_BLOCK)
    assert _parse_cursor("12:3") == (12, 3)
    with pytest.raises(ChainError, match="not an Akash feed cursor"):
        _parse_cursor("abc")
    response = {
        "events": [
            {
                "type": "coin_received",
                "attributes": [{"key": "receiver", "value": "akash1me"}, {"key": "amount", "value": "123uact"}],
            },
            {
                "type": "coin_received",
                "attributes": [{"key": "receiver", "value": "akash1other"}, {"key": "amount", "value": "9uact"}],
            },
            {
                "type": "coin_spent",
                "attributes": [{"key": "spender", "value": "akash1me"}, {"key": "amount", "value": "50uakt"}],
            },
        ]
    }
    assert _received(response, "akash1me") == Coin("uact", Dec.parse("123"))
    assert _received({"events": []}, "akash1me") == Coin("", Dec.parse("0"))


def test_the_config_selects_akash_and_loads_its_key_file(tmp_path: Path) -> None:
    def config(text: str) -> Config:
        path = tmp_path / "provider.yaml"
        path.write_text(text)
        return load(path)

    with pytest.raises(ConfigError, match=r"chain\.kind akash needs chain\.akash\.key_file"):
        config("chain: {kind: akash}\n")
    with pytest.raises(ConfigError, match="not an http"):
        config("chain: {kind: akash, akash: {rpc: '127.0.0.1:26657', key_file: /k}}\n")
    with pytest.raises(ConfigError, match=r"chain\.kind"):
        config("chain: {kind: cosmos}\n")
    key_file = tmp_path / "provider.key"
    key_file.write_text(f"{ABANDON}\n")
    key_file.chmod(0o600)
    akash = (
        f"chain: {{kind: akash, akash: {{rpc: 'http://127.0.0.1:1', rest: 'http://127.0.0.1:2', key_file: '{key_file}', "
        "chain_id: akashnet-2, gas_denom: uact}}\n"
    )
    with pytest.raises(ConfigError, match="must be https:// on Akash"):
        config(akash)  # the default host URI is plain HTTP on loopback: Akash's chain refuses it
    chosen = config(akash + "provider: {host_uri: 'https://provider.example.com:8443'}\n")
    chain, where = build_chain(chosen)
    assert isinstance(chain, AkashChain) and chain.address == AkashKey.from_mnemonic("k", ABANDON).address
    assert chain.client.gas.denom == "uact" and chain.expected_chain_id == "akashnet-2"
    assert "rpc=http://127.0.0.1:1" in where
    asyncio.run(chain.aclose())


def test_key_files_hold_a_mnemonic_or_a_hex_key_and_errors_never_echo_them(tmp_path: Path) -> None:
    path = tmp_path / "key"
    secret = AkashKey.from_mnemonic("k", ABANDON).secret_bytes().hex()
    for text in (ABANDON, f"  {ABANDON}\n", secret, "0x" + secret.upper()):
        path.write_text(text)
        assert load_key_file(path).address == AkashKey.from_mnemonic("k", ABANDON).address
    bad = ("abandon " * 12, "zebra " * 11 + "about", "one two three", secret[:-2], "")
    for text in bad:
        path.write_text(text)
        with pytest.raises(AkashKeyError) as caught:
            load_key_file(path)
        assert str(path) in str(caught.value)
        assert "abandon" not in str(caught.value) and secret[:16] not in str(caught.value)
    with pytest.raises(AkashKeyError, match="cannot read"):
        load_key_file(tmp_path / "missing")
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(AkashKeyError, match="not text"):
        load_key_file(path)


def _akash_jwt_vectors() -> tuple[str, list[dict[str, Any]]]:
    """chain-sdk's own JWT test data (testdata/jwt in the vendored archive): the mnemonic of the key that
    signed them and the tokens, ES256K from Akash's signer and ES256KADR36 from a wallet."""
    with tarfile.open(SHARED / "vendor" / "akash" / "chain-sdk-217f62d1.tar.xz") as tar:

        def read(name: str) -> bytes:
            member = tar.extractfile(f"chain-sdk/testdata/jwt/{name}")
            assert member is not None
            return member.read()

        return read("mnemonic").decode().strip(), json.loads(read("cases_es256k.json"))


def test_akash_tokens_from_chain_sdks_test_data_verify_as_akash_says() -> None:
    mnemonic, cases = _akash_jwt_vectors()
    key = AkashKey.from_mnemonic("t", mnemonic)
    assert key.address == "akash1qufa3xzrf34qvwyejkhvnc4psf49fftaw0asmh"
    assert {c["expected"]["alg"] for c in cases} == {"ES256K", "ES256KADR36"}
    for case in cases:
        ok = akash_jwt.verify_signature(case["tokenString"], key.public_bytes, key.address)
        assert ok is not case["mustFail"], case["description"]
        other = AkashKey.from_mnemonic("o", ABANDON)
        assert not akash_jwt.verify_signature(case["tokenString"], other.public_bytes, other.address)


def test_the_akash_verifier_checks_the_issuers_key_and_the_claims() -> None:
    tenant = AkashKey.from_mnemonic("tenant", ABANDON)
    stranger, _ = AkashKey.generate("stranger")
    keys = {tenant.address: tenant.public_bytes, stranger.address: stranger.public_bytes}

    async def lookup(address: str) -> bytes | None:
        return keys.get(address)

    verifier = AkashTokenVerifier(PublicKeys(lookup))

    def check(token: str) -> str:
        return asyncio.run(verifier.verify(token)).address

    for alg in ("ES256K", "ES256KADR36"):
        assert check(akash_jwt.mint(tenant, alg=alg)) == tenant.address
    now = int(time.time())
    claims = {
        "iss": tenant.address,
        "iat": now,
        "nbf": now,
        "exp": now + 60,
        "version": "v1",
        "leases": {"access": "full"},
    }
    forged = akash_jwt.sign(stranger, claims)  # the stranger signs claims naming the tenant
    with pytest.raises(AuthError, match="signature does not match"):
        check(forged)
    with pytest.raises(AuthError, match="expired"):
        check(akash_jwt.sign(tenant, {**claims, "iat": now - 900, "nbf": now - 900, "exp": now - 300}))
    with pytest.raises(AuthError, match="not accepted here"):
        check(jwt.encode(claims, "k" * 32, algorithm="HS256"))
    header, _, signature = akash_jwt.sign(
        tenant, {**claims, "leases": {"access": "scoped", "scope": ["status"]}}
    ).split(".")
    widened = akash_jwt.sign(tenant, claims).split(".")[1]  # full access swapped in under a scoped signature
    with pytest.raises(AuthError, match="signature does not match"):
        check(f"{header}.{widened}.{signature}")
    with pytest.raises(AuthError, match="no public key on chain"):
        check(akash_jwt.sign(tenant, {**claims, "iss": bech32_address(bytes(20))}))
    mnemonic, cases = _akash_jwt_vectors()
    scoped = next(c for c in cases if "scoped" in c["description"])  # a wallet's token from 2025: expired now
    keys[scoped["expected"]["claims"]["iss"]] = AkashKey.from_mnemonic("v", mnemonic).public_bytes
    with pytest.raises(AuthError, match="expired"):
        check(scoped["tokenString"])


EXPORTED = REPO / "tests" / "fixtures" / "akash" / "exported-key.txt"  # `akash keys export`, passphrase pass1234


def test_a_key_exported_by_the_akash_cli_is_imported_with_its_passphrase(tmp_path: Path) -> None:
    text = EXPORTED.read_text()
    assert from_armored("x", text, "pass1234").address == "akash1kh4pwrw55ftu7f6fgc0med4h42v3elvy9ujp8q"
    assert load_key_file(EXPORTED, "x", "pass1234").address == "akash1kh4pwrw55ftu7f6fgc0med4h42v3elvy9ujp8q"
    with pytest.raises(AkashKeyError, match="wrong passphrase"):
        from_armored("x", text, "pass12345")
    with pytest.raises(AkashKeyError, match="give its passphrase"):
        load_key_file(EXPORTED, "x")
    lines = text.splitlines()
    body = next(i for i, line in enumerate(lines) if line and line[0].isalnum() and ":" not in line)
    damaged = "\n".join([*lines[:body], lines[body][:-4] + "AAAA", *lines[body + 1 :]])
    with pytest.raises(AkashKeyError, match="checksum"):
        from_armored("x", damaged, "pass1234")
    with pytest.raises(AkashKeyError, match="KDF"):
        from_armored("x", text.replace("kdf: argon2", "kdf: bcrypt"), "pass1234")
    with pytest.raises(AkashKeyError, match="not an armored"):
        from_armored("x", "-----BEGIN PGP MESSAGE-----\n\nAA==\n-----END PGP MESSAGE-----", "p")
    for error in (
        pytest.raises(AkashKeyError, match="wrong passphrase"),
        pytest.raises(AkashKeyError, match=r"exported-key\.txt"),
    ):
        with error:
            load_key_file(EXPORTED, "x", "nope")


def test_the_genesis_head_is_read_from_the_start_of_a_chunk() -> None:
    doc = b'{"genesis_time":"2021-03-08T15:00:00Z","chain_id":"akashnet-2","initial_height":"5850000","app_state":{'
    answer = b'{"jsonrpc":"2.0","id":-1,"result":{"chunk":"0","total":"3","data":"' + base64.b64encode(doc + b"x" * 99)
    head = parse_genesis_head(answer[:120])  # too little of the document yet
    assert head is None
    head = parse_genesis_head(answer)  # a prefix of a long chunk: no closing quote, any length
    assert head == GenesisHead("2021-03-08T15:00:00Z", "akashnet-2", 5850000)
    for end in range(len(answer)):  # however the stream is cut, the head is whole or not there yet
        assert parse_genesis_head(answer[:end]) in (None, head), end
    identity = chain_identity(head)
    assert identity.startswith("g") and len(identity) == 41 and identity.isalnum()
    assert chain_identity(GenesisHead(head.time, head.chain_id, 1)) != identity  # a reset: another genesis


@pytest.mark.parametrize(
    "status,body,missing",
    [
        (404, {"code": 5, "message": "codespace deployment code 4: Deployment not found", "details": []}, True),
        (404, {"code": 5, "message": "account akash1x not found"}, True),
        (404, {"code": 5, "message": "Not Found", "details": []}, False),  # the gateway's own routing 404
        (404, {"message": "<html>404 page not found</html>"}, False),  # a proxy's
        (501, {"code": 12, "message": "Not Implemented", "details": []}, False),  # a route this node lacks
        (500, {"code": 2, "message": "not found in index"}, False),
    ],
)
def test_only_the_query_service_says_an_object_does_not_exist(status: int, body: Any, missing: bool) -> None:
    assert _object_not_found(status, body) is missing
