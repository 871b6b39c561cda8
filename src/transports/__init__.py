"""transports: thin anyio shells (asyncio and trio) that run the relaycore core."""

from __future__ import annotations

__all__: list[str] = []
