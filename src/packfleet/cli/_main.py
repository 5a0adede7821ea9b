"""The root ``packfleet`` group, its global options and the one place errors become exit codes."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from packfleet import __version__
from packfleet.cli._output import CliState
from packfleet.errors import PackfleetError

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
@click.version_option(__version__, prog_name="packfleet")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, location: str | None) -> None:
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
    """
    state = ctx.ensure_object(CliState)
    state.home_option = home
    state.location_option = location


def _register_commands() -> None:
    # Imported here so each command module registers itself on `cli` without import cycles.
    from packfleet.cli import _commands  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a :class:`PackfleetError` becomes a message on stderr and its exit code."""
    _register_commands()
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
