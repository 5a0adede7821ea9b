"""The root ``packfleet`` group and its global options (errors become exit codes in ``_entry``)."""

from __future__ import annotations

from pathlib import Path

import click

from packfleet import __version__
from packfleet.cli._output import CliState
from packfleet.manager import RemoteOptions

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
