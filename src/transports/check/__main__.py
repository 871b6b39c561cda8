"""``python -m transports.check URL [options]``: the checker without the ``relaycore`` command."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
