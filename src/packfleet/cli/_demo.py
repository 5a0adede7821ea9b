"""``packfleet demo``: the same walk-through as ``make demo``, from an installed wheel."""

from __future__ import annotations

import click

from packfleet.cli._main import cli


@cli.command("demo")
def demo() -> int:
    """Run a master and three workers on this machine and walk through the seed procedures.

    Every step is a real ``packfleet`` command, printed before it runs: certificates, binding,
    settings, connecting workers by hand and with a join token, deploying the sample ETL project
    (shipped inside packfleet), running it, a failing package, and a live master certificate
    rotation. Needs 127.0.0.1-127.0.0.4 (loopback) and a few free ports. The state is left in a
    temporary folder, whose path is printed, for inspection. Exit code 0 when every step worked.
    """
    from packfleet.demo import main  # the demo pulls in the local cluster; only this command needs it

    code = main()
    if code:
        raise click.exceptions.Exit(code)
    return 0
