"""``packfleet cert``: MakeCert, certmgr and winhttpcertcfg for a node's ``My`` and ``Root`` stores."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import click
from rich.console import Console
from rich.table import Table

from packfleet.cli._main import cli
from packfleet.cli._output import CliState, json_option
from packfleet.errors import CertificateNotFound, UsageError
from packfleet.pki import (
    KEY_TYPES,
    STORE_NAMES,
    CertInfo,
    CertStore,
    check_usable,
    create_self_signed,
    export_certificate,
    export_pfx,
    load_credential,
    parse_names,
)
from packfleet.thumbprint import normalize_thumbprint

_STORE_CHOICE = click.Choice(STORE_NAMES, case_sensitive=False)
_PFX_SUFFIXES = (".pfx", ".p12")
_STORE_HELP = "Store to install into: My (personal, with keys) or Root (trusted)."


def _state() -> CliState:
    return click.get_current_context().ensure_object(CliState)


def _stores(store: str | None) -> list[CertStore]:
    home = _state().home()
    return [CertStore(home, name) for name in ([store] if store else STORE_NAMES)]


def _joined(parts: Sequence[str]) -> str:
    # Windows' certificate dialog shows "a9 4b 0c ..."; pasted unquoted, that is many arguments.
    return " ".join(parts)


def _locate(thumbprint: str, store: str | None) -> tuple[CertStore, str]:
    """The store holding the certificate (``store``, or My then Root) and its normalised thumbprint.

    Only the certificate file is looked at: showing a certificate must not need its private key.
    """
    wanted = normalize_thumbprint(thumbprint)
    stores = _stores(store)
    for candidate in stores:
        if candidate.contains(wanted):
            return candidate, wanted
    if len(stores) == 1:
        where, fix = f"store {stores[0].name} ({stores[0].path})", f" --store {stores[0].name}"
    else:
        where, fix = f"store My or Root ({stores[0].path.parent})", ""
    raise CertificateNotFound(f"no certificate {wanted} in {where}", fix=f"packfleet cert list{fix}")


def _describe(info: CertInfo) -> str:
    names = ", ".join(info.subject_cns) or info.subject
    return f"{info.thumbprint}  {names}  expires {info.not_after:%Y-%m-%d}"


def _select(store: CertStore, thumbprint: str, cn: str | None, *, many: bool | None) -> list[CertInfo]:
    """Resolve ``THUMBPRINT | --cn CN`` to store entries.

    A CN matching several certificates is refused and the matches listed, unless ``many`` is true
    (``--all`` given); ``many=None`` means the command has no ``--all``.
    """
    if thumbprint and not cn:
        return [store.info(thumbprint)]
    if not cn or thumbprint:
        raise UsageError(
            "name the certificate by its thumbprint or by --cn, not both and not neither",
            fix=f"packfleet cert list --store {store.name}",
        )
    matches = store.find_by_cn(cn)
    if not matches:
        raise CertificateNotFound(
            f"no certificate with CN {cn!r} in store {store.name} ({store.path})",
            fix=f"packfleet cert list --store {store.name}",
        )
    if len(matches) > 1 and not many:
        listing = "\n".join(f"  {_describe(info)}" for info in matches)
        raise UsageError(
            f"CN {cn!r} matches {len(matches)} certificates in store {store.name}:\n{listing}",
            fix="give the thumbprint of the one you mean"
            + (", or --all for every one of them" if many is not None else ""),
        )
    return matches


def _print_info(info: CertInfo) -> None:
    def human(out: Console) -> None:
        rows = [
            ("Thumbprint", info.thumbprint),
            ("SHA-256", info.sha256),
            ("Store", info.store or "-"),
            ("Subject", info.subject),
            ("DNS names", ", ".join(info.san_dns) or "-"),
            ("IP addresses", ", ".join(info.san_ip) or "-"),
            ("Valid from", f"{info.not_before:%Y-%m-%d %H:%M:%S} UTC"),
            ("Valid until", f"{info.not_after:%Y-%m-%d %H:%M:%S} UTC ({info.days_left():.0f} days left)"),
            ("Key", f"{info.key_type}, {'with' if info.has_private_key else 'no'} private key"),
            ("Serial", info.serial),
            ("Self-signed", "yes" if info.self_signed else "no"),
        ]
        for label, value in rows:
            out.print(f"{label + ':':<14}{value}")

    _state().emit(info.to_dict(), human)


@cli.group("cert")
def cert_group() -> None:
    """Certificates and stores (My, Root): what MakeCert, certmgr and winhttpcertcfg do on Windows.

    A store is a folder of the node home: <home>/certs/My (personal certificates with their private
    keys) and <home>/certs/Root (trusted certificates). Certificates are named by their thumbprint
    (SHA-1, as Windows shows it); spaces, colons and lowercase are fine.

    \b
      packfleet cert create -n "CN=worker1;CN=10.0.0.7" --store My
      packfleet cert list
      packfleet cert import master.cer --store Root
    """


@cert_group.command("create")
@click.option("-n", "--names", "names", required=True, help='CNs, MakeCert style: "CN=a;CN=b".')
@click.option(
    "-r",
    "--self-signed",
    is_flag=True,
    help="Accepted for MakeCert compatibility; every packfleet certificate is self-signed.",
)
@click.option(
    "--store",
    "-ss",
    type=_STORE_CHOICE,
    required=True,
    help=_STORE_HELP,
)
@click.option("--key", "key_type", type=click.Choice(KEY_TYPES), default="ecdsa-p256", show_default=True)
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also export the public certificate: DER .cer (PEM if FILE ends with .pem).",
)
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@json_option
def create_command(
    names: str,
    self_signed: bool,
    store: str,
    key_type: str,
    days: int,
    out: Path | None,
    file: Path | None,
) -> None:
    """Make a key and a self-signed certificate and install both in a store (MakeCert).

    Every name becomes a CN and a subjectAltName (an IP address when it is one), so clients can
    reach the node by any of them. The certificate is what packfleet's TLS accepts as a pinned
    trust anchor: ECDSA P-256 by default, CA:FALSE, serverAuth + clientAuth.

    \b
    Windows:
      MakeCert.exe -n CN=master.example.com SSISScaleOutMaster.cer -r -ss Root -sr LocalMachine
    packfleet:
      packfleet --location LocalMachine cert create -n CN=master.example.com master.cer -r -ss Root
      packfleet cert create -n "CN=master.example.com;CN=10.0.0.5" --store Root --out master.cer
      packfleet cert create -n "CN=worker1;CN=10.0.0.7" -r --store My --key rsa-2048
    """
    if file is not None and out is not None and file != out:
        raise UsageError(f"two output files given ({file} and --out {out})", fix="give one: --out FILE")
    target = out or file
    cred = create_self_signed(parse_names(names), key_type=key_type, days=days)
    info = CertStore(_state().home(), store).add(cred)
    if target is not None:
        export_certificate(cred, target, encoding=_encoding_for(target))
    state = _state()
    state.emit(info.to_dict(), lambda out_: out_.print(info.thumbprint))
    state.note(
        f"created {', '.join(info.subject_cns)} ({info.key_type}, until {info.not_after:%Y-%m-%d})"
        f" in store {info.store}" + (f"; public certificate written to {target}" if target else "")
    )


def _encoding_for(path: Path) -> Literal["der", "pem"]:
    return "pem" if path.suffix.lower() == ".pem" else "der"


@cert_group.command("list")
@click.option("--store", type=_STORE_CHOICE, help="Only this store (default: My and Root).")
@json_option
def list_command(store: str | None) -> None:
    """List the certificates of the stores (certmgr /s My; Get-ChildItem Cert:\\LocalMachine\\My).

    \b
    Windows:
      certmgr.exe /s /r localmachine My
    packfleet:
      packfleet cert list
      packfleet cert list --store Root --json
    """
    infos = [info for cert_store in _stores(store) for info in cert_store.list()]

    def human(out: Console) -> None:
        if not infos:
            out.print("no certificates")
            return
        table = Table(box=None, pad_edge=False)
        for column in ("Store", "Thumbprint", "CNs", "Expires", "Days left", "Key"):
            table.add_column(column, no_wrap=column != "CNs", overflow="fold")
        for info in infos:
            table.add_row(
                info.store,
                info.thumbprint,
                ", ".join(info.subject_cns),
                f"{info.not_after:%Y-%m-%d}",
                f"{info.days_left():.0f}",
                "yes" if info.has_private_key else "no",
            )
        if not out.is_terminal:
            # Piped output has no width to fit: keep each certificate on one line, for grep.
            out.width = max(out.width, 200)
        out.print(table)

    _state().emit([info.to_dict() for info in infos], human)


@cert_group.command("show")
@click.argument("thumbprint", nargs=-1, required=True)
@click.option("--store", type=_STORE_CHOICE, help="Store to look in (default: My, then Root).")
@json_option
def show_command(thumbprint: tuple[str, ...], store: str | None) -> None:
    """Show one certificate: names, dates, SHA-1 thumbprint and SHA-256 fingerprint.

    \b
    Windows:
      certutil -store My {thumbprint}
    packfleet:
      packfleet cert show 3f2a...c1
      packfleet cert show "3f 2a ... c1" --store Root --json
    """
    cert_store, wanted = _locate(_joined(thumbprint), store)
    _print_info(cert_store.info(wanted))


@cert_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--password", help="Password of a PFX (or of an encrypted PEM key).")
@click.option(
    "--store",
    type=_STORE_CHOICE,
    required=True,
    help=_STORE_HELP,
)
@json_option
def import_command(file: Path, password: str | None, store: str) -> None:
    """Install a certificate (.cer/.crt/.pem/.der) or a certificate with its key (.pfx/.p12).

    The certificate is checked first: keys OpenSSL 3 refuses (RSA under 2048 bits), CA:TRUE
    self-signed certificates and EKUs without serverAuth/clientAuth are refused, saying why. Into
    Root only end-entity certificates go (BasicConstraints CA:FALSE, no keyCertSign/cRLSign, not v1).

    \b
    Windows:
      certmgr.exe /add SSISScaleOutWorker.cer /s /r localmachine Root
    packfleet:
      packfleet cert import worker.cer --store Root
      packfleet cert import worker.pfx --password "$PFX_PASSWORD" --store My
    """
    cred = load_credential(file, password)
    # Root is what this node pins its peers by: a certificate there must not be able to vouch for others.
    check_usable(cred, peer=store == "Root")
    info = CertStore(_state().home(), store).add(cred)
    state = _state()
    state.emit(info.to_dict(), lambda out: out.print(info.thumbprint))
    state.note(
        f"imported {', '.join(info.subject_cns) or info.subject} into store {info.store}"
        + (" with its private key" if info.has_private_key else "")
    )


@cert_group.command("export")
@click.argument("thumbprint", nargs=-1, required=True)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write: DER .cer, PEM if it ends with .pem, PFX if it ends with .pfx/.p12.",
)
@click.option("--pfx", is_flag=True, help="Write certificate and private key as PKCS#12.")
@click.option("--password", help="Password protecting the PFX (required with --pfx).")
@click.option("--store", type=_STORE_CHOICE, help="Store to look in (default: My, then Root).")
@json_option
def export_command(
    thumbprint: tuple[str, ...], out: Path, pfx: bool, password: str | None, store: str | None
) -> None:
    """Write a certificate to a file, to install it on another machine (the seed's .cer files).

    \b
    Windows:
      certutil -exportPFX -p {password} My {thumbprint} worker.pfx
    packfleet:
      packfleet cert export 3f2a...c1 --out worker.cer
      packfleet cert export 3f2a...c1 --pfx --password "$PFX_PASSWORD" --out worker.pfx
    """
    cert_store, wanted = _locate(_joined(thumbprint), store)
    cred = cert_store.get(wanted)
    if pfx or out.suffix.lower() in _PFX_SUFFIXES:
        if not password:
            raise UsageError(
                "a PFX holds the private key and needs a password",
                fix=f"packfleet cert export {cred.thumbprint} --pfx --password P --out {out}",
            )
        written = export_pfx(cred, out, password)
        kind = "pfx"
    else:
        kind = _encoding_for(out)
        written = export_certificate(cred, out, encoding=kind)
    _state().emit(
        {"thumbprint": cred.thumbprint, "path": str(written), "format": kind},
        lambda console: console.print(str(written)),
    )


@cert_group.command("delete")
@click.argument("thumbprint", nargs=-1)
@click.option("--cn", help="Delete by CN instead of thumbprint (certmgr /n).")
@click.option("--all", "all_matches", is_flag=True, help="With --cn: delete every match.")
@click.option("--store", type=_STORE_CHOICE, required=True, help="Store to delete from.")
@json_option
def delete_command(thumbprint: tuple[str, ...], cn: str | None, all_matches: bool, store: str) -> None:
    """Delete certificates and their private keys from a store (certmgr /del).

    A CN that matches several certificates is refused, listing them, unless --all is given.

    \b
    Windows:
      certmgr.exe /del /c /s /r localmachine My /n {CN of the old certificate}
    packfleet:
      packfleet cert delete --store My --cn worker1
      packfleet cert delete --store Root 3f2a...c1
    """
    cert_store = CertStore(_state().home(), store)
    targets = _select(cert_store, _joined(thumbprint), cn, many=all_matches)
    deleted = [cert_store.delete(info.thumbprint) for info in targets]

    def human(out: Console) -> None:
        for info in deleted:
            out.print(f"deleted {_describe(info)} from store {cert_store.name}")

    _state().emit([info.to_dict() for info in deleted], human)


@cert_group.command("grant")
@click.argument("thumbprint", nargs=-1)
@click.option("--cn", "-s", "cn", help="Select the certificate by CN (winhttpcertcfg -s).")
@click.option("--store", type=_STORE_CHOICE, required=True, help="Store (My).")
@click.option("--account", "-a", required=True, help="Account that runs the service (winhttpcertcfg -a).")
@json_option
def grant_command(thumbprint: tuple[str, ...], cn: str | None, store: str, account: str) -> None:
    """Let a service account read a certificate's private key (winhttpcertcfg -g).

    The key file becomes the account's (mode 0600) and the store folder becomes enterable by the
    account's group, so the worker service can load its certificate without running as root.

    \b
    Windows:
      winhttpcertcfg.exe -g -c LOCAL_MACHINE\\My -s {CN of the new certificate} -a SSISScaleOutWorker140
    packfleet:
      packfleet cert grant --cn worker1 --store My --account packfleet-worker
      packfleet cert grant 3f2a...c1 --store My --account packfleet-worker
    """
    cert_store = CertStore(_state().home(), store)
    (info,) = _select(cert_store, _joined(thumbprint), cn, many=None)
    key_file = cert_store.grant(info.thumbprint, account)
    _state().emit(
        {"thumbprint": info.thumbprint, "account": account, "key_path": str(key_file)},
        lambda out: out.print(f"{account} may now read {key_file}"),
    )
