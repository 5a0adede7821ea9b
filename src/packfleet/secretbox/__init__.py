"""Sensitive parameter values sealed at rest: the master's key file, AES-256-GCM, key ids for rotation.

The master seals every value of a parameter marked ``sensitive = true`` before it reaches the catalog,
and opens it only to hand a leased task to the worker that leased it, inside the mutual TLS channel::

    ring = SecretKeyring.load(secrets_key_path(home))
    stored = seal_values(ring, {"password": "hunter2", "rows": 10}, {"password"})
    stored["password"]                         # 'pfsealed:1:3f0c9a1d2b7e4c55:...'
    open_values(ring, stored)                  # {'password': 'hunter2', 'rows': 10}
"""

from packfleet.secretbox._keyring import (
    SEALED_PREFIX,
    SECRETS_KEY_FILE,
    LiveKeyring,
    SecretKeyring,
    is_sealed,
    open_values,
    seal_values,
    sealed_key_id,
    secrets_key_path,
    sensitive_names,
)

__all__ = [
    "SEALED_PREFIX",
    "SECRETS_KEY_FILE",
    "LiveKeyring",
    "SecretKeyring",
    "is_sealed",
    "open_values",
    "seal_values",
    "sealed_key_id",
    "secrets_key_path",
    "sensitive_names",
]
