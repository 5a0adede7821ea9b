"""The root ``packfleet`` group and its global options; every command module attaches itself to it.

``packfleet.cli._entry`` imports all command modules, then runs the group (:func:`main`).
"""

from __future__ import annotations

from pathlib import Path

import click

from packfleet import __version__
from packfleet.cli._output import CliState

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
