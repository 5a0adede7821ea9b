"""``load``: read the orders CSV, clean and price each row, and write them to SQLite in batches."""

from __future__ import annotations

import csv
import sqlite3
from decimal import Decimal, InvalidOperation
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id   INTEGER PRIMARY KEY,
    order_date TEXT NOT NULL,
    customer   TEXT NOT NULL,
    region     TEXT NOT NULL,
    product    TEXT NOT NULL,
    quantity   INTEGER NOT NULL,
    unit_price REAL NOT NULL,
    amount     REAL NOT NULL
)
"""
INSERT = "INSERT OR REPLACE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///relative`` or ``sqlite:////absolute`` SQLAlchemy URL."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"target_db must be a sqlite:/// URL naming a file, got {url!r}")
    return url[len(prefix) :]


def transform(row: dict[str, str]) -> tuple[Any, ...]:
    quantity = int(row["quantity"])
    if quantity <= 0:
        raise ValueError(f"quantity {quantity} is not positive")
    price = Decimal(row["unit_price"])
    return (
        int(row["order_id"]),
        row["order_date"].strip(),
        " ".join(row["customer"].split()).title(),
        row["region"].strip().upper(),
        row["product"].strip().lower(),
        quantity,
        float(price),
        float(price * quantity),
    )


def main(ctx: Any) -> None:
    source = ctx.project_dir / ctx.parameters["source"]
    database = sqlite_path(ctx.connection("target_db"))
    batch_size = ctx.parameters["batch_size"]
    ctx.log.info("reading %s into %s (batches of %d)", source.name, database, batch_size)
    loaded, skipped, total = 0, 0, Decimal(0)
    with source.open(newline="", encoding="utf-8") as handle, sqlite3.connect(database) as db:
        db.execute(SCHEMA)
        batch: list[tuple[Any, ...]] = []
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                record = transform(row)
            except (ValueError, KeyError, InvalidOperation) as exc:
                ctx.log.warning("line %d skipped: %s", line, exc)
                skipped += 1
                continue
            batch.append(record)
            total += Decimal(str(record[-1]))
            if len(batch) >= batch_size:
                db.executemany(INSERT, batch)
                loaded += len(batch)
                ctx.log.info("wrote %d rows", loaded)
                batch.clear()
        db.executemany(INSERT, batch)
        loaded += len(batch)
    ctx.log.info("committed %d rows", loaded)
    print(f"loaded {loaded} orders, skipped {skipped}, revenue {total:.2f}")
