"""The ``packfleet`` command line: certificates, stores, bindings, settings, master, worker, manager."""

from packfleet.cli._main import cli, main

__all__ = ["cli", "main"]
