"""``main``: the ``packfleet`` command with every command registered; where errors become exit codes.

Importing this module imports every command module (``_commands``), so :data:`packfleet.cli.cli` is
complete as soon as :mod:`packfleet.cli` is imported. The command modules import the root group from
``_main``, never this module: no import cycle.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from packfleet.cli import _commands  # noqa: F401  (registers every command on `cli`)
from packfleet.cli._main import cli
from packfleet.errors import ApiError, PackfleetError

#: Ctrl+C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def _error_document(message: str, fix: str | None, exit_code: int, kind: str, **extra: Any) -> str:
    """The one JSON document ``--json`` puts on stderr for an error (docs/exit-codes.md)."""
    body = {"error": message, "fix": fix, "exit_code": exit_code, "type": kind, **extra}
    return json.dumps(body)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a :class:`PackfleetError` becomes a message on stderr and its exit code.

    With ``--json`` anywhere on the command line the error is one JSON document on stderr instead
    (``error``, ``fix``, ``exit_code``, ``type``), so a script never has to parse prose. The exit
    codes are the table of docs/exit-codes.md.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    try:
        # standalone_mode=False: click returns instead of calling sys.exit, so tests can call main().
        result = cli.main(args=args, prog_name="packfleet", standalone_mode=False)
    except PackfleetError as exc:
        if as_json:
            extra = {"status": exc.status} if isinstance(exc, ApiError) else {}
            doc = _error_document(exc.message, exc.fix, exc.exit_code, type(exc).__name__, **extra)
            click.echo(doc, err=True)
        else:
            click.echo(f"error: {exc.message}", err=True)
            if exc.fix:
                click.echo(f"  fix: {exc.fix}", err=True)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        if as_json:
            click.echo(_error_document("aborted", None, EXIT_INTERRUPTED, "Aborted"), err=True)
        else:
            click.echo("aborted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        if as_json:
            fix = None
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                fix = f"{exc.ctx.command_path} --help"
            click.echo(_error_document(exc.format_message(), fix, exc.exit_code, "UsageError"), err=True)
        else:
            exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
