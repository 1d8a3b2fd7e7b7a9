"""Cosmos SDK transactions, built and signed here: protobuf messages packed as ``Any``, a TxBody, an
AuthInfo with one secp256k1 signer in SIGN_MODE_DIRECT, and the SignDoc signed over its bytes.

Pure: no I/O. The client (provider.chain.akash.client) supplies the account number, sequence, gas and fee.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.any_pb2 import Any as AnyPb
from google.protobuf.message import Message

from provider.chain.akash.keys import AkashKey
from provider.chain.akash.pb.cosmos.base.v1beta1 import coin_pb2
from provider.chain.akash.pb.cosmos.crypto.secp256k1 import keys_pb2
from provider.chain.akash.pb.cosmos.tx.signing.v1beta1 import signing_pb2
from provider.chain.akash.pb.cosmos.tx.v1beta1 import tx_pb2
from provider.money import Dec


def pack(message: Message) -> AnyPb:
    """A message as a protobuf Any with Cosmos' type URL (``/`` + its full name)."""
    return AnyPb(type_url=f"/{message.DESCRIPTOR.full_name}", value=message.SerializeToString())


def type_url(message: Message) -> str:
    return f"/{message.DESCRIPTOR.full_name}"


def dec_coin(denom: str, amount: Dec) -> coin_pb2.DecCoin:
    """A DecCoin as the chain stores it: LegacyDec's wire form is the integer scaled by 10^18."""
    return coin_pb2.DecCoin(denom=denom, amount=str(amount.atto))


@dataclass(frozen=True, slots=True)
class Fee:
    gas_limit: int
    amount: int  # in ``denom``; Cosmos fees are whole base units
    denom: str


def build(
    key: AkashKey,
    chain_id: str,
    account_number: int,
    sequence: int,
    messages: Sequence[Message],
    fee: Fee,
    memo: str = "",
) -> bytes:
    """The signed TxRaw bytes, ready to broadcast or simulate."""
    body = tx_pb2.TxBody(messages=[pack(m) for m in messages], memo=memo).SerializeToString()
    signer = tx_pb2.SignerInfo(
        public_key=pack(keys_pb2.PubKey(key=key.public_bytes)),
        mode_info=tx_pb2.ModeInfo(single=tx_pb2.ModeInfo.Single(mode=signing_pb2.SIGN_MODE_DIRECT)),
        sequence=sequence,
    )
    coins = [coin_pb2.Coin(denom=fee.denom, amount=str(fee.amount))] if fee.amount else []
    auth_info = tx_pb2.AuthInfo(
        signer_infos=[signer], fee=tx_pb2.Fee(amount=coins, gas_limit=fee.gas_limit)
    ).SerializeToString()
    doc = tx_pb2.SignDoc(
        body_bytes=body, auth_info_bytes=auth_info, chain_id=chain_id, account_number=account_number
    ).SerializeToString()
    raw = tx_pb2.TxRaw(body_bytes=body, auth_info_bytes=auth_info, signatures=[key.sign(doc)])
    return raw.SerializeToString()
