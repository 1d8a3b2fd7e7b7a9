"""The mock chain's market, modelled on Akash's: accounts, providers and auditors, deployments with
escrow, orders, bids, leases, per-block payments, withdrawals, timeouts and an event log.

State lives in SQLite (WAL): every transaction and every block is one SQL transaction, so a kill -9 at
any moment leaves the last committed state, which survives a restart. Amounts are exact fixed-point
decimals with 18 places (provider.money.Dec, like Cosmos DecCoin). A database gets a random genesis id
when it is created, so a reset chain is never mistaken for the one a client followed before.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provider.chain.keys import SignatureError, canonical, verify_tx
from provider.chain.types import max_price_of
from provider.money import ZERO, Dec, MoneyError
from sdl import group_limit_problems
from sdl.spec import group_from_json

DENOMS = ("uakt", "uact")
MAX_BIDS_PER_ORDER = 20
MAX_GROUPS_PER_DEPLOYMENT = 20
_PAGE_NUMBER = re.compile(r"^[0-9]{1,18}$")
_REASON = re.compile(r"^[a-z0-9_-]{1,64}$")
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (address TEXT PRIMARY KEY, sequence INTEGER NOT NULL DEFAULT 0, pubkey TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS balances (address TEXT, denom TEXT, amount TEXT NOT NULL, PRIMARY KEY (address, denom));
CREATE TABLE IF NOT EXISTS providers (address TEXT PRIMARY KEY, host_uri TEXT NOT NULL, attributes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audits (provider TEXT, auditor TEXT, attributes TEXT NOT NULL, PRIMARY KEY (provider, auditor));
CREATE TABLE IF NOT EXISTS deployments (owner TEXT, dseq INTEGER, state TEXT NOT NULL, version TEXT NOT NULL,
  escrow_denom TEXT NOT NULL, escrow TEXT NOT NULL, created_height INTEGER NOT NULL, PRIMARY KEY (owner, dseq));
CREATE TABLE IF NOT EXISTS orders (owner TEXT, dseq INTEGER, gseq INTEGER, oseq INTEGER, state TEXT NOT NULL,
  spec TEXT NOT NULL, created_height INTEGER NOT NULL, PRIMARY KEY (owner, dseq, gseq, oseq));
CREATE TABLE IF NOT EXISTS bids (owner TEXT, dseq INTEGER, gseq INTEGER, oseq INTEGER, provider TEXT,
  state TEXT NOT NULL, price_denom TEXT NOT NULL, price TEXT NOT NULL, deposit_denom TEXT NOT NULL, deposit TEXT NOT NULL,
  created_height INTEGER NOT NULL, PRIMARY KEY (owner, dseq, gseq, oseq, provider));
CREATE TABLE IF NOT EXISTS leases (owner TEXT, dseq INTEGER, gseq INTEGER, oseq INTEGER, provider TEXT,
  state TEXT NOT NULL, price_denom TEXT NOT NULL, price TEXT NOT NULL, unsettled TEXT NOT NULL, withdrawn TEXT NOT NULL,
  created_height INTEGER NOT NULL, closed_height INTEGER, closed_reason TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (owner, dseq, gseq, oseq, provider));
CREATE TABLE IF NOT EXISTS events (height INTEGER, idx INTEGER, type TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (height, idx));
CREATE INDEX IF NOT EXISTS orders_by_state ON orders (state);
CREATE INDEX IF NOT EXISTS bids_by_provider ON bids (provider, state);
CREATE INDEX IF NOT EXISTS leases_by_provider ON leases (provider, state);
"""


_ORDER_KEY = ("owner", "dseq", "gseq", "oseq")
_COLUMNS = {  # what each listing returns, key columns first
    "orders": (*_ORDER_KEY, "state", "spec", "created_height"),
    "bids": (*_ORDER_KEY, "provider", "state", "price_denom", "price", "deposit_denom", "deposit", "created_height"),
    "leases": (
        *_ORDER_KEY,
        "provider",
        "state",
        "price_denom",
        "price",
        "unsettled",
        "withdrawn",
        "created_height",
        "closed_height",
        "closed_reason",
    ),
}


class TxError(Exception):
    """A transaction the chain refuses; ``code`` is stable for clients, the message says why."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class ChainParams:
    chain_id: str = "gpu-provider-mock-1"
    bid_timeout_blocks: int = 50  # ~5 min at 6 s blocks, like the provider's --bid-timeout
    order_timeout_blocks: int = 0  # 0: orders stay open until matched or closed
    min_bid_deposit: Dec = field(default_factory=lambda: Dec.parse(500_000))
    min_deployment_deposit: Dec = field(default_factory=lambda: Dec.parse(500_000))
    faucet: bool = True


def _dec(value: Any, what: str) -> Dec:
    try:
        return Dec.parse(value)
    except MoneyError as e:
        raise TxError("invalid_amount", f"{what}: {e}") from None


def _coin(raw: Any, what: str) -> tuple[str, Dec]:
    if not isinstance(raw, dict) or "denom" not in raw or "amount" not in raw:
        raise TxError("invalid_coin", f"{what} must be {{denom, amount}}")
    denom = str(raw["denom"])
    if denom not in DENOMS:
        raise TxError("invalid_denom", f"{what}: denom {denom!r} is not one of {', '.join(DENOMS)}")
    return denom, _dec(raw["amount"], what)


def _int(raw: Any, what: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise TxError("invalid_field", f"{what} must be a non-negative integer")
    return raw


def _order_key(raw: Any) -> tuple[str, int, int, int]:
    if not isinstance(raw, dict):
        raise TxError("invalid_field", "order must be {owner, dseq, gseq, oseq}")
    owner = raw.get("owner")
    if not isinstance(owner, str):
        raise TxError("invalid_field", "order.owner must be an address")
    return (
        owner,
        _int(raw.get("dseq"), "order.dseq"),
        _int(raw.get("gseq"), "order.gseq"),
        _int(raw.get("oseq"), "order.oseq"),
    )


class Chain:
    """The chain state machine over one SQLite database. Thread-safe (one lock)."""

    def __init__(self, path: Path | str, params: ChainParams | None = None) -> None:
        self.params = params or ChainParams()
        self.lock = threading.RLock()
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        with self._tx():
            self.db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('height', '1'), ('chain_id', ?), ('genesis', ?)",
                (self.params.chain_id, secrets.token_hex(16)),
            )
        self.genesis = str(self.db.execute("SELECT value FROM meta WHERE key='genesis'").fetchone()[0])
        self._listeners: list[Callable[[], None]] = []
        self._handlers: dict[str, Callable[[str, dict[str, Any]], dict[str, Any] | None]] = {
            "provider.create": self._tx_provider_create,
            "audit.sign": self._tx_audit_sign,
            "deployment.create": self._tx_deployment_create,
            "deployment.update": self._tx_deployment_update,
            "deployment.close": self._tx_deployment_close,
            "bid.create": self._tx_bid_create,
            "bid.close": self._tx_bid_close,
            "lease.create": self._tx_lease_create,
            "lease.close": self._tx_lease_close,
            "lease.withdraw": self._tx_lease_withdraw,
        }

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback`` runs (on the committing thread) after every commit that may have added events."""
        self._listeners.append(callback)

    # -- plumbing --------------------------------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    @property
    def height(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key='height'").fetchone()[0])

    def _emit(self, type_: str, data: dict[str, Any]) -> None:
        h = self.height
        idx = self.db.execute("SELECT COALESCE(MAX(idx), -1) + 1 FROM events WHERE height=?", (h,)).fetchone()[0]
        self.db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (h, idx, type_, json.dumps(data, sort_keys=True)))

    def _balance(self, address: str, denom: str) -> Dec:
        row = self.db.execute("SELECT amount FROM balances WHERE address=? AND denom=?", (address, denom)).fetchone()
        return Dec.parse(row[0]) if row else ZERO

    def _add(self, address: str, denom: str, amount: Dec) -> None:
        new = self._balance(address, denom) + amount
        if new < ZERO:
            raise TxError("insufficient_funds", f"{address} has {new - amount} {denom}, needs {-amount}")
        self.db.execute("INSERT OR REPLACE INTO balances VALUES (?, ?, ?)", (address, denom, str(new)))

    # -- reads -----------------------------------------------------------------------------------
    def balances(self, address: str) -> dict[str, str]:
        with self.lock:
            rows = self.db.execute("SELECT denom, amount FROM balances WHERE address=?", (address,)).fetchall()
        return {d: a for d, a in rows}

    def account(self, address: str) -> dict[str, Any]:
        with self.lock:
            row = self.db.execute("SELECT sequence, pubkey FROM accounts WHERE address=?", (address,)).fetchone()
            return {
                "address": address,
                "sequence": row[0] if row else 0,
                "pubkey": row[1] if row else "",
                "balances": self.balances(address),
            }

    def provider(self, address: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute("SELECT host_uri, attributes FROM providers WHERE address=?", (address,)).fetchone()
            if row is None:
                return None
            audits = self.db.execute("SELECT auditor, attributes FROM audits WHERE provider=?", (address,)).fetchall()
        return {
            "address": address,
            "host_uri": row[0],
            "attributes": json.loads(row[1]),
            "audited": {a: json.loads(attrs) for a, attrs in audits},
        }

    def deployment(self, owner: str, dseq: int) -> dict[str, Any] | None:
        with self.lock:
            row = self.db.execute(
                "SELECT state, version, escrow_denom, escrow, created_height FROM deployments WHERE owner=? AND dseq=?",
                (owner, dseq),
            ).fetchone()
            if row is None:
                return None
            groups = self.db.execute(
                "SELECT spec FROM orders WHERE owner=? AND dseq=? ORDER BY gseq, oseq", (owner, dseq)
            ).fetchall()
        return {
            "owner": owner,
            "dseq": dseq,
            "state": row[0],
            "version": row[1],
            "groups": [json.loads(g[0]) for g in groups],
            "escrow": {"denom": row[2], "amount": row[3]},
            "created_height": row[4],
        }

    def query(
        self, table: str, filters: dict[str, Any], after: str = "", limit: int = 100
    ) -> tuple[list[dict[str, Any]], str]:
        """Paged listing of orders, bids or leases; ``after`` is the last key of the previous page."""
        columns = _COLUMNS[table]
        key_cols = _ORDER_KEY + (("provider",) if table != "orders" else ())
        where, args = [], []
        for k, v in filters.items():
            if v is not None and k in columns:
                where.append(f"{k} = ?")
                args.append(v)
        if after:
            parts = after.split("/")
            if len(parts) != len(key_cols):
                raise TxError("invalid_page", "page key does not match this listing")
            where.append(f"({', '.join(key_cols)}) > ({', '.join('?' * len(key_cols))})")
            for c, p in zip(key_cols, parts, strict=True):
                if c in ("dseq", "gseq", "oseq") and not _PAGE_NUMBER.match(p):
                    raise TxError("invalid_page", f"page key part {c} must be a number of at most 18 digits")
                args.append(int(p) if c in ("dseq", "gseq", "oseq") else p)
        sql = f"SELECT {', '.join(columns)} FROM {table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {', '.join(key_cols)} LIMIT ?"
        args.append(max(1, min(limit, 1000)))
        with self.lock:
            rows = [dict(zip(columns, r, strict=True)) for r in self.db.execute(sql, args).fetchall()]
        for r in rows:
            if "spec" in r:
                r["spec"] = json.loads(r["spec"])
        next_key = "/".join(str(rows[-1][c]) for c in key_cols) if len(rows) == max(1, min(limit, 1000)) else ""
        return rows, next_key

    def events(self, after: tuple[int, int] | None, limit: int = 500) -> list[dict[str, Any]]:
        h, i = after or (0, -1)
        with self.lock:
            rows = self.db.execute(
                "SELECT height, idx, type, data FROM events WHERE (height, idx) > (?, ?) ORDER BY height, idx LIMIT ?",
                (h, i, max(1, min(limit, 5000))),
            ).fetchall()
        return [{"height": r[0], "index": r[1], "type": r[2], "data": json.loads(r[3])} for r in rows]

    # -- faucet (a mock-chain convenience) --------------------------------------------------------
    def fund(self, address: str, denom: str, amount: Dec) -> None:
        if not self.params.faucet:
            raise TxError("faucet_disabled", "this chain has no faucet", 403)
        if denom not in DENOMS or amount <= ZERO:
            raise TxError("invalid_coin", f"fund with a positive amount of {' or '.join(DENOMS)}")
        with self._tx():
            self._add(address, denom, amount)
            self._emit("account_funded", {"address": address, "denom": denom, "amount": str(amount)})
        self._notify()

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    # -- transactions ----------------------------------------------------------------------------
    def submit(self, tx: dict[str, Any]) -> dict[str, Any]:
        """Verify a signed transaction and apply it atomically."""
        try:
            signer = verify_tx(self.params.chain_id, tx)
        except SignatureError as e:
            raise TxError("unauthorized", str(e), 401) from None
        handler = self._handlers.get(tx["type"])
        if handler is None:
            raise TxError("unknown_tx", f"unknown transaction type {tx['type']!r}; known: {', '.join(self._handlers)}")
        msg = tx["msg"]
        if not isinstance(msg, dict):
            raise TxError("invalid_field", "msg must be an object")
        refused: TxError | None = None
        with self._tx():
            row = self.db.execute("SELECT sequence FROM accounts WHERE address=?", (signer,)).fetchone()
            expected = (row[0] if row else 0) + 1
            if tx["sequence"] != expected:
                raise TxError(
                    "bad_sequence",
                    f"sequence {tx['sequence']} for {signer}; expected {expected} (replayed or out of order)",
                    409,
                )
            # Like a Cosmos chain, a correctly signed transaction consumes its sequence even when the
            # message is refused, so it can never be replayed later.
            self.db.execute("INSERT OR REPLACE INTO accounts VALUES (?, ?, ?)", (signer, expected, tx["pubkey"]))
            self.db.execute("SAVEPOINT msg")
            try:
                result: dict[str, Any] = handler(signer, msg) or {}
            except TxError as e:
                self.db.execute("ROLLBACK TO SAVEPOINT msg")
                refused = e
            self.db.execute("RELEASE SAVEPOINT msg")
        if refused is not None:
            raise refused
        self._notify()
        return {"ok": True, "height": self.height, **result}

    def _tx_provider_create(self, signer: str, msg: dict[str, Any]) -> None:
        attrs = msg.get("attributes", {})
        if not isinstance(attrs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in attrs.items()):
            raise TxError("invalid_field", "attributes must map strings to strings")
        host = msg.get("host_uri", "")
        if not isinstance(host, str) or not host.startswith(("http://", "https://")):
            raise TxError("invalid_field", "host_uri must be the provider's http(s) URL")
        self.db.execute(
            "INSERT OR REPLACE INTO providers VALUES (?, ?, ?)", (signer, host, json.dumps(attrs, sort_keys=True))
        )
        self._emit("provider_updated", {"provider": signer, "attributes": attrs})

    def _tx_audit_sign(self, signer: str, msg: dict[str, Any]) -> None:
        provider, attrs = msg.get("provider"), msg.get("attributes", {})
        if not isinstance(provider, str) or not isinstance(attrs, dict):
            raise TxError("invalid_field", "audit needs provider and attributes")
        self.db.execute(
            "INSERT OR REPLACE INTO audits VALUES (?, ?, ?)", (provider, signer, json.dumps(attrs, sort_keys=True))
        )
        self._emit("provider_audited", {"provider": provider, "auditor": signer, "attributes": attrs})

    def _tx_deployment_create(self, signer: str, msg: dict[str, Any]) -> dict[str, Any]:
        dseq = _int(msg.get("dseq"), "dseq")
        groups = msg.get("groups")
        version = msg.get("version")
        if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
            raise TxError("invalid_field", "groups must be a non-empty list of group specs")
        if len(groups) > MAX_GROUPS_PER_DEPLOYMENT:
            raise TxError(
                "invalid_group", f"{len(groups)} groups; a deployment has at most {MAX_GROUPS_PER_DEPLOYMENT}"
            )
        for i, g in enumerate(groups):
            try:
                spec = group_from_json(g)
            except (ValueError, TypeError, KeyError, ArithmeticError) as e:
                raise TxError("invalid_group", f"groups[{i}]: {e}") from None
            problems = group_limit_problems(spec)
            if problems:
                raise TxError("invalid_group", f"groups[{i}]: {'; '.join(problems[:3])}")
            for u in g.get("resources", []):  # the text the chain keeps must be an exact amount
                _dec(u.get("price", {}).get("amount"), f"groups[{i}] price")
        if not isinstance(version, str) or len(version) != 64:
            raise TxError("invalid_field", "version must be the 32-byte deployment hash in hex")
        denom, deposit = _coin(msg.get("deposit"), "deposit")
        if deposit < self.params.min_deployment_deposit:
            raise TxError("deposit_too_small", f"deposit must be at least {self.params.min_deployment_deposit} {denom}")
        for g in groups:
            for u in g.get("resources", []):
                if u.get("price", {}).get("denom") != denom:
                    raise TxError("invalid_denom", "every group must be priced in the deposit's denom")
        if self.db.execute("SELECT 1 FROM deployments WHERE owner=? AND dseq=?", (signer, dseq)).fetchone():
            raise TxError("deployment_exists", f"deployment {signer}/{dseq} already exists", 409)
        self._add(signer, denom, -deposit)
        h = self.height
        self.db.execute(
            "INSERT INTO deployments VALUES (?, ?, 'active', ?, ?, ?, ?)",
            (signer, dseq, version, denom, str(deposit), h),
        )
        self._emit("deployment_created", {"owner": signer, "dseq": dseq, "version": version})
        for gseq, g in enumerate(groups, start=1):
            self.db.execute(
                "INSERT INTO orders VALUES (?, ?, ?, 1, 'open', ?, ?)",
                (signer, dseq, gseq, json.dumps(g, sort_keys=True), h),
            )
            self._emit(
                "order_created",
                {"order": {"owner": signer, "dseq": dseq, "gseq": gseq, "oseq": 1}, "spec": g, "height": h},
            )
        return {"dseq": dseq}

    def _tx_deployment_update(self, signer: str, msg: dict[str, Any]) -> None:
        """A new manifest version for a live deployment (Akash's MsgUpdateDeployment). The groups, when
        sent, must be the ones already ordered: orders, bids and leases were made for them, so a change
        of resources needs a new deployment (as on Akash)."""
        dseq = _int(msg.get("dseq"), "dseq")
        version = msg.get("version")
        if not isinstance(version, str) or not re.fullmatch(r"[0-9a-f]{64}", version):
            raise TxError("invalid_field", "version must be the 32-byte deployment hash in lowercase hex")
        dep = self.db.execute(
            "SELECT state, version FROM deployments WHERE owner=? AND dseq=?", (signer, dseq)
        ).fetchone()
        if dep is None:
            raise TxError("not_found", f"no deployment {signer}/{dseq} (only its owner can update it)", 404)
        if dep[0] != "active":
            raise TxError("deployment_closed", f"deployment {signer}/{dseq} is closed")
        if dep[1] == version:
            raise TxError("version_unchanged", "the deployment already has this version")
        groups = msg.get("groups")
        if groups is not None:
            ordered = [
                json.loads(row[0])
                for row in self.db.execute(
                    "SELECT spec FROM orders WHERE owner=? AND dseq=? ORDER BY gseq", (signer, dseq)
                ).fetchall()
            ]
            if not isinstance(groups, list) or [canonical(g) for g in groups] != [canonical(g) for g in ordered]:
                raise TxError(
                    "groups_changed",
                    "an update cannot change the ordered groups (resources, counts, prices): "
                    "close the deployment and create a new one",
                )
        self.db.execute("UPDATE deployments SET version=? WHERE owner=? AND dseq=?", (version, signer, dseq))
        self._emit("deployment_updated", {"owner": signer, "dseq": dseq, "version": version})

    def _tx_deployment_close(self, signer: str, msg: dict[str, Any]) -> None:
        dseq = _int(msg.get("dseq"), "dseq")
        dep = self.db.execute("SELECT state FROM deployments WHERE owner=? AND dseq=?", (signer, dseq)).fetchone()
        if dep is None:
            raise TxError("not_found", f"no deployment {signer}/{dseq}", 404)
        if dep[0] != "active":
            raise TxError("deployment_closed", f"deployment {signer}/{dseq} is already closed")
        self._close_deployment(signer, dseq, "owner")

    def _close_deployment(self, owner: str, dseq: int, reason: str) -> None:
        for lease in self.db.execute(
            "SELECT gseq, oseq, provider FROM leases WHERE owner=? AND dseq=? AND state='active'", (owner, dseq)
        ).fetchall():
            self._close_lease((owner, dseq, lease[0], lease[1], lease[2]), reason)
        for gseq, oseq in self.db.execute(
            "SELECT gseq, oseq FROM orders WHERE owner=? AND dseq=? AND state!='closed'", (owner, dseq)
        ).fetchall():
            self._close_order((owner, dseq, gseq, oseq), reason)
        denom, escrow = self.db.execute(
            "SELECT escrow_denom, escrow FROM deployments WHERE owner=? AND dseq=?", (owner, dseq)
        ).fetchone()
        self._add(owner, denom, Dec.parse(escrow))  # refund what is left
        self.db.execute("UPDATE deployments SET state='closed', escrow='0' WHERE owner=? AND dseq=?", (owner, dseq))
        self._emit("deployment_closed", {"owner": owner, "dseq": dseq, "reason": reason, "refund": escrow})

    def _close_order(self, key: tuple[str, int, int, int], reason: str) -> None:
        for (provider,) in self.db.execute(
            "SELECT provider FROM bids WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND state='open'", key
        ).fetchall():
            self._close_bid((*key, provider), "closed", reason)
        self.db.execute("UPDATE orders SET state='closed' WHERE owner=? AND dseq=? AND gseq=? AND oseq=?", key)
        self._emit(
            "order_closed", {"order": dict(zip(("owner", "dseq", "gseq", "oseq"), key, strict=True)), "reason": reason}
        )

    def _close_bid(self, key: tuple[str, int, int, int, str], state: str, reason: str) -> None:
        row = self.db.execute(
            "SELECT deposit_denom, deposit FROM bids WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?", key
        ).fetchone()
        self._add(key[4], row[0], Dec.parse(row[1]))  # the bid deposit goes back to the provider
        self.db.execute(
            "UPDATE bids SET state=? WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?", (state, *key)
        )
        self._emit("bid_closed", {"bid": _bid_json(key), "state": state, "reason": reason})

    def _tx_bid_create(self, signer: str, msg: dict[str, Any]) -> None:
        key = _order_key(msg.get("order"))
        provider = self.db.execute("SELECT 1 FROM providers WHERE address=?", (signer,)).fetchone()
        if provider is None:
            raise TxError("not_a_provider", f"{signer} is not a registered provider")
        order = self.db.execute(
            "SELECT state, spec FROM orders WHERE owner=? AND dseq=? AND gseq=? AND oseq=?", key
        ).fetchone()
        if order is None:
            raise TxError("not_found", f"no order {'/'.join(map(str, key))}", 404)
        if order[0] != "open":
            raise TxError("order_not_open", f"order {'/'.join(map(str, key))} is {order[0]}")
        denom, price = _coin(msg.get("price"), "price")
        cap = max_price_of(json.loads(order[1]))
        if denom != cap.denom:
            raise TxError("invalid_price", f"bid denom {denom} differs from the order's {cap.denom}")
        if price <= ZERO or price > cap.amount:
            raise TxError(
                "invalid_price", f"bid price {price} must be above 0 and at most the order's {cap.amount} {denom}"
            )
        dep_denom, deposit = _coin(msg.get("deposit"), "deposit")
        if deposit < self.params.min_bid_deposit:
            raise TxError(
                "deposit_too_small", f"bid deposit must be at least {self.params.min_bid_deposit} {dep_denom}"
            )
        existing = self.db.execute(
            "SELECT state FROM bids WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?", (*key, signer)
        ).fetchone()
        if existing is not None:
            raise TxError("bid_exists", f"{signer} already bid on this order ({existing[0]})", 409)
        open_bids = self.db.execute(
            "SELECT COUNT(*) FROM bids WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND state='open'", key
        ).fetchone()[0]
        if open_bids >= MAX_BIDS_PER_ORDER:
            raise TxError("too_many_bids", f"order already has {MAX_BIDS_PER_ORDER} bids")
        self._add(signer, dep_denom, -deposit)
        self.db.execute(
            "INSERT INTO bids VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?)",
            (*key, signer, denom, str(price), dep_denom, str(deposit), self.height),
        )
        self._emit("bid_created", {"bid": _bid_json((*key, signer)), "price": {"denom": denom, "amount": str(price)}})

    def _tx_bid_close(self, signer: str, msg: dict[str, Any]) -> None:
        key = (*_order_key(msg.get("order")), signer)
        row = self.db.execute(
            "SELECT state FROM bids WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?", key
        ).fetchone()
        if row is None:
            raise TxError("not_found", "no such bid", 404)
        reason = msg.get("reason", "provider")
        if not isinstance(reason, str) or not _REASON.match(reason):
            raise TxError("invalid_field", "reason must be 1-64 characters of [a-z0-9_-]")
        if row[0] == "active":  # a provider closes its side of an active lease by closing its bid
            self._close_lease(key, reason)
            return
        if row[0] != "open":
            raise TxError("bid_not_open", f"bid is {row[0]}")
        self._close_bid(key, "closed", reason)

    def _tx_lease_create(self, signer: str, msg: dict[str, Any]) -> None:
        bid = msg.get("bid")
        key5 = (*_order_key(bid), str((bid or {}).get("provider", "")))
        if key5[0] != signer:
            raise TxError("unauthorized", f"only the deployment's owner {key5[0]} can accept its bids", 403)
        row = self.db.execute(
            "SELECT state, price_denom, price FROM bids WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?",
            key5,
        ).fetchone()
        if row is None:
            raise TxError("not_found", "no such bid", 404)
        if row[0] != "open":
            raise TxError("bid_not_open", f"bid is {row[0]}")
        self.db.execute(
            "UPDATE bids SET state='active' WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?", key5
        )
        self.db.execute("UPDATE orders SET state='active' WHERE owner=? AND dseq=? AND gseq=? AND oseq=?", key5[:4])
        self.db.execute(
            "INSERT INTO leases VALUES (?, ?, ?, ?, ?, 'active', ?, ?, '0', '0', ?, NULL, '')",
            (*key5, row[1], row[2], self.height),
        )
        self._emit("lease_created", {"lease": _bid_json(key5), "price": {"denom": row[1], "amount": row[2]}})
        for (other,) in self.db.execute(
            "SELECT provider FROM bids WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND state='open'", key5[:4]
        ).fetchall():
            self._close_bid((*key5[:4], other), "lost", "lease_created")

    def _tx_lease_close(self, signer: str, msg: dict[str, Any]) -> None:
        lease = msg.get("lease")
        key5 = (*_order_key(lease), str((lease or {}).get("provider", "")))
        if signer not in (key5[0], key5[4]):
            raise TxError("unauthorized", "only the lease's tenant or provider can close it", 403)
        row = self.db.execute(
            "SELECT state FROM leases WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?", key5
        ).fetchone()
        if row is None:
            raise TxError("not_found", "no such lease", 404)
        if row[0] != "active":
            raise TxError("lease_closed", "lease is already closed")
        self._close_lease(key5, "owner" if signer == key5[0] else "provider")

    def _tx_lease_withdraw(self, signer: str, msg: dict[str, Any]) -> dict[str, Any]:
        lease = msg.get("lease")
        key5 = (*_order_key(lease), str((lease or {}).get("provider", "")))
        if signer != key5[4]:
            raise TxError("unauthorized", "only the lease's provider can withdraw from it", 403)
        row = self.db.execute(
            "SELECT unsettled FROM leases WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?", key5
        ).fetchone()
        if row is None:
            raise TxError("not_found", "no such lease", 404)
        amount = self._settle(key5)
        denom = self.db.execute(
            "SELECT price_denom FROM leases WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?", key5
        ).fetchone()[0]
        return {"withdrawn": {"denom": denom, "amount": str(amount)}}

    def _settle(self, key5: tuple[str, int, int, int, str]) -> Dec:
        denom, unsettled, withdrawn = self.db.execute(
            "SELECT price_denom, unsettled, withdrawn FROM leases WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?",
            key5,
        ).fetchone()
        amount = Dec.parse(unsettled)
        if amount:
            self._add(key5[4], denom, amount)
            self.db.execute(
                "UPDATE leases SET unsettled='0', withdrawn=? WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?",
                (str(Dec.parse(withdrawn) + amount), *key5),
            )
            self._emit("lease_withdrawn", {"lease": _bid_json(key5), "amount": {"denom": denom, "amount": str(amount)}})
        return amount

    def _close_lease(self, key5: tuple[str, int, int, int, str], reason: str) -> None:
        self._settle(key5)
        self.db.execute(
            "UPDATE leases SET state='closed', closed_height=?, closed_reason=? WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?",
            (self.height, reason, *key5),
        )
        self._close_bid(key5, "closed", reason)
        self.db.execute("UPDATE orders SET state='closed' WHERE owner=? AND dseq=? AND gseq=? AND oseq=?", key5[:4])
        self._emit("lease_closed", {"lease": _bid_json(key5), "reason": reason})

    # -- blocks ----------------------------------------------------------------------------------
    def advance(self, blocks: int = 1) -> int:
        """Produce blocks: escrow pays every active lease its price per block; timeouts apply."""
        for _ in range(blocks):
            with self._tx():
                h = self.height + 1
                self.db.execute("UPDATE meta SET value=? WHERE key='height'", (str(h),))
                self._pay_leases()
                self._timeouts(h)
        self._notify()
        return self.height

    def _pay_leases(self) -> None:
        rows = self.db.execute(
            "SELECT l.owner, l.dseq, l.gseq, l.oseq, l.provider, l.price, l.unsettled, d.escrow FROM leases l "
            "JOIN deployments d ON d.owner=l.owner AND d.dseq=l.dseq WHERE l.state='active' ORDER BY l.owner, l.dseq"
        ).fetchall()
        by_deployment: dict[tuple[str, int], list[Any]] = {}
        for r in rows:
            by_deployment.setdefault((r[0], r[1]), []).append(r)
        for (owner, dseq), leases in by_deployment.items():
            escrow = Dec.parse(leases[0][7])
            due = ZERO
            for r in leases:
                due += Dec.parse(r[5])
            if escrow < due:
                self._emit("escrow_exhausted", {"owner": owner, "dseq": dseq, "escrow": str(escrow), "due": str(due)})
                for r in leases:  # what is left is split in order; then the leases close
                    pay = min(Dec.parse(r[5]), escrow)
                    escrow -= pay
                    self._credit(r, pay)
                self.db.execute("UPDATE deployments SET escrow=? WHERE owner=? AND dseq=?", (str(escrow), owner, dseq))
                for r in leases:
                    self._close_lease((r[0], r[1], r[2], r[3], r[4]), "insufficient_funds")
                self._close_deployment(owner, dseq, "insufficient_funds")
                continue
            for r in leases:
                self._credit(r, Dec.parse(r[5]))
            self.db.execute(
                "UPDATE deployments SET escrow=? WHERE owner=? AND dseq=?", (str(escrow - due), owner, dseq)
            )

    def _credit(self, r: Any, amount: Dec) -> None:
        current = Dec.parse(
            self.db.execute(
                "SELECT unsettled FROM leases WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?", r[:5]
            ).fetchone()[0]
        )
        self.db.execute(
            "UPDATE leases SET unsettled=? WHERE owner=? AND dseq=? AND gseq=? AND oseq=? AND provider=?",
            (str(current + amount), *r[:5]),
        )

    def _timeouts(self, height: int) -> None:
        if self.params.bid_timeout_blocks:
            for key in self.db.execute(
                "SELECT owner, dseq, gseq, oseq, provider FROM bids WHERE state='open' AND created_height <= ?",
                (height - self.params.bid_timeout_blocks,),
            ).fetchall():
                self._close_bid(tuple(key), "closed", "bid_timeout")
        if self.params.order_timeout_blocks:
            for key in self.db.execute(
                "SELECT owner, dseq, gseq, oseq FROM orders WHERE state='open' AND created_height <= ?",
                (height - self.params.order_timeout_blocks,),
            ).fetchall():
                self._close_order(tuple(key), "order_timeout")

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _bid_json(key: tuple[Any, ...]) -> dict[str, Any]:
    return {"owner": key[0], "dseq": key[1], "gseq": key[2], "oseq": key[3], "provider": key[4]}
