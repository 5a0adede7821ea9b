"""The root ``packfleet`` group, its global options and the one place errors become exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from packfleet import __version__
from packfleet.cli._output import CliState
from packfleet.errors import ApiError, PackfleetError
from packfleet.manager import RemoteOptions

#: Ctrl+C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

_LOCATIONS = ("LocalMachine", "CurrentUser")


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PACKFLEET_HOME",
    help="Node home (stores, settings, catalog). Default: /var/lib/packfleet as root "
    "(LocalMachine), ~/.local/share/packfleet otherwise (CurrentUser). Env: PACKFLEET_HOME.",
)
@click.option(
    "--location",
    type=click.Choice(_LOCATIONS, case_sensitive=False),
    help="Store location, as Windows' -sr: LocalMachine or CurrentUser. Picks the default home.",
)
@click.option(
    "--master",
    "master_url",
    envvar="PACKFLEET_MASTER",
    metavar="URL",
    help="The master to administer, https://HOST:8391 (default: MasterEndpoint of the home's "
    "ManagerSettings.config). Env: PACKFLEET_MASTER.",
)
@click.option(
    "--master-cert",
    envvar="PACKFLEET_MASTER_CERT",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The master's certificate to pin (the master.cer workers get). Env: PACKFLEET_MASTER_CERT.",
)
@click.option(
    "--admin-cert",
    envvar="PACKFLEET_ADMIN_CERT",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Your identity's certificate, PEM (from `manager identity create`). Env: PACKFLEET_ADMIN_CERT.",
)
@click.option(
    "--admin-key",
    envvar="PACKFLEET_ADMIN_KEY",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Its private key, PEM, mode 0600. Env: PACKFLEET_ADMIN_KEY.",
)
@click.version_option(__version__, prog_name="packfleet")
@click.pass_context
def cli(
    ctx: click.Context,
    home: Path | None,
    location: str | None,
    master_url: str | None,
    master_cert: Path | None,
    admin_cert: Path | None,
    admin_key: Path | None,
) -> None:
    """packfleet: SSIS Scale Out for Linux.

    A master hands package executions to workers; every exchange is mutual TLS between a master
    certificate and a worker certificate, pinned by thumbprint. Typical first session:

    \b
      packfleet --home /srv/m master init --cn 127.0.0.1      # master cert, binding, settings
      packfleet --home /srv/m master run &                     # serve on 8391
      packfleet --home /srv/w worker init --master https://127.0.0.1:8391 \\
                --master-cert /srv/m/master.cer                # worker cert, master in Root
      packfleet --home /srv/m manager worker add --cert /srv/w/worker.cer --enable
      packfleet --home /srv/w worker run &
      packfleet --home /srv/m deploy examples/etl && packfleet --home /srv/m run default/etl/load --wait

    From another machine (as Nomad's and Vault's CLIs do): PACKFLEET_MASTER=https://HOST:8391,
    PACKFLEET_MASTER_CERT=master.cer, PACKFLEET_ADMIN_CERT=me.crt, PACKFLEET_ADMIN_KEY=me.key.
    """
    state = ctx.ensure_object(CliState)
    state.home_option = home
    state.location_option = location
    state.remote = RemoteOptions(master_url or "", master_cert, admin_cert, admin_key)


def _register_commands() -> None:
    # Imported here so each command module registers itself on `cli` without import cycles.
    from packfleet.cli import _commands  # noqa: F401


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
    _register_commands()
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
