"""``python -m packfleet`` is the ``packfleet`` command."""

import sys

from packfleet.cli import main

sys.exit(main())
