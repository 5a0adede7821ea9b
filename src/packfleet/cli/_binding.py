"""``packfleet binding``: the master's certificate bindings, as ``netsh http show|add|delete sslcert``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from packfleet import trust
from packfleet.cli._main import cli
from packfleet.cli._output import CliState, json_option
from packfleet.config import (
    BINDINGS_FILE,
    MASTER_SETTINGS_FILE,
    Binding,
    add_binding,
    delete_binding,
    format_ipport,
    get_binding,
    load_bindings,
    load_master_settings,
    new_appid,
)
from packfleet.errors import PkiError, SettingsError
from packfleet.pki import CertStore
from packfleet.thumbprint import normalize_thumbprint

# netsh's wildcard ipport ("every address"), written into the bindings table; nothing binds it here.
_ALL_ADDRESSES = trust.WILDCARD

_ip_option = click.option(
    "--ip",
    default=_ALL_ADDRESSES,
    show_default=True,
    help="Address part of the ipport; 0.0.0.0 means every address, as netsh's ipport=0.0.0.0:PORT.",
)


def _describe(binding: Binding) -> list[str]:
    # The layout of `netsh http show sslcert`, so the seed's screenshots match what people see.
    return [
        f"    IP:port                      : {binding.ipport}",
        f"    Certificate Hash             : {binding.certhash}",
        f"    Application ID               : {binding.appid}",
        f"    Certificate Store Name       : {binding.certstorename}",
    ]


def binding_disagreement(home: Path) -> str | None:
    """The binding rule's first error as a note, when SSLCertThumbprint and the binding on its port differ.

    The master refuses to start while they disagree, and the seed changes them in two separate steps,
    so the first step is the moment to remind. The words and the fix are the rule's
    (:func:`packfleet.trust.binding_rule`), the ones ``doctor`` and the master's start give.
    """
    if not (home / MASTER_SETTINGS_FILE).exists():
        return None
    try:
        master = load_master_settings(home)
        load_bindings(home)
    except SettingsError:
        return None  # a broken file is reported by the command that reads it, not by a reminder
    refused = trust.errors(trust.binding_rule(home, master))
    if not refused:
        return None
    return escape(f"note: {refused[0].message}\n  fix: {refused[0].fix}")


@cli.group("binding")
def binding_group() -> None:
    """The master's certificate bindings: which certificate answers on which ip:port.

    packfleet's form of HTTP.SYS's sslcert table (`netsh http ... sslcert`), kept in
    <home>/bindings.json. The master serves the certificate bound to 0.0.0.0:PortNumber and picks
    up a changed binding without a restart; MasterSettings.config's SSLCertThumbprint must name the
    same certificate.
    """


@binding_group.command("show")
@click.option("--port", type=click.IntRange(1, 65535), help="Port of the binding; all bindings without it.")
@_ip_option
@json_option
@click.pass_obj
def show_binding(state: CliState, port: int | None, ip: str) -> None:
    """Show the binding on an ip:port, or every binding without --port.

    \b
    netsh equivalent:
      netsh http show sslcert ipport=0.0.0.0:8391
    Example:
      packfleet --home /srv/m binding show --port 8391
    """
    home = state.home()
    if port is None:
        bindings = load_bindings(home)

        def human_all(out: Console) -> None:
            out.print(f"SSL Certificate bindings ({home / BINDINGS_FILE}):")
            out.print("-" * 25)
            if not bindings:
                out.print("\n    (none)")
            for binding in bindings:
                out.print("")
                out.print("\n".join(_describe(binding)))

        state.emit([b.to_dict() for b in bindings], human_all)
        return
    ipport = format_ipport(ip, port)
    found = get_binding(home, ipport)
    if found is None:
        raise SettingsError(
            f"no binding for {ipport} in {home / BINDINGS_FILE}",
            fix=f"packfleet binding add --ip {ip} --port {port} --certhash THUMBPRINT --store Root",
        )
    state.emit(found.to_dict(), lambda out: out.print("\n".join(_describe(found))))


@binding_group.command("add")
@click.option(
    "--port", type=click.IntRange(1, 65535), required=True, help="Port to bind (MasterSettings' PortNumber)."
)
@_ip_option
@click.option(
    "--certhash", required=True, help="Thumbprint of the certificate (spaces, colons, lowercase are fine)."
)
@click.option(
    "--store",
    type=click.Choice(["My", "Root"], case_sensitive=False),
    required=True,
    help="Store that holds the certificate and its key (netsh's certstorename).",
)
@click.option("--appid", help="Application GUID; default: a new one. The seed keeps the original one.")
@json_option
@click.pass_obj
def add_binding_command(
    state: CliState, port: int, ip: str, certhash: str, store: str, appid: str | None
) -> None:
    """Bind a certificate of this home's store to an ip:port; an ip:port that is bound is refused.

    \b
    netsh equivalent:
      netsh http add sslcert ipport=0.0.0.0:8391 certhash=T certstorename=Root appid={GUID}
    Example:
      packfleet --home /srv/m binding add --port 8391 --certhash A94B0C... --store Root --appid {4dc3e181-...}
    """
    home = state.home()
    thumbprint = normalize_thumbprint(certhash, what="certhash")
    credential = CertStore(home, store).get(thumbprint)
    if credential.private_key is None:
        # HTTP.SYS refuses the same binding (netsh error 1312): a server certificate without its key
        # cannot complete a handshake.
        raise PkiError(
            f"certificate {thumbprint} is in store {store} without its private key; "
            "the master cannot serve it",
            fix=f"import it with its key: packfleet cert import FILE --store {store}",
        )
    binding = add_binding(
        home,
        Binding(
            ipport=format_ipport(ip, port),
            certhash=thumbprint,
            certstorename=store,
            appid=appid or new_appid(),
        ),
    )

    def human(out: Console) -> None:
        out.print("SSL Certificate successfully added")
        out.print("\n".join(_describe(binding)))

    state.emit(binding.to_dict(), human)
    warning = binding_disagreement(home)
    if warning:
        state.note(warning)


@binding_group.command("delete")
@click.option("--port", type=click.IntRange(1, 65535), required=True, help="Port of the binding to delete.")
@_ip_option
@json_option
@click.pass_obj
def delete_binding_command(state: CliState, port: int, ip: str) -> None:
    """Delete the binding on an ip:port and print what it was (note its appid to keep it).

    \b
    netsh equivalent:
      netsh http delete sslcert ipport=0.0.0.0:8391
    Example:
      packfleet --home /srv/m binding delete --port 8391
    """
    home = state.home()
    removed = delete_binding(home, format_ipport(ip, port))

    def human(out: Console) -> None:
        out.print("SSL Certificate successfully deleted")
        out.print("\n".join(_describe(removed)))

    state.emit(removed.to_dict(), human)
    state.note(
        f"to bind a new certificate keeping this appid, as the seed does: packfleet binding add "
        f"--ip {ip} --port {port} --certhash NEW_THUMBPRINT --store {removed.certstorename} "
        f"--appid {removed.appid}"
    )
