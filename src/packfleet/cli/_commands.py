"""Every command module, imported once so that each attaches its group to the root ``cli``."""

# Each module below defines click commands on `packfleet.cli._main.cli`; add new ones here.
from packfleet.cli import (  # noqa: F401
    _binding,
    _cert,
    _demo,
    _dev,
    _doctor,
    _executions,
    _identity,
    _join,
    _manager,
    _manager_certs,
    _master,
    _master_run,
    _rotate,
    _settings,
    _tokens,
    _users,
    _worker,
    _worker_run,
)
