"""The relay inside a FastAPI app that has logins: the app decides who joins and as whom,
publishes from its own routes, and moderates messages.

    pip install fastapi uvicorn
    uvicorn --app-dir examples fastapi_hooks:app --no-proxy-headers --port 8000

- ``POST /login?user=ann`` sets a ``session`` cookie (a real app checks a password; the
  session store here is a dict);
- a WebSocket (or SSE, NDJSON, long-poll) join of ``/relay/c/<channel>`` is refused 401
  without that cookie; with it, the member's alias is the user's name, announced;
  ``team:*`` channels are for the ``staff`` only (403 otherwise);
- ``POST /orders/{order}/shipped`` tells the ``orders`` channel, and answers how many
  members heard it;
- ``GET /presence/{channel}`` and ``POST /kick/{channel}/{uid}``: who is there, and out;
- every message is moderated: ``"spam"`` is dropped, a ``text`` field has its bad words starred.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Response

from relaycore import Admit, Hooks, JoinAttempt, Member, Refuse
from transports.asgi import create_app

#: session cookie -> user name (a real app: its session store).
SESSIONS: dict[str, str] = {}
STAFF = {"ann"}
BAD_WORDS = ("darn", "heck")


def authorize(attempt: JoinAttempt) -> Admit | Refuse:
    """Who may join, and as whom: the signed-in user, under their own name."""
    user = SESSIONS.get(attempt.cookies.get("session", ""))
    if user is None:
        return Refuse(401, "Sign in first.")
    if attempt.channel.startswith("team:") and user not in STAFF:
        return Refuse(403, "Staff only.")
    return Admit(alias=user, announce=True)


def moderate(member: Member, message: Any) -> Any:
    """Drop spam; star the bad words of a chat message's ``text``; keep the rest as sent."""
    if message == "spam":
        return None
    if isinstance(message, dict) and isinstance(message.get("text"), str):
        text = message["text"]
        for word in BAD_WORDS:
            text = text.replace(word, "*" * len(word))
        return {**message, "text": text}
    return message


relay = create_app(hooks=Hooks(authorize=authorize, on_message=moderate))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Starlette does not pass lifespan events on to mounted apps: run the relay's here.
    async with relay.running():
        yield
    await relay.shutdown()


app = FastAPI(lifespan=lifespan)
app.mount("/relay", relay)


@app.post("/login")
async def login(user: str, response: Response) -> dict[str, str]:
    token = secrets.token_urlsafe(24)
    SESSIONS[token] = user
    response.set_cookie("session", token, httponly=True, samesite="lax")
    return {"user": user}


@app.post("/orders/{order}/shipped")
async def shipped(order: int) -> dict[str, int]:
    recipients = await relay.publish("orders", {"order": order, "state": "shipped"})
    return {"recipients": recipients}


@app.get("/presence/{channel}")
async def presence(channel: str) -> dict[str, Any]:
    roster = await relay.presence(channel)
    return {"total": roster.total, "members": [{"uid": m.uid, "alias": m.alias} for m in roster.members]}


@app.post("/kick/{channel}/{uid}")
async def kick(channel: str, uid: str) -> dict[str, bool]:
    if not await relay.disconnect(channel, uid, code=4000, reason="kicked"):
        raise HTTPException(404, "No such member.")
    return {"kicked": True}
