"""The relay inside a FastAPI application, next to routes of your own.

    pip install fastapi uvicorn
    uvicorn --app-dir examples fastapi_app:app --no-proxy-headers --port 8000
    # or simply: python examples/fastapi_app.py

FastAPI answers ``GET /hello``; everything under ``/relay`` is the relay, mounted as an ASGI
app (a Starlette ``Mount``, which takes ``/relay`` off the path for it):

- WebSocket clients join ``ws://localhost:8000/relay/c/<channel>``; the stock itty-sockets
  client needs nothing but that URL: ``connect("ws://localhost:8000/relay/c/my-room")``;
- backends push with ``POST http://localhost:8000/relay/push/<channel>`` (docs/protocol.md);
- ``GET /relay/health`` and ``GET /relay/version`` report on the relay.

The configuration is read as ``uvicorn transports.asgi:app`` reads it: the TOML file named
by ``RELAYCORE_CONFIG`` (if any), then the ``RELAYCORE_<SECTION>_<KEY>`` overrides.

Two things about serving it. ``--no-proxy-headers`` leaves the client address to the
relay's own ``trusted_proxies`` setting (uvicorn would otherwise believe the
``X-Forwarded-For`` header of any peer on the same host, and the per-address limits with
it). And Starlette does not pass lifespan events on to mounted apps, so the application's
own lifespan below stops the relay.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from relaycore import Config
from transports.asgi import create_app


def relay_config() -> Config:
    """The TOML file named by RELAYCORE_CONFIG, with the RELAYCORE_* overrides applied."""
    path = os.environ.get("RELAYCORE_CONFIG")
    overrides = {name: value for name, value in os.environ.items() if name != "RELAYCORE_CONFIG"}
    return Config.from_toml(Path(path).read_bytes() if path else b"", overrides)


relay = create_app(relay_config())


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    # Members the server has not closed already are closed with 1001 "server shutting down".
    await relay.shutdown()


app = FastAPI(title="relaycore inside FastAPI", lifespan=lifespan)


@app.get("/hello")
async def hello() -> dict[str, str]:
    """An ordinary route of the application."""
    return {"hello": "world"}


app.mount("/relay", relay)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000, proxy_headers=False)
