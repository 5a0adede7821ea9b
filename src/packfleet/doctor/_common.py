"""Checks both roles share: certificate dates, key/certificate pairs, key files and service accounts.

On Windows, ``winhttpcertcfg -g ... -a ACCOUNT`` puts an ACL on the private key; on Linux the key is a
file (``<THUMBPRINT>.key``, mode 0600), so "can the service read its key" is a question of owner,
group, mode and of every folder on the way being enterable. These helpers answer it for any account
from the mode bits, the same rule the kernel applies, so ``doctor`` run as root can tell that the
service account ``nobody`` would be refused.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from packfleet.doctor._findings import Finding, error, ok, warning
from packfleet.expiry import days_left, describe_expiry, expiry_warning
from packfleet.pki import CertInfo, CertStore, Credential


@dataclass(frozen=True)
class Account:
    """The account a service runs as, and where that was read (a unit's ``User=``, or this process)."""

    name: str
    uid: int
    gids: frozenset[int]
    source: str

    @classmethod
    def named(cls, name: str, source: str) -> Account | None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return cls(name, entry.pw_uid, frozenset(os.getgrouplist(name, entry.pw_gid)), source)

    @classmethod
    def current(cls) -> Account:
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, frozenset([os.getegid(), *os.getgroups()]), "the current user")


def unit_user(unit: Path) -> str | None:
    """The ``User=`` of a systemd unit's ``[Service]`` section, or None when it names none."""
    section = ""
    user = None
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section == "[Service]" and line.startswith("User="):
            user = line.partition("=")[2].strip() or None
    return user


def unit_home(unit: Path) -> Path | None:
    """The ``--home`` that a packfleet unit's ``ExecStart=`` passes, or None."""
    for raw in unit.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line.startswith("ExecStart="):
            continue
        try:
            words = shlex.split(line.partition("=")[2])
        except ValueError:
            return None
        if "--home" in words[:-1]:
            return Path(words[words.index("--home") + 1])
    return None


def find_unit(home: Path, unit_name: str, explicit: Path | None) -> Path | None:
    """The service unit of this home: ``explicit``, else ``<home>/<unit>`` or systemd's folder.

    A unit in ``/etc/systemd/system`` counts only when its ``--home`` is this home, so a doctor run
    on a second home of the same machine does not judge it by another node's service account.
    """
    if explicit is not None:
        return explicit
    local = home / unit_name
    if local.is_file():
        return local
    system = Path("/etc/systemd/system") / unit_name
    try:
        if system.is_file() and unit_home(system) == home:
            return system
    except OSError:
        return None
    return None


def service_account(
    check: str, home: Path, unit_name: str, explicit: Path | None
) -> tuple[Account | None, Finding | None]:
    """Who runs the service: the unit's ``User=`` (or root when a unit names none), else this user."""
    unit = find_unit(home, unit_name, explicit)
    if unit is None:
        return Account.current(), None
    try:
        user = unit_user(unit)
    except OSError as exc:
        return None, error(check, f"cannot read the service unit {unit}: {exc.strerror or exc}")
    name = user or "root"
    account = Account.named(name, f"User= of {unit}" if user else f"{unit} (no User=: root)")
    if account is None:
        return None, error(
            check,
            f"the service unit {unit} runs as {name!r}, which is no account on this machine",
            fix=f"useradd --system {name}   (or change User= in {unit})",
        )
    return account, None


def _may(st: os.stat_result, account: Account, bits: tuple[int, int, int]) -> bool:
    if account.uid == 0:
        return True
    owner, group, other = bits
    if st.st_uid == account.uid:
        return bool(st.st_mode & owner)
    if st.st_gid in account.gids:
        return bool(st.st_mode & group)
    return bool(st.st_mode & other)


def unreadable_reason(key_file: Path, folders: list[Path], account: Account) -> str | None:
    """Why ``account`` cannot read ``key_file`` (a folder it cannot enter, or the file's mode), or None.

    ``folders`` are the ones ``packfleet cert grant`` opens (the home, ``certs``, the store), so a
    finding here is always mended by the grant it suggests.
    """
    for folder in folders:
        st = folder.stat()
        if not _may(st, account, (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)):
            return f"it cannot enter {folder} (owner {_owner(st)}, mode {stat.S_IMODE(st.st_mode):04o})"
    st = key_file.stat()
    if not _may(st, account, (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)):
        return f"the key file is owned by {_owner(st)} with mode {stat.S_IMODE(st.st_mode):04o}"
    return None


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


def key_file_findings(
    check: str,
    key_file: Path,
    folders: list[Path],
    account: Account,
    *,
    thumbprint: str,
    store: str,
) -> list[Finding]:
    """Mode 0600 (nobody else may read a private key) and readable by the service account."""
    findings: list[Finding] = []
    st = key_file.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        findings.append(
            error(
                check,
                f"the private key {key_file} has mode {mode:04o}: group or others may read it; a "
                "private key must be 0600 (readable by its owner, the service account, only)",
                fix=f"chmod 600 {shlex.quote(str(key_file))}",
            )
        )
    reason = unreadable_reason(key_file, folders, account)
    if reason is not None:
        findings.append(
            error(
                check,
                f"the service account {account.name!r} ({account.source}) cannot read the private key "
                f"of certificate {thumbprint} ({key_file}): {reason}; the service would fail to load "
                "its certificate (the seed's winhttpcertcfg step)",
                fix=f"packfleet cert grant {thumbprint} --store {store} --account {account.name}",
            )
        )
    if not findings:
        findings.append(
            ok(
                check,
                f"private key {key_file} is mode {mode:04o}, owned by {_owner(st)}, readable by "
                f"{account.name!r} ({account.source})",
            )
        )
    return findings


def key_matches(cred: Credential) -> bool:
    """Whether the stored key is the certificate's own (a replaced .key beside an old .cer is not)."""
    if cred.private_key is None:
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    mine = cred.private_key.public_key().public_bytes(der, spki)
    return mine == cred.certificate.public_key().public_bytes(der, spki)


def check_key_pair(role: str, cred: Credential, store: CertStore, *, what: str, needs: str) -> list[Finding]:
    """``<role>.certificate``: is the key beside the certificate; ``<role>.key-match``: is it its own.

    ``what`` names the certificate ("bound certificate"), ``needs`` what its key is for ("the master
    cannot serve it"). Without a key the list holds that one error and nothing else is worth checking.
    """
    thumbprint = cred.thumbprint
    fix = f"packfleet cert import {role}.pfx --password P --store {store.name}"
    if cred.private_key is None:
        return [
            error(
                f"{role}.certificate",
                f"the {what} {thumbprint} is in store {store.name} without its private key "
                f"({store.key_path(thumbprint).name} is missing), so {needs}",
                fix=fix,
            )
        ]
    findings = [
        ok(f"{role}.certificate", f"{what} {thumbprint} and its private key are in store {store.name}")
    ]
    if not key_matches(cred):
        findings.append(
            error(
                f"{role}.key-match",
                f"{store.key_path(thumbprint)} is not the key of certificate {thumbprint}: a handshake "
                "would fail (OpenSSL: 'key values mismatch')",
                fix=f"import the certificate with its own key: {fix}",
            )
        )
    return findings


def expiry_finding(check: str, what: str, info: CertInfo, now: datetime, fix: str) -> Finding:
    """ok with more than 30 days left, a warning within 30 (and 7), an error once expired."""
    days = days_left(info.not_after, now)
    level = expiry_warning(days)
    when = f"{describe_expiry(days)} ({info.not_after:%Y-%m-%d %H:%M} UTC)"
    text = f"{what} {info.thumbprint} {when}"
    if level is None:
        return ok(check, text)
    if level == "expired":
        return error(check, text + "; TLS refuses an expired certificate even when it is pinned", fix=fix)
    return warning(check, f"{text}: plan its replacement ({level} warning)", fix=fix)


def names_of(info: CertInfo) -> list[str]:
    return info.names
