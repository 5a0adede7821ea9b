"""What ``packfleet`` loads at start: each command pays for every module the CLI imports."""

from __future__ import annotations

import subprocess
import sys

from packfleet.catalog import CONSOLE_ROLES
from packfleet.cli._users import CONSOLE_ROLES as CLI_ROLES


def test_the_user_commands_offer_the_catalogs_roles() -> None:
    assert CLI_ROLES == CONSOLE_ROLES


def test_the_command_line_starts_without_the_catalog_and_without_hashing_a_password() -> None:
    # SQLAlchemy and an argon2 hash at import cost a loaded machine seconds per command
    # (`manager rotate master-cert` included); only the commands that use them load them.
    code = (
        "import sys; import packfleet.cli; print('sqlalchemy' in sys.modules); "
        "import packfleet.console._passwords as p; print(p._dummy.cache_info().currsize)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "0"]
