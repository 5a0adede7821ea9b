"""``packfleet manager token``: join tokens, so a worker joins with one command (``worker join TOKEN``)."""

from __future__ import annotations

import re
from datetime import timedelta

import click
from rich.console import Console

from packfleet.cli._client import call, state
from packfleet.cli._manager import manager_group
from packfleet.cli._output import Column, json_option, print_table, short_time
from packfleet.config import parse_timespan
from packfleet.errors import InvalidValue, PackfleetError
from packfleet.protocol import MAX_TOKEN_USES, CreateToken, JoinTokenView

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    """A token lifetime as people type it (``1h``, ``30m``, ``2d12h``) or as .NET TimeSpan text
    (``01:00:00``), within the bounds the master takes (:class:`packfleet.protocol.CreateToken`)."""
    ttl = _duration(value)
    try:
        CreateToken(ttl_seconds=ttl.total_seconds()).check()
    except InvalidValue as exc:
        raise click.BadParameter(f"{value!r}: {exc.message}") from None
    return ttl


def _duration(value: str) -> timedelta:
    text = value.strip().lower()
    match = _DURATION.fullmatch(text)
    if text and match is not None:
        days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
        try:
            return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        except OverflowError:
            raise click.BadParameter(f"{value!r} is too long a lifetime (at most 365 days)") from None
    try:
        return parse_timespan(text)
    except OverflowError:
        raise click.BadParameter(f"{value!r} is too long a lifetime (at most 365 days)") from None
    except PackfleetError:
        raise click.BadParameter(f"{value!r} is not a duration such as 1h, 30m, 2d or 01:00:00") from None


@manager_group.group("token")
def token_group() -> None:
    """Join tokens: one string that lets a worker join this master (kubeadm-style).

    \b
    packfleet manager token create --enable        # prints pfjoin1.…; on the worker:
    packfleet worker join pfjoin1.…                # certificate, trust and registration in one step
    packfleet manager token list
    packfleet manager token revoke TOKEN_ID
    """


def print_token(out: Console, created: JoinTokenView, *, agent: str | None = None) -> None:
    """Show a new token and the one command that uses it."""
    out.print(created.token)
    uses = created.uses
    who = f"worker {agent}" if agent else f"{uses} worker(s)"
    until = created.expires_at[:16].replace("T", " ") + " UTC"
    out.print(
        f"\ntoken {created['token_id']}: admits {who} until {until}"
        + (", enabled at once" if created.enable else ", disabled until you enable them")
    )
    out.print(f"master {created['endpoint']}, certificate SHA-256 {created['master_sha256']}")
    out.print("on the worker:  packfleet worker join TOKEN   (the whole line above)")


@token_group.command("create")
@click.option(
    "--ttl", default="1h", callback=parse_duration, show_default=True, help="How long the token is valid."
)
@click.option(
    "--uses", default=1, show_default=True, type=click.IntRange(1, MAX_TOKEN_USES), help="Workers it admits."
)
@click.option("--enable", is_flag=True, help="Enable the workers that join with it at once.")
@click.option("--endpoint", metavar="URL", help="https://HOST:PORT for workers. Default: MasterAddress.")
@json_option
def token_create(ttl: timedelta, uses: int, enable: bool, endpoint: str | None) -> None:
    """Make a join token. Its secret is shown only now; the master keeps a hash of it.

    The token carries the master's endpoint (MasterAddress in MasterSettings.config unless
    --endpoint), the SHA-256 of the certificate the master serves, and the secret.

    \b
    packfleet manager token create --ttl 2h --uses 5 --enable
    """
    created = call(
        lambda c: c.create_token(
            ttl_seconds=ttl.total_seconds(), uses=uses, enable=enable, endpoint=endpoint or ""
        )
    )
    state().emit(created, lambda out: print_token(out, created))


def _tokens_table(out: Console, tokens: list[JoinTokenView]) -> None:
    rows: list[list[str]] = []
    for t in tokens:
        status = t.status if t.status == "usable" else f"[yellow]{t.status}[/]"
        rows.append(
            [
                t.token_id,
                status,
                str(t.uses_left),
                str(t.admitted),
                "yes" if t.enable else "no",
                t.agent_id or "-",
                short_time(t.expires_at),
                t.created_by,
            ]
        )
    columns: list[Column | str] = [Column("token id", key=True), "status", "uses left", "admitted", "enable"]
    print_table(out, [*columns, Column("worker", key=True), "expires", "by"], rows)


@token_group.command("list")
@json_option
def token_list() -> None:
    """List join tokens: status, uses left, bound worker, expiry. Secrets are never shown."""
    tokens = call(lambda c: c.list_tokens())
    state().emit(tokens, lambda out: _tokens_table(out, tokens))


@token_group.command("revoke")
@click.argument("token_id")
@json_option
def token_revoke(token_id: str) -> None:
    """Revoke a join token: no worker can join with it any more (workers that joined stay)."""
    record = call(lambda c: c.revoke_token(token_id))
    state().emit(record, lambda out: out.print(f"join token {record['token_id']} revoked"))
