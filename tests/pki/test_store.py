from __future__ import annotations

import os
import pwd
import ssl
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from packfleet.errors import CertificateNotFound, PkiError
from packfleet.pki import CertStore, Credential, create_self_signed


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def my(home: Path) -> CertStore:
    return CertStore(home, "My")


@pytest.fixture
def wide_umask() -> Iterator[None]:
    """Run with umask 000, so only packfleet's own modes protect what it writes."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize(("given", "name"), [("My", "My"), ("my", "My"), ("ROOT", "Root")])
def test_store_names_are_case_insensitive(home: Path, given: str, name: str) -> None:
    store = CertStore(home, given)
    assert store.name == name and store.path == home / "certs" / name and store.home == home


def test_unknown_store_is_refused(home: Path) -> None:
    with pytest.raises(PkiError, match="no certificate store 'CA'") as info:
        CertStore(home, "CA")
    assert info.value.fix is not None and "--store My" in info.value.fix


def test_add_writes_pem_and_a_private_key_file(my: CertStore, cred: Credential, wide_umask: None) -> None:
    info = my.add(cred)
    assert info.thumbprint == cred.thumbprint and info.store == "My" and info.has_private_key
    cert_file, key_file = my.cert_path(cred.thumbprint), my.key_path(cred.thumbprint)
    assert cert_file.name == f"{cred.thumbprint}.cer" and cert_file.read_bytes() == cred.cert_pem()
    assert key_file.read_bytes() == cred.key_pem()
    assert mode(key_file) == 0o600
    assert mode(cert_file) == 0o600  # private, as every file a node writes
    assert mode(my.path) == 0o700
    root = CertStore(my.home, "Root")
    root.add(Credential(cred.certificate))
    assert mode(root.path) == 0o700 and mode(my.path.parent) == 0o700
    assert not root.key_path(cred.thumbprint).exists()


def test_key_file_is_never_readable_by_others(
    my: CertStore, cred: Credential, wide_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is written to a file created 0600 and renamed into place: at no point is it wider."""
    seen: list[tuple[str, int, int]] = []
    real_replace = os.replace

    def spying_replace(src: str | Path, dst: str | Path) -> None:
        seen.append((Path(dst).name, mode(Path(src)), Path(src).stat().st_size))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spying_replace)
    my.add(cred)
    key_name = f"{cred.thumbprint}.key"
    assert (key_name, 0o600, len(cred.key_pem())) in seen
    assert mode(my.key_path(cred.thumbprint)) == 0o600


def test_key_file_is_created_0600_from_the_start(
    my: CertStore, cred: Credential, wide_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[int] = []
    real_fdopen = os.fdopen

    def spying_fdopen(fd: int, *args: object, **kwargs: object) -> object:
        created.append(stat.S_IMODE(os.fstat(fd).st_mode))  # before any byte is written
        return real_fdopen(fd, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "fdopen", spying_fdopen)
    my.add(cred)
    assert created and all(m == 0o600 for m in created)


@pytest.mark.parametrize(
    "spell",
    [
        str.lower,
        lambda t: ":".join(t[i : i + 2] for i in range(0, 40, 2)),
        lambda t: " ".join(t[i : i + 2] for i in range(0, 40, 2)).lower(),
        lambda t: "\u200e" + t,
    ],
    ids=["lowercase", "colons", "spaces", "lrm"],
)
def test_get_accepts_thumbprints_as_people_paste_them(
    my: CertStore, cred: Credential, spell: Callable[[str], str]
) -> None:
    my.add(cred)
    got = my.get(spell(cred.thumbprint))
    assert got.thumbprint == cred.thumbprint
    assert got.key_pem() == cred.key_pem()
    assert my.contains(spell(cred.thumbprint))
    assert my.info(spell(cred.thumbprint)).thumbprint == cred.thumbprint


def test_get_unknown_names_store_path_and_fix(my: CertStore) -> None:
    with pytest.raises(CertificateNotFound) as info:
        my.get("ab" * 20)
    assert info.value.message == f"no certificate {'AB' * 20} in store My ({my.path})"
    assert info.value.fix == "packfleet cert list --store My"
    assert not my.contains("ab" * 20)
    with pytest.raises(PkiError, match="not a valid thumbprint"):
        my.get("not-a-thumbprint")


def test_get_notices_a_file_under_the_wrong_name(my: CertStore, cred: Credential) -> None:
    my.add(cred)
    other = "00" * 20
    my.cert_path(cred.thumbprint).rename(my.cert_path(other))
    with pytest.raises(PkiError, match=f"holds certificate {cred.thumbprint}, not {other}"):
        my.get(other)


def test_adding_again_and_without_the_key_keeps_the_key(my: CertStore, cred: Credential) -> None:
    my.add(cred)
    info = my.add(Credential(cred.certificate))
    assert info.has_private_key
    assert my.get(cred.thumbprint).private_key is not None
    assert len(my.list()) == 1


def test_list_is_sorted_by_expiry_and_ignores_stray_files(my: CertStore) -> None:
    assert my.list() == []
    start = datetime.now(UTC) - timedelta(minutes=1)
    made = {days: create_self_signed([f"h{days}"], days=days, not_before=start) for days in (20, 5, 10)}
    for cred in made.values():
        my.add(cred)
    (my.path / "README").write_text("not a certificate")
    (my.path / "notes.cer").write_text("junk")
    (my.path / f"{made[5].thumbprint.lower()}.cer").write_text("junk")
    (my.path / f".{made[5].thumbprint}.cer.tmp").write_text("junk")
    assert [info.subject_cns for info in my.list()] == [["h5"], ["h10"], ["h20"]]


def test_find_by_cn_is_case_insensitive(my: CertStore) -> None:
    a, b = create_self_signed(["Worker1", "10.0.0.7"]), create_self_signed(["worker1"])
    my.add(a)
    my.add(b)
    my.add(create_self_signed(["worker2"]))
    assert {i.thumbprint for i in my.find_by_cn("WORKER1")} == {a.thumbprint, b.thumbprint}
    assert [i.thumbprint for i in my.find_by_cn("10.0.0.7")] == [a.thumbprint]
    assert my.find_by_cn("worker") == []


def test_delete_removes_certificate_and_key(my: CertStore, cred: Credential) -> None:
    my.add(cred)
    info = my.delete(cred.thumbprint.lower())
    assert info.thumbprint == cred.thumbprint
    assert not my.cert_path(cred.thumbprint).exists() and not my.key_path(cred.thumbprint).exists()
    with pytest.raises(CertificateNotFound):
        my.delete(cred.thumbprint)


def test_trust_bundle_loads_into_an_ssl_context(home: Path) -> None:
    root = CertStore(home, "Root")
    assert root.trust_bundle_pem() == ""
    creds = [create_self_signed([f"peer{i}"]) for i in range(3)]
    for cred in creds:
        root.add(cred)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=root.trust_bundle_pem())
    assert context.cert_store_stats()["x509"] == 3


def test_grant_unknown_account_names_it(my: CertStore, cred: Credential) -> None:
    my.add(cred)
    with pytest.raises(PkiError, match="there is no account 'no-such-account-pf'") as info:
        my.grant(cred.thumbprint, "no-such-account-pf")
    assert info.value.fix is not None and "getent passwd no-such-account-pf" in info.value.fix


def test_grant_needs_a_private_key(my: CertStore, cred: Credential) -> None:
    my.add(Credential(cred.certificate))
    with pytest.raises(PkiError, match="has no private key to grant"):
        my.grant(cred.thumbprint, "nobody")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another account needs root")
def test_grant_gives_the_key_to_the_account(my: CertStore, cred: Credential) -> None:
    my.add(cred)
    nobody = pwd.getpwnam("nobody")
    key_file = my.grant(cred.thumbprint.lower(), "nobody")
    assert key_file == my.key_path(cred.thumbprint)
    st = key_file.stat()
    assert (st.st_uid, st.st_gid, mode(key_file)) == (nobody.pw_uid, nobody.pw_gid, 0o600)
    store_dir = my.path.stat()
    assert store_dir.st_gid == nobody.pw_gid and mode(my.path) == 0o710
    assert mode(my.path.parent) == 0o710  # the private certs folder: entered, not listed
    assert my.get(cred.thumbprint).private_key is not None  # root still reads it


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another account needs root")
def test_grant_opens_a_private_home_to_the_accounts_group_for_traversal_only(
    my: CertStore, cred: Credential
) -> None:
    my.add(cred)
    my.home.chmod(0o700)
    nobody = pwd.getpwnam("nobody")
    my.grant(cred.thumbprint, "nobody")
    home = my.home.stat()
    assert home.st_gid == nobody.pw_gid and mode(my.home) == 0o710
    assert my.key_path(cred.thumbprint).stat().st_uid == nobody.pw_uid
