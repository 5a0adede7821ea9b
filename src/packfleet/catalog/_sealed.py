"""Sealed sensitive values in the catalog: which keys sealed them, and re-sealing them all (rotation).

The catalog never sees a key: the master seals values before they reach :meth:`create_execution` and
opens them when it hands a task out. What the catalog knows is which key ids the master property
``secrets.key_ids`` says may have sealed a stored value, so a master whose key file lacks one of them
refuses to start instead of failing on the first lease.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Text, cast, select, update

from packfleet.catalog._base import CatalogBase
from packfleet.catalog._engine import translated
from packfleet.catalog._schema import executions, master_properties
from packfleet.errors import SecretsError
from packfleet.secretbox import SEALED_PREFIX, LiveKeyring, SecretKeyring, is_sealed, sealed_key_id


class _SealedCatalog(Protocol):
    """What :func:`open_sealed_catalog` needs of the catalog it opens (``Catalog``, which this module
    cannot import: it is built from :class:`SealedValuesCatalog` among others)."""

    @property
    def url(self) -> str: ...
    def secret_key_ids(self) -> set[str]: ...
    def record_secret_key_ids(self, key_ids: Iterable[str]) -> None: ...
    def drop_freed_pages(self) -> None: ...
    def close(self) -> None: ...


C = TypeVar("C", bound=_SealedCatalog)

#: Master property: comma-separated ids of the keys that may have sealed a value in this catalog.
KEY_IDS_PROPERTY = "secrets.key_ids"
_BATCH = 500


def _has_sealed() -> Any:
    # A cheap pre-filter on the JSON text; the values themselves are checked in Python.
    return cast(executions.c.parameters, Text).like(f"%{SEALED_PREFIX}%")


class SealedValuesCatalog(CatalogBase):
    """Key ids in use and re-sealing of every sealed parameter value."""

    def secret_key_ids(self) -> set[str]:
        """The key ids recorded as sealing values in this catalog (empty before the first key)."""
        with self._read() as conn:
            value = conn.scalar(
                select(master_properties.c.value).where(master_properties.c.key == KEY_IDS_PROPERTY)
            )
        return {kid for kid in (value or "").split(",") if kid}

    def record_secret_key_ids(self, key_ids: Iterable[str]) -> None:
        """Record the key ids that may seal values from now on (replacing the recorded set)."""
        value = ",".join(sorted(set(key_ids)))
        now = self.now()
        with self._write() as conn:
            stmt = self._insert(master_properties).values(key=KEY_IDS_PROPERTY, value=value, updated_at=now)
            conn.execute(
                stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value, "updated_at": now})
            )

    def drop_freed_pages(self) -> None:
        """After plaintext values were sealed in place: leave no copy of them in the database files.

        SQLite keeps overwritten row text in free pages and old WAL frames; ``VACUUM`` rewrites the
        file and a truncating checkpoint empties the WAL. PostgreSQL keeps dead row versions until
        its own vacuum reuses them, which packfleet cannot force to overwrite: docs/security.md says
        what to do there.
        """
        if self.dialect != "sqlite":
            return
        with translated(self._url), self._engine.connect() as conn:
            raw: Any = conn.connection.driver_connection
            raw.execute("VACUUM")
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def sealed_key_ids_in_use(self) -> set[str]:
        """The ids of the keys that sealed at least one stored value (a full scan: for rotation)."""
        found: set[str] = set()
        with self._read() as conn:
            for (parameters,) in conn.execute(select(executions.c.parameters).where(_has_sealed())):
                found.update(sealed_key_id(v) for v in dict(parameters).values() if is_sealed(v))
        return found

    def reseal_parameters(self, reseal: Callable[[str, str], str]) -> int:
        """Replace every sealed value ``v`` of parameter ``name`` by ``reseal(name, v)``; return how many
        values changed. Done in batches of rows, each its own transaction, so a large catalog is not
        locked for the whole pass; a value changed twice (a pass run again) is harmless."""
        changed = 0
        last_id = 0
        while True:
            with self._write() as conn:
                rows = conn.execute(
                    select(executions.c.id, executions.c.parameters)
                    .where(executions.c.id > last_id, _has_sealed())
                    .order_by(executions.c.id)
                    .limit(_BATCH)
                ).all()
                if not rows:
                    return changed
                for row in rows:
                    old = dict(row.parameters)
                    new = {k: reseal(k, v) if is_sealed(v) else v for k, v in old.items()}
                    delta = sum(1 for k in old if old[k] != new[k])
                    if delta:
                        stmt = update(executions).where(executions.c.id == row.id)
                        conn.execute(stmt.values(parameters=new))
                        changed += delta
                last_id = rows[-1].id


def open_sealed_catalog(
    open_catalog: Callable[[Callable[[], SecretKeyring]], C], key_file: Path
) -> tuple[C, LiveKeyring]:
    """Open (and upgrade) the catalog at ``url`` together with the master's secrets key file.

    No key file and no key recorded in the catalog (a new master, or one from before values were
    sealed): a key is made and written 0600. A key file that lacks a key the catalog records, or no
    key file when the catalog records one, is a :class:`SecretsError` naming the file and the fix,
    raised before any request is served, rather than a failure at the first lease.
    """
    fresh: SecretKeyring | None = None
    if key_file.exists():
        ring = SecretKeyring.load(key_file)
    else:
        ring = fresh = SecretKeyring.generate(key_file)
    saved = fresh is None
    migrated = False

    def provide() -> SecretKeyring:
        nonlocal saved, migrated
        if not saved:  # written before the first value is sealed with it, never after
            ring.save()
            saved = True
        migrated = True
        return ring

    catalog = open_catalog(provide)
    try:
        recorded = catalog.secret_key_ids()
        missing = sorted(recorded - set(ring.keys))
        if missing:
            where = "does not exist" if fresh is not None else f"holds only {', '.join(sorted(ring.keys))}"
            raise SecretsError(
                f"the catalog {catalog.url} holds sensitive values sealed with key(s) {', '.join(missing)}, "
                f"and this master's secrets key file {key_file} {where}",
                fix="copy secrets.key from a master of this catalog (or a backup of its home) to "
                f"{key_file}, mode 0600, owned by the master's account; then start the master again",
            )
        if migrated:
            catalog.drop_freed_pages()
        provide()
        if not set(ring.keys) <= recorded:
            catalog.record_secret_key_ids(recorded | set(ring.keys))
    except BaseException:
        catalog.close()
        raise
    return catalog, LiveKeyring(key_file)


@dataclass(frozen=True)
class SecretKeyRotation:
    """What ``rotate-secrets-key`` did: the key now current, the keys retired, values re-sealed."""

    current: str
    retired: tuple[str, ...]
    resealed: int


def rotate_secrets_key(catalog: SealedValuesCatalog, live: LiveKeyring) -> SecretKeyRotation:
    """Make a new current key, re-seal every stored value with it, then retire the old keys.

    Safe while the master runs: the key file is rewritten first, and a running master (which reads
    the file again when it changes) seals new values with the new key from then on. A second pass
    re-seals what it sealed with the old key in between; the old keys are dropped from the file only
    when a full scan finds no value still sealed with them. Interrupted, it can simply be run again.
    """
    old = live.get()
    ring = old.with_new_key()
    ring.save()
    catalog.record_secret_key_ids(set(ring.keys))
    resealed = catalog.reseal_parameters(ring.reseal)
    resealed += catalog.reseal_parameters(ring.reseal)
    left = sorted(catalog.sealed_key_ids_in_use() - {ring.current})
    if left:
        raise SecretsError(
            f"values sealed with key(s) {', '.join(left)} are still being written; the new key "
            f"{ring.current} is current and the old keys are kept",
            fix="run packfleet master rotate-secrets-key again",
        )
    ring.only_current().save()
    catalog.record_secret_key_ids({ring.current})
    return SecretKeyRotation(ring.current, tuple(sorted(old.keys)), resealed)
