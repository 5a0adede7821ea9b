"""``packfleet manager certs``: every certificate of the fleet and the days it has left."""

from __future__ import annotations

from rich.console import Console

from packfleet.cli._client import call, state
from packfleet.cli._manager import EXPIRY_STYLE, manager_group
from packfleet.cli._output import Column, json_option, print_table
from packfleet.expiry import URGENT_DAYS, WARN_DAYS
from packfleet.protocol import CertificateEntry


@manager_group.command("certs")
@json_option
def certs() -> None:
    """List the fleet's certificates with their days left, soonest to expire first.

    The certificate the master serves (and any other in its Root store with a key), the admin and
    executor certificates, and every worker certificate in the catalog. Warnings at 30 and 7 days;
    --json gives each entry days_left and warning (null, "30d", "7d" or "expired").

    \b
    packfleet manager certs
    packfleet manager certs --json | jq '.[] | select(.warning != null)'
    """
    entries = call(lambda c: c.certificates())
    entries.sort(key=lambda e: (e.days_left is None, e.days_left or 0.0))
    state().emit(entries, lambda out: _table(out, entries))


def _table(out: Console, entries: list[CertificateEntry]) -> None:
    rows: list[list[str]] = []
    for entry in entries:
        days = entry.days_left
        left = "-" if days is None else f"{days:.0f}"
        level = entry.warning
        if level:
            left = f"[{EXPIRY_STYLE[level]}]{left} ({level})[/]"
        rows.append(
            [
                entry.role,
                entry.thumbprint,
                entry.name,
                entry.worker or "",
                entry.status,
                (entry.not_after or "-")[:10],
                left,
            ]
        )
    columns: list[Column | str] = [
        "role",
        Column("thumbprint", key=True),
        "name",
        "worker",
        "status",
        "expires",
        "days left",
    ]
    print_table(out, columns, rows)
    flagged = sum(1 for e in entries if e.warning)
    if flagged:
        out.print(
            f"{flagged} certificate(s) expire within {WARN_DAYS} days ({URGENT_DAYS} days is urgent) or "
            "have expired: rotate them (packfleet doctor on each node names the command)"
        )
