"""`bank`: customers, their addresses, accounts and transactions.

Invariant kept by every operation: an account's `balance` equals the sum of its
transactions' `amount`. A transaction insert, amount change or delete always updates its
account's balance in the same database transaction; the account row is locked first.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from tidemark.simulator.engine import Tx
from tidemark.simulator.profiles.base import Operation, Profile
from tidemark.simulator.profiles.customers import ADDRESS_COLS, address_row, customer_row
from tidemark.simulator.schema import Column, table
from tidemark.simulator.values import maybe, money

CUSTOMERS = table(
    "customers",
    Column("first_name", "text", length=100),
    Column("last_name", "text", length=100),
    Column("email", "code", nullable=True, length=200),
    Column("phone", "code", nullable=True, length=40),
    Column("birth_date", "date", nullable=True),
    Column("country", "code", length=2),
    Column("segment", "code", length=10, choices=("retail", "corporate", "wealth")),
    Column("credit_score", "int", nullable=True),
    Column("annual_income", "money", nullable=True),
    Column("created_at", "ts", default_now=True),
)
ADDRESSES = table(
    "addresses",
    Column("customer_id", "ref", references="customers"),
    Column("address_type", "code", length=10, choices=("home", "mailing")),
    Column("line1", "text"),
    Column("line2", "text", nullable=True),
    Column("city", "text", length=100),
    Column("postal_code", "code", nullable=True, length=20),
    Column("country", "code", length=2),
    Column("is_default", "bool"),
)
ACCOUNTS = table(
    "accounts",
    Column("customer_id", "ref", references="customers"),
    Column("account_type", "code", length=10, choices=("checking", "savings", "credit", "loan")),
    Column("iban", "code", length=40),
    Column("currency", "code", length=3),
    Column("balance", "money"),
    Column("credit_limit", "money", nullable=True),
    Column("interest_rate", "rate", nullable=True),
    Column("status", "code", length=10, choices=("open", "frozen", "closed")),
    Column("opened_on", "date"),
)
TRANSACTIONS = table(
    "transactions",
    Column("account_id", "ref", references="accounts"),
    Column("amount", "money"),
    Column(
        "txn_type",
        "code",
        length=12,
        choices=("deposit", "withdrawal", "card", "transfer", "fee", "interest"),
    ),
    Column("category", "code", nullable=True, length=30),
    Column("merchant", "text", nullable=True),
    Column("status", "code", length=10, choices=("pending", "posted", "reversed")),
    Column("description", "text", nullable=True, length=300),
    Column("booked_at", "ts", default_now=True),
)
CUSTOMER_COLS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "birth_date",
    "country",
    "segment",
    "credit_score",
    "annual_income",
)
ACCOUNT_COLS = (
    "customer_id",
    "account_type",
    "iban",
    "currency",
    "balance",
    "credit_limit",
    "interest_rate",
    "status",
    "opened_on",
)
TXN_COLS = ("account_id", "amount", "txn_type", "category", "merchant", "status", "description")
CATEGORIES = (
    "groceries",
    "rent",
    "salary",
    "travel",
    "dining",
    "utilities",
    "health",
    "entertainment",
    "insurance",
    "transport",
)
_TXN_TYPES = ("deposit", "withdrawal", "card", "card", "card", "transfer", "fee", "interest")
_ZERO = Decimal("0.00")
_START = date(2005, 1, 1)


def _customer(tx: Tx) -> tuple[object, ...]:
    r = tx.rng
    base = customer_row(tx)[:6]
    segment = r.choices(("retail", "corporate", "wealth"), weights=(80, 12, 8))[0]
    income = money(r, 12_000, 2_500_000 if segment == "wealth" else 250_000)
    return (*base, segment, maybe(r, r.randint(300, 850), 0.15), maybe(r, income, 0.3))


def _account(tx: Tx, customer_id: int) -> tuple[object, ...]:
    r, p = tx.rng, tx.pools
    kind = r.choices(("checking", "savings", "credit", "loan"), weights=(50, 25, 15, 10))[0]
    limit = money(r, 500, 50_000) if kind in ("credit", "loan") else None
    rate = Decimal(r.randint(0, 1999)) / 10000 if kind != "checking" else None
    return (
        customer_id,
        kind,
        r.choice(p.ibans),
        r.choice(("EUR", "EUR", "USD", "GBP", "PLN")),
        _ZERO,
        limit,
        rate,
        "open",
        _START + timedelta(days=r.randint(0, 7300)),
    )


def _txn(tx: Tx, account_id: int) -> tuple[object, ...]:
    r, p = tx.rng, tx.pools
    kind = r.choice(_TXN_TYPES)
    amount = money(r, 0.5, 900) if kind not in ("deposit", "interest") else money(r, 1, 5000)
    if kind in ("withdrawal", "card", "transfer", "fee"):
        amount = -amount
    merchant = r.choice(p.companies) if kind == "card" else None
    note = maybe(r, f"{r.choice(p.words)} {r.choice(p.words)}", 0.6)
    return (
        account_id,
        amount,
        kind,
        maybe(r, r.choice(CATEGORIES), 0.2),
        merchant,
        r.choice(("pending", "posted", "posted")),
        note,
    )


def onboard(tx: Tx) -> None:
    """New customers with a home address, each opening one or two accounts (balance 0: no
    transactions yet)."""
    ids = tx.insert(
        "customers",
        CUSTOMER_COLS,
        [_customer(tx) for _ in range(min(tx.rng.randint(1, 2), tx.remaining))],
    )
    homes = [address_row(tx, cid, "home", True) for cid in ids]
    tx.insert("addresses", ADDRESS_COLS, homes[: tx.remaining])
    rows = [_account(tx, cid) for cid in ids for _ in range(tx.rng.randint(1, 2))]
    tx.insert("accounts", ACCOUNT_COLS, rows[: tx.remaining])


def move_house(tx: Tx) -> None:
    """A customer moves: their address changes in place."""
    r, p = tx.rng, tx.pools
    rows = []
    for aid in tx.pick("addresses", r.randint(1, 2)):
        i = r.randrange(len(p.streets))
        rows.append(
            (aid, p.streets[i], p.cities[i], maybe(r, p.postcodes[i], 0.05), p.countries[i])
        )
    tx.update("addresses", ("line1", "city", "postal_code", "country"), rows)


def post_transactions(tx: Tx) -> None:
    """Card payments, deposits, fees: new transactions plus the balance update per account."""
    if tx.remaining < 2:
        return
    # any account may see new transactions, not only new accounts: parents are picked uniformly
    rows: list[tuple[object, ...]] = []
    accounts = tx.pick("accounts", tx.rng.randint(1, 3), "uniform")
    for n, account_id in enumerate(accounts):
        new = [_txn(tx, account_id) for _ in range(tx.rng.randint(1, 3))]
        new = new[: max(0, tx.remaining - len(rows) - n - 1)]  # room for each balance update
        if not new:
            break
        rows.extend(new)
    # rows of accounts deleted meanwhile or closed are not inserted; the rest lock their account
    made = tx.insert_children(
        "transactions",
        TXN_COLS,
        rows,
        fk="account_id",
        parent="accounts",
        returning=("account_id", "amount"),
        parent_not=("status", "closed"),
    )
    deltas: dict[int, Decimal] = defaultdict(lambda: _ZERO)
    for _, account_id, amount in made:
        deltas[account_id] += amount
    tx.add_later("accounts", "balance", deltas)


def settle(tx: Tx) -> None:
    """Pending transactions get posted (and categorised)."""
    r = tx.rng
    rows = [
        (t, "posted", maybe(r, r.choice(CATEGORIES), 0.1))
        for t in tx.pick("transactions", r.randint(1, 5))
    ]
    tx.update("transactions", ("status", "category"), rows)


def review_customer(tx: Tx) -> None:
    r = tx.rng
    rows = [
        (c, maybe(r, r.randint(300, 850), 0.1), maybe(r, money(r, 12_000, 400_000), 0.3))
        for c in tx.pick("customers", r.randint(1, 3))
    ]
    tx.update("customers", ("credit_score", "annual_income"), rows)


def change_account(tx: Tx) -> None:
    """Limit, rate or status changes; never the balance."""
    r = tx.rng
    rows = [
        (
            a,
            r.choices(("open", "frozen", "closed"), weights=(90, 6, 4))[0],
            maybe(r, money(r, 500, 60_000), 0.5),
            maybe(r, Decimal(r.randint(0, 1999)) / 10000, 0.4),
        )
        for a in tx.pick("accounts", r.randint(1, 2))
    ]
    tx.update("accounts", ("status", "credit_limit", "interest_rate"), rows)


def correct_amount(tx: Tx) -> None:
    """A merchant corrects an amount: the transaction and its account's balance change."""
    if tx.remaining < 2:
        return
    locked = tx.lock(
        "transactions",
        tx.pick("transactions", min(2, tx.remaining // 2)),
        ("account_id", "amount"),
        mode="update",
    )
    rows: list[tuple[Any, ...]] = []
    deltas: defaultdict[Any, Decimal] = defaultdict(lambda: _ZERO)
    for tid, account_id, amount in locked:
        new = (amount * Decimal(tx.rng.randint(80, 120)) / 100).quantize(Decimal("0.01"))
        rows.append((tid, new))
        deltas[account_id] += new - amount
    tx.update("transactions", ("amount",), rows)
    tx.add_later("accounts", "balance", deltas)


def reverse(tx: Tx) -> None:
    """Reversed transactions are removed and their amounts taken off the balance."""
    if tx.remaining < 2:
        return
    gone = tx.delete(
        "transactions",
        tx.pick("transactions", min(3, tx.remaining // 2)),
        returning=("account_id", "amount"),
    )
    deltas: dict[int, Decimal] = defaultdict(lambda: _ZERO)
    for _, account_id, amount in gone:
        deltas[account_id] -= amount
    tx.add_later("accounts", "balance", deltas)


def close_account(tx: Tx) -> None:
    """An account is closed and purged with its transactions (children first)."""
    tx.delete_tree("accounts", tx.pick("accounts", 1), [("transactions", "account_id")])


def forget_customer(tx: Tx) -> None:
    """A customer without accounts asks to be forgotten: their addresses go, then they do.

    Locked first, so no account can be opened for them meanwhile (that needs a key-share
    lock on the customer)."""
    ids = [row[0] for row in tx.lock("customers", tx.pick("customers", 2), mode="update")]
    accounts = tx.count_children("accounts", "customer_id", ids)
    lonely = [c for c in ids if not accounts.get(c)]
    tx.delete_tree("customers", lonely, [("addresses", "customer_id")])


PROFILE = Profile(
    name="bank",
    tables=(CUSTOMERS, ADDRESSES, ACCOUNTS, TRANSACTIONS),
    operations=(
        Operation("insert", "onboard", 1, onboard),
        Operation("insert", "post_transactions", 5, post_transactions),
        Operation("update", "settle", 3, settle),
        Operation("update", "review_customer", 1, review_customer),
        Operation("update", "change_account", 1, change_account),
        Operation("update", "move_house", 1, move_house),
        Operation("update", "correct_amount", 1, correct_amount),
        Operation("delete", "reverse", 4, reverse),
        Operation("delete", "close_account", 1, close_account),
        Operation("delete", "forget_customer", 1, forget_customer),
    ),
)
