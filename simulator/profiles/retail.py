"""`retail`: stores and items (reference data), sales with their items and payments, vouchers.

Stores and items are seeded once by `setup` and only updated afterwards (prices, activity),
never deleted, so sales can reference them without locking. A voucher is redeemed under a
row lock, and only unredeemed vouchers are ever deleted, so payments never lose theirs.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal

from tidemark.simulator.engine import Tx
from tidemark.simulator.profiles.base import Operation, Profile, Reference
from tidemark.simulator.schema import Column, table
from tidemark.simulator.values import email, maybe, money, pools

STORES = table(
    "stores",
    Column("code", "code", length=12),
    Column("name", "text"),
    Column("city", "text", length=100),
    Column("country", "code", length=2),
    Column("opened_on", "date"),
    unique=("code",),
)
ITEMS = table(
    "items",
    Column("sku", "code", length=20),
    Column("name", "text"),
    Column("category", "code", length=20),
    Column("unit_price", "money"),
    Column("is_active", "bool"),
    unique=("sku",),
)
VOUCHERS = table(
    "vouchers",
    Column("code", "code", length=24),
    Column("value", "money"),
    Column("currency", "code", length=3),
    Column("expires_on", "date", nullable=True),
    Column("redeemed", "bool"),
)
SALES = table(
    "sales",
    Column("store_id", "ref", references="stores"),
    Column("customer_name", "text", nullable=True),
    Column("customer_email", "code", nullable=True, length=200),
    Column("status", "code", length=10, choices=("open", "paid", "refunded", "cancelled")),
    Column("total", "money"),
    Column("currency", "code", length=3),
    Column("sold_at", "ts", default_now=True),
)
SALE_ITEMS = table(
    "sale_items",
    Column("sale_id", "ref", references="sales"),
    Column("item_id", "ref", references="items"),
    Column("quantity", "int"),
    Column("unit_price", "money"),
    Column("discount", "money", nullable=True),
)
PAYMENTS = table(
    "payments",
    Column("sale_id", "ref", references="sales"),
    Column("voucher_id", "ref", nullable=True, references="vouchers"),
    Column("method", "code", length=10, choices=("card", "cash", "voucher", "mobile")),
    Column("amount", "money"),
    Column("status", "code", length=12, choices=("authorized", "captured", "refunded")),
)
CATEGORIES = (
    "grocery",
    "bakery",
    "dairy",
    "household",
    "toys",
    "garden",
    "electronics",
    "clothing",
    "books",
    "beauty",
)
N_STORES, N_ITEMS = 25, 400
SALE_COLS = ("store_id", "customer_name", "customer_email", "status", "total", "currency")
LINE_COLS = ("sale_id", "item_id", "quantity", "unit_price", "discount")
PAYMENT_COLS = ("sale_id", "voucher_id", "method", "amount", "status")
VOUCHER_COLS = ("code", "value", "currency", "expires_on", "redeemed")


def reference() -> dict[str, Reference]:
    """Stores and items: the same rows every time (seed 0), whatever `--seed` says."""
    r, p = random.Random(0), pools(0)
    stores = [
        (
            f"S{i:04d}",
            f"{p.companies[i]} {p.cities[i]}",
            p.cities[i],
            p.countries[i],
            date(2000, 1, 1) + timedelta(days=r.randint(0, 9000)),
        )
        for i in range(N_STORES)
    ]
    items = [
        (
            f"SKU-{i:06d}",
            f"{p.words[i % len(p.words)]} {p.words[(i * 7) % len(p.words)]}",
            r.choice(CATEGORIES),
            money(r, 0.49, 899),
            r.random() > 0.03,
        )
        for i in range(N_ITEMS)
    ]
    return {
        "stores": ("code", ("code", "name", "city", "country", "opened_on"), stores),
        "items": ("sku", ("sku", "name", "category", "unit_price", "is_active"), items),
    }


def _voucher(tx: Tx) -> tuple[object, ...]:
    r = tx.rng
    code = "".join(r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(12))
    return (
        code,
        money(r, 5, 100),
        "EUR",
        maybe(r, date(2026, 1, 1) + timedelta(days=r.randint(0, 730)), 0.3),
        False,
    )


def checkout(tx: Tx) -> None:
    """A sale: the sale row, its lines, and a payment (sometimes redeeming a voucher)."""
    if tx.remaining < 3:
        return
    r, p = tx.rng, tx.pools
    # reference rows: any item sells (a "recent" skew would make a few items hot spots)
    items = tx.lock("items", tx.pick("items", r.randint(1, 5), "uniform"), ("unit_price",))
    items = items[: tx.remaining - 2]
    if not items:
        return
    voucher = []
    if r.random() < 0.15 and tx.remaining - 2 - len(items) >= 1:
        voucher = [
            v
            for v in tx.lock(
                "vouchers", tx.pick("vouchers", 1), ("value", "redeemed"), mode="update"
            )
            if not v[2]
        ]
    lines = [
        (
            iid,
            r.choice((1, 1, 1, 2, 3)),
            price,
            maybe(r, (price * Decimal("0.1")).quantize(Decimal("0.01")), 0.85),
        )
        for iid, price in items
    ]
    total = sum(((q * price) - (d or 0) for _, q, price, d in lines), Decimal("0.00"))
    name = maybe(r, f"{r.choice(p.first_names)} {r.choice(p.last_names)}", 0.4)
    (sale_id,) = tx.insert(
        "sales",
        SALE_COLS,
        [(r.randint(1, N_STORES), name, maybe(r, email(r, p), 0.6), "paid", total, "EUR")],
    )
    tx.insert("sale_items", LINE_COLS, [(sale_id, *line) for line in lines])
    if voucher:
        vid, value, _ = voucher[0]
        tx.update("vouchers", ("redeemed",), [(vid, True)])
        tx.insert(
            "payments",
            PAYMENT_COLS,
            [(sale_id, vid, "voucher", min(value, total), "captured")][: tx.remaining],
        )
    else:
        method = r.choices(("card", "cash", "mobile"), weights=(60, 25, 15))[0]
        tx.insert("payments", PAYMENT_COLS, [(sale_id, None, method, total, "authorized")])


def issue_vouchers(tx: Tx) -> None:
    tx.insert(
        "vouchers",
        VOUCHER_COLS,
        [_voucher(tx) for _ in range(min(tx.rng.randint(1, 3), tx.remaining))],
    )


def refund(tx: Tx) -> None:
    tx.update(
        "sales",
        ("status",),
        [(s, tx.rng.choice(("refunded", "paid"))) for s in tx.pick("sales", tx.rng.randint(1, 2))],
    )


def capture(tx: Tx) -> None:
    tx.update(
        "payments",
        ("status",),
        [(pid, "captured") for pid in tx.pick("payments", tx.rng.randint(1, 4))],
    )


def change_quantity(tx: Tx) -> None:
    tx.update(
        "sale_items",
        ("quantity",),
        [(li, tx.rng.randint(1, 4)) for li in tx.pick("sale_items", tx.rng.randint(1, 3))],
    )


def reprice(tx: Tx) -> None:
    """Reference data changes too: an item's price or availability."""
    r = tx.rng
    tx.update(
        "items",
        ("unit_price", "is_active"),
        [(i, money(r, 0.49, 899), r.random() > 0.03) for i in tx.pick("items", 1, "uniform")],
    )


def extend_voucher(tx: Tx) -> None:
    tx.update(
        "vouchers",
        ("expires_on",),
        [
            (v, date(2026, 1, 1) + timedelta(days=tx.rng.randint(0, 900)))
            for v in tx.pick("vouchers", 1)
        ],
    )


def cancel_sale(tx: Tx) -> None:
    """A cancelled sale disappears with its lines and payments (children first)."""
    tx.delete_tree(
        "sales", tx.pick("sales", 1), [("sale_items", "sale_id"), ("payments", "sale_id")]
    )


def purge_vouchers(tx: Tx) -> None:
    """Unredeemed vouchers are withdrawn; redeemed ones stay (payments point at them)."""
    tx.delete(
        "vouchers",
        tx.pick("vouchers", tx.rng.randint(1, 2)),
        match=(False,),
        match_cols=("redeemed",),
    )


PROFILE = Profile(
    name="retail",
    tables=(STORES, ITEMS, VOUCHERS, SALES, SALE_ITEMS, PAYMENTS),
    operations=(
        Operation("insert", "checkout", 6, checkout),
        Operation("insert", "issue_vouchers", 1, issue_vouchers),
        Operation("update", "refund", 1, refund),
        Operation("update", "capture", 3, capture),
        Operation("update", "change_quantity", 1, change_quantity),
        Operation("update", "reprice", 1, reprice),
        Operation("update", "extend_voucher", 1, extend_voucher),
        Operation("delete", "cancel_sale", 3, cancel_sale),
        Operation("delete", "purge_vouchers", 1, purge_vouchers),
    ),
    reference=reference,
)
