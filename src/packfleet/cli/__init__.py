"""The ``packfleet`` command line: certificates, stores, bindings, settings, master, worker, manager."""

from packfleet.cli._entry import main
from packfleet.cli._main import cli

__all__ = ["cli", "main"]
