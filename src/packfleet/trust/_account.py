"""Who must read a private key, and whether the mode bits let them.

On Windows, ``winhttpcertcfg -g ... -a ACCOUNT`` puts an ACL on the private key; on Linux the key is a
file (``<THUMBPRINT>.key``, mode 0600), so "can the service read its key" is a question of owner,
group, mode and of every folder on the way being enterable. :func:`unreadable_reason` answers it
for any account from the mode bits, the same rule the kernel applies, so ``doctor`` run as root can
tell that the service account ``nobody`` would be refused.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path


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
            return f"it cannot enter {folder} (owner {owner_of(st)}, mode {stat.S_IMODE(st.st_mode):04o})"
    st = key_file.stat()
    if not _may(st, account, (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)):
        return f"the key file is owned by {owner_of(st)} with mode {stat.S_IMODE(st.st_mode):04o}"
    return None


def owner_of(st: os.stat_result) -> str:
    """``user:group`` of a file, numeric where the name is unknown."""
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"
