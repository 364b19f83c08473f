"""`customers`: customers and their billing/shipping addresses (the smallest useful schema)."""

from __future__ import annotations

from datetime import date, timedelta

from tidemark.simulator.engine import Tx
from tidemark.simulator.profiles.base import Operation, Profile
from tidemark.simulator.schema import Column, table
from tidemark.simulator.values import email, maybe

CUSTOMERS = table(
    "customers",
    Column("first_name", "text", length=100),
    Column("last_name", "text", length=100),
    Column("email", "code", nullable=True, length=200),
    Column("phone", "code", nullable=True, length=40),
    Column("birth_date", "date", nullable=True),
    Column("country", "code", length=2),
    Column("loyalty_points", "int"),
    Column("is_active", "bool"),
    Column("created_at", "ts", default_now=True),
)
ADDRESSES = table(
    "addresses",
    Column("customer_id", "ref", references="customers"),
    Column("address_type", "code", length=10, choices=("billing", "shipping")),
    Column("line1", "text"),
    Column("line2", "text", nullable=True),
    Column("city", "text", length=100),
    Column("postal_code", "code", nullable=True, length=20),
    Column("country", "code", length=2),
    Column("is_default", "bool"),
)
CUSTOMER_COLS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "birth_date",
    "country",
    "loyalty_points",
    "is_active",
)
ADDRESS_COLS = (
    "customer_id",
    "address_type",
    "line1",
    "line2",
    "city",
    "postal_code",
    "country",
    "is_default",
)
_EPOCH = date(1940, 1, 1)


def customer_row(tx: Tx) -> tuple[object, ...]:
    """A new customer's values (shared with the bank profile's onboarding)."""
    r, p = tx.rng, tx.pools
    i = r.randrange(len(p.first_names))
    return (
        p.first_names[i],
        r.choice(p.last_names),
        maybe(r, email(r, p), 0.1),
        maybe(r, r.choice(p.phones), 0.25),
        maybe(r, _EPOCH + timedelta(days=r.randint(0, 25000)), 0.2),
        p.countries[i],
        r.randint(0, 5000),
        r.random() > 0.05,
    )


def address_row(tx: Tx, customer_id: int, kind: str, default: bool) -> tuple[object, ...]:
    """An address of `kind` for a customer (shared with the bank profile)."""
    r, p = tx.rng, tx.pools
    i = r.randrange(len(p.streets))
    return (
        customer_id,
        kind,
        p.streets[i],
        maybe(r, f"Apt. {r.randint(1, 400)}", 0.7),
        p.cities[i],
        maybe(r, p.postcodes[i], 0.05),
        p.countries[i],
        default,
    )


def sign_up(tx: Tx) -> None:
    """New customers, most with a billing and some with a shipping address."""
    n = min(tx.rng.randint(1, 3), tx.remaining)
    ids = tx.insert("customers", CUSTOMER_COLS, [customer_row(tx) for _ in range(n)])
    rows = []
    for cid in ids:
        for kind in ("billing", "shipping")[: tx.rng.randint(0, 2)]:
            rows.append(address_row(tx, cid, kind, kind == "billing"))
    tx.insert("addresses", ADDRESS_COLS, rows[: tx.remaining])


def add_address(tx: Tx) -> None:
    """Existing customers add an address (only those still there; they stay until commit)."""
    rows = [
        address_row(tx, cid, tx.rng.choice(("billing", "shipping")), False)
        for cid in tx.pick("customers", min(3, tx.remaining))
    ]
    tx.insert_children("addresses", ADDRESS_COLS, rows, fk="customer_id", parent="customers")


def edit_customer(tx: Tx) -> None:
    r, p = tx.rng, tx.pools
    rows = [
        (cid, maybe(r, email(r, p), 0.05), maybe(r, r.choice(p.phones), 0.2), r.randint(0, 9000))
        for cid in tx.pick("customers", r.randint(1, 4))
    ]
    tx.update("customers", ("email", "phone", "loyalty_points"), rows)


def edit_address(tx: Tx) -> None:
    r, p = tx.rng, tx.pools
    rows = []
    for aid in tx.pick("addresses", r.randint(1, 3)):
        i = r.randrange(len(p.streets))
        rows.append((aid, p.streets[i], p.cities[i], maybe(r, p.postcodes[i], 0.05)))
    tx.update("addresses", ("line1", "city", "postal_code"), rows)


def remove_address(tx: Tx) -> None:
    tx.delete("addresses", tx.pick("addresses", tx.rng.randint(1, 2)))


def close_customer(tx: Tx) -> None:
    """A customer leaves: their addresses go first, then the customer (FKs stay valid)."""
    tx.delete_tree("customers", tx.pick("customers", 1), [("addresses", "customer_id")])


PROFILE = Profile(
    name="customers",
    tables=(CUSTOMERS, ADDRESSES),
    operations=(
        Operation("insert", "sign_up", 3, sign_up),
        Operation("insert", "add_address", 1, add_address),
        Operation("update", "edit_customer", 2, edit_customer),
        Operation("update", "edit_address", 1, edit_address),
        Operation("delete", "remove_address", 2, remove_address),
        Operation("delete", "close_customer", 1, close_customer),
    ),
)
