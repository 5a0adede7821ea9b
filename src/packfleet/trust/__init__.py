"""The trust rules, each written once: which certificate a node serves, trusts and presents.

A rule is a function that returns :class:`Finding` values (what, why, the command that fixes it).
Three consumers read the same findings, so their words and fix commands never drift apart:

- the start-up loaders (the master's TLS material, the worker's identity) raise the first error,
  as the error type the finding names (:func:`raise_first`);
- ``packfleet doctor`` lists them all;
- the TLS failure explainer (:mod:`packfleet.transport`) quotes the finding that matches what the
  handshake refused.

The rules: :func:`binding_rule` (binding vs SSLCertThumbprint), :func:`worker_settings_rule` and
:func:`pinned_master_rule` (the worker's identity: who it is and which master it trusts; the manager
applies :func:`pins_in_root_rule`, its first part),
:func:`master_certificate_rule` and :func:`served_rule` (the served certificate vs the pinned one),
:func:`own_certificate_rule` (own certificate, key, access and expiry), and which client certificates
the master accepts: :func:`admin_certificate_rule`, :func:`trusted_client_rule` (in its Root store;
:func:`untrusted_client` is the same verdict met in a refused handshake) and :func:`root_store_rule`
(Root certificates it will never accept).

>>> from packfleet.trust import error, raise_first
>>> found = error("worker.endpoint", "WorkerSettings.config has no MasterEndpoint",
...               "it knows no master",
...               "packfleet settings set worker MasterEndpoint https://MASTER:8391")
>>> raise_first([found])
Traceback (most recent call last):
...
packfleet.errors.SettingsError: WorkerSettings.config has no MasterEndpoint; it knows no master
  fix: packfleet settings set worker MasterEndpoint https://MASTER:8391
"""

from packfleet.trust._account import Account, unreadable_reason
from packfleet.trust._binding import WILDCARD, binding_rule, served_binding
from packfleet.trust._clients import (
    admin_certificate_rule,
    admission_refusal,
    root_store_rule,
    trusted_client_rule,
    untrusted_client,
)
from packfleet.trust._expiry import date_findings
from packfleet.trust._finding import (
    Finding,
    Severity,
    error,
    errors,
    from_exception,
    ok,
    raise_first,
    warning,
)
from packfleet.trust._fixes import (
    DELETE_FROM_ROOT,
    IMPORT_MASTER,
    NEW_ADMIN_FIX,
    READMIT,
    READMIT_FIX,
    RECREATE_CERT,
    RENEW_WORKER,
    ROTATE_MASTER,
    SYNC_CLOCKS,
    TRUST_ADMIN,
    TRUST_WORKER,
)
from packfleet.trust._own import (
    ADMIN,
    CLIENT,
    MASTER,
    WORKER,
    OwnRole,
    key_access_findings,
    key_matches,
    own_certificate_rule,
    own_dates,
    refused_as_expired,
)
from packfleet.trust._pins import (
    PINNED_MASTER,
    Endpoint,
    Pins,
    master_certificate_rule,
    pin_keys,
    pinned_master_rule,
    pins_in_root_rule,
    served_rule,
    worker_settings_rule,
)

__all__ = [
    "ADMIN",
    "CLIENT",
    "DELETE_FROM_ROOT",
    "IMPORT_MASTER",
    "MASTER",
    "NEW_ADMIN_FIX",
    "PINNED_MASTER",
    "READMIT",
    "READMIT_FIX",
    "RECREATE_CERT",
    "RENEW_WORKER",
    "ROTATE_MASTER",
    "SYNC_CLOCKS",
    "TRUST_ADMIN",
    "TRUST_WORKER",
    "WILDCARD",
    "WORKER",
    "Account",
    "Endpoint",
    "Finding",
    "OwnRole",
    "Pins",
    "Severity",
    "admin_certificate_rule",
    "admission_refusal",
    "binding_rule",
    "date_findings",
    "error",
    "errors",
    "from_exception",
    "key_access_findings",
    "key_matches",
    "master_certificate_rule",
    "ok",
    "own_certificate_rule",
    "own_dates",
    "pin_keys",
    "pinned_master_rule",
    "pins_in_root_rule",
    "raise_first",
    "refused_as_expired",
    "root_store_rule",
    "served_binding",
    "served_rule",
    "trusted_client_rule",
    "unreadable_reason",
    "untrusted_client",
    "warning",
    "worker_settings_rule",
]
