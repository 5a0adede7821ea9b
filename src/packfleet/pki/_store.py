"""Certificate stores as folders: ``<home>/certs/My`` and ``<home>/certs/Root``, as on Windows."""

from __future__ import annotations

import builtins
import contextlib
import os
import pwd
import stat
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from packfleet.errors import CertificateNotFound, PkiError
from packfleet.pki._credential import CertInfo, Credential, PrivateKey
from packfleet.pki._io import as_supported_key, write_atomic
from packfleet.thumbprint import is_thumbprint, normalize_thumbprint, one_off

STORE_NAMES = ("My", "Root")

# Every file and folder a node writes is private to its service account: My holds private keys, and
# Root, though it holds public certificates, may hold the master's key too (``MakeCert -ss Root``) and
# its list of certificates is the node's trust, which no other account needs to read. ``grant``
# opens traversal to one group when another account must reach one key.
_DIR_MODES = {"My": 0o700, "Root": 0o700}
_CERT_MODE = 0o600
_KEY_MODE = 0o600


def store_name(name: str) -> str:
    """``my``/``MY``/``My`` -> ``My``; anything but My and Root is a :class:`PkiError`."""
    for known in STORE_NAMES:
        if name.casefold() == known.casefold():
            return known
    raise PkiError(
        f"there is no certificate store {name!r}; packfleet has {' and '.join(STORE_NAMES)}",
        fix="use --store My (personal, with keys) or --store Root (trusted)",
    )


class CertStore:
    """One store of one home: a certificate per ``<THUMBPRINT>.cer`` (PEM), its key beside it.

    >>> store = CertStore(home, "My")                         # doctest: +SKIP
    >>> store.add(create_self_signed(["worker1"])).thumbprint  # doctest: +SKIP
    '5D3C...'
    """

    def __init__(self, home: Path, name: str) -> None:
        self.home = Path(home)
        self.name = store_name(name)
        self.path = self.home / "certs" / self.name

    def __repr__(self) -> str:
        return f"CertStore({str(self.home)!r}, {self.name!r})"

    def cert_path(self, thumbprint: str) -> Path:
        return self.path / f"{normalize_thumbprint(thumbprint)}.cer"

    def key_path(self, thumbprint: str) -> Path:
        return self.path / f"{normalize_thumbprint(thumbprint)}.key"

    def _ensure_dir(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.path.is_dir():
                self.path.mkdir(mode=0o700)
                os.chmod(self.path, _DIR_MODES[self.name])  # mkdir's mode is masked by the umask
        except OSError as exc:
            raise PkiError(f"cannot create store folder {self.path}: {exc.strerror or exc}") from exc

    def add(self, cred: Credential) -> CertInfo:
        """Install ``cred`` (and its key, when it has one); adding the same certificate again is fine.

        Adding a certificate without a key never removes a key already stored for it.
        """
        self._ensure_dir()
        thumbprint = cred.thumbprint
        try:
            # Key first: once the .cer appears, the entry is complete.
            if cred.private_key is not None:
                write_atomic(self.key_path(thumbprint), cred.key_pem(), _KEY_MODE)
            write_atomic(self.cert_path(thumbprint), cred.cert_pem(), _CERT_MODE)
        except OSError as exc:
            raise PkiError(f"cannot write to store {self.name} ({self.path}): {exc}") from exc
        return self.info(thumbprint)

    def _not_found(self, thumbprint: str) -> CertificateNotFound:
        near = self.near(thumbprint)
        if near:
            return CertificateNotFound(
                f"no certificate {thumbprint} in store {self.name} ({self.path}); did you mean {near[0]}?",
                fix=f"use {near[0]} (one character differs), or see: packfleet cert list --store {self.name}",
            )
        return CertificateNotFound(
            f"no certificate {thumbprint} in store {self.name} ({self.path})",
            fix=f"packfleet cert list --store {self.name}",
        )

    def near(self, thumbprint: str) -> list[str]:
        """Thumbprints in this store one character away from ``thumbprint`` (a typo's candidates)."""
        return [known for known in self.thumbprints() if one_off(thumbprint, known)]

    def get(self, thumbprint: str) -> Credential:
        """The certificate (and key, if stored) named by ``thumbprint``, in any spelling people use.

        A thumbprint one character off one in the store (changed, missing or extra) is refused
        with "did you mean" that one.
        """
        try:
            wanted = normalize_thumbprint(thumbprint)
        except PkiError:
            if self.near(thumbprint):
                raise self._not_found(thumbprint) from None
            raise
        cert_file = self.cert_path(wanted)
        cred = Credential(self._read_certificate(wanted), self._read_key(wanted))
        if cred.thumbprint != wanted:
            raise PkiError(
                f"store {self.name}: {cert_file} holds certificate {cred.thumbprint}, "
                f"not {wanted} as its name says",
                fix=f"remove the file and import the certificate again: rm {cert_file}",
            )
        return cred

    def _read_certificate(self, thumbprint: str) -> x509.Certificate:
        cert_file = self.cert_path(thumbprint)
        try:
            return x509.load_pem_x509_certificate(cert_file.read_bytes())
        except FileNotFoundError:
            raise self._not_found(thumbprint) from None
        except (OSError, ValueError) as exc:
            raise PkiError(f"store {self.name}: cannot read {cert_file}: {exc}") from exc

    def _read_key(self, thumbprint: str) -> PrivateKey | None:
        key_file = self.key_path(thumbprint)
        try:
            data = key_file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PkiError(
                f"store {self.name}: cannot read the key {key_file}: {exc.strerror or exc}",
                fix="run as the account the key was granted to (packfleet cert grant ...)",
            ) from exc
        try:
            key = serialization.load_pem_private_key(data, None)
        except (TypeError, ValueError) as exc:
            raise PkiError(f"store {self.name}: {key_file} is not a readable key: {exc}") from exc
        return as_supported_key(key, str(key_file))

    def info(self, thumbprint: str) -> CertInfo:
        wanted = normalize_thumbprint(thumbprint)
        cert = self._read_certificate(wanted)
        # The key file is not read here: listing must work for accounts that may not read keys.
        info = Credential(cert).info(self.name)
        return replace(info, has_private_key=self.key_path(wanted).exists())

    def contains(self, thumbprint: str) -> bool:
        return self.cert_path(thumbprint).is_file()

    def thumbprints(self) -> list[str]:
        """Thumbprints of the entries, ignoring stray files (anything not ``<40 hex>.cer``)."""
        try:
            files = list(self.path.iterdir())
        except FileNotFoundError:
            return []
        return sorted(
            f.stem for f in files if f.suffix == ".cer" and is_thumbprint(f.stem) and f.stem == f.stem.upper()
        )

    def list(self) -> list[CertInfo]:
        """Every certificate of the store, soonest to expire first."""
        infos = [self.info(thumbprint) for thumbprint in self.thumbprints()]
        return sorted(infos, key=lambda info: (info.not_after, info.thumbprint))

    def find_by_cn(self, cn: str) -> builtins.list[CertInfo]:
        """Certificates with ``cn`` among their subject CNs, compared case-insensitively (as certmgr)."""
        wanted = cn.strip().casefold()
        return [info for info in self.list() if wanted in (c.casefold() for c in info.subject_cns)]

    def delete(self, thumbprint: str) -> CertInfo:
        """Remove a certificate and its key (``certmgr /del``); returns what was removed."""
        info = self.info(thumbprint)
        try:
            with contextlib.suppress(FileNotFoundError):
                self.key_path(info.thumbprint).unlink()
            self.cert_path(info.thumbprint).unlink()
        except OSError as exc:
            raise PkiError(f"cannot delete {info.thumbprint} from store {self.name}: {exc}") from exc
        return info

    def grant(self, thumbprint: str, account: str) -> Path:
        """Let ``account`` read the private key (``winhttpcertcfg -g ... -a account``).

        Linux has no per-key ACL like Windows, so the key file becomes the account's own (its user
        and primary group, mode 0600), and the home, its ``certs`` folder and the store, private
        (0700) as every folder a node writes, become traversable by that group (mode 0710: the account
        can open its key by name but cannot list anything). Folders it can already enter are left as
        they are.
        """
        try:
            entry = pwd.getpwnam(account)
        except KeyError:
            raise PkiError(
                f"there is no account {account!r} on this machine",
                fix=f"check the name with `getent passwd {account}`, or create it: "
                f"useradd --system {account}",
            ) from None
        info = self.info(thumbprint)
        key_file = self.key_path(info.thumbprint)
        if not key_file.exists():
            raise PkiError(
                f"certificate {info.thumbprint} in store {self.name} has no private key to grant",
                fix=f"import it with its key: packfleet cert import FILE.pfx --password P "
                f"--store {self.name}",
            )
        try:
            os.chown(key_file, entry.pw_uid, entry.pw_gid)
            os.chmod(key_file, _KEY_MODE)
            for folder in (self.home, self.path.parent, self.path):
                if not _can_traverse(folder, entry):
                    os.chown(folder, -1, entry.pw_gid)
                    os.chmod(folder, 0o710)  # noqa: S103 - the key owner's group may enter, not list
        except OSError as exc:
            raise PkiError(
                f"cannot give {account!r} the key {key_file}: {exc.strerror or exc}",
                fix="run the grant as root (sudo packfleet cert grant ...)",
            ) from exc
        return key_file

    def trust_bundle_pem(self) -> str:
        """Every certificate of the store as concatenated PEM (``SSLContext.load_verify_locations``'s
        ``cadata``); empty text for an empty store."""
        return "".join(self.trust_pems().values())

    def trust_pems(self) -> dict[str, str]:
        """Every certificate of the store as PEM, by thumbprint."""
        pems = {}
        for thumbprint in self.thumbprints():
            try:
                pems[thumbprint] = self.cert_path(thumbprint).read_text("ascii")
            except (OSError, ValueError) as exc:
                raise PkiError(f"store {self.name}: cannot read {thumbprint}.cer: {exc}") from exc
        return pems


def _can_traverse(folder: Path, entry: pwd.struct_passwd) -> bool:
    """Whether ``entry``'s user may enter ``folder`` by the mode bits (owner, primary group, other)."""
    st = folder.stat()
    if entry.pw_uid == 0:
        return True
    if st.st_uid == entry.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == entry.pw_gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)
