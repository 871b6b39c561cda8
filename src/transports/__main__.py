"""``python -m transports serve ...``: the same as the ``relaycore`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
