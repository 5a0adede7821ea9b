"""``main``: the ``packfleet`` command with every command registered; where errors become exit codes.

Importing this module imports every command module (``_commands``), so :data:`packfleet.cli.cli` is
complete as soon as :mod:`packfleet.cli` is imported. The command modules import the root group from
``_main``, never this module: no import cycle.
"""

from __future__ import annotations

import sys

import click

from packfleet.cli import _commands  # noqa: F401  (registers every command on `cli`)
from packfleet.cli._main import cli
from packfleet.errors import PackfleetError


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a :class:`PackfleetError` becomes a message on stderr and its exit code."""
    try:
        # standalone_mode=False: click returns instead of calling sys.exit, so tests can call main().
        result = cli.main(args=argv, prog_name="packfleet", standalone_mode=False)
    except PackfleetError as exc:
        click.echo(f"error: {exc.message}", err=True)
        if exc.fix:
            click.echo(f"  fix: {exc.fix}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
