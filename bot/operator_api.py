"""The bot's side of ``opsroom do``: an operator at the bot's host runs an action.

The bot writes a fresh random token to ``OPSROOM_DATA_DIR/operator.token`` (mode 0600) each
time it starts, and the address its HTTP server bound to ``OPSROOM_DATA_DIR/http.address``.
``POST /operator/actions`` with ``Authorization: Bearer <token>`` and the JSON body
``{"action": name, "arguments": text, "operator": name, "roles": [...], "channel": ...}``
submits the action through the runtime's one entry point as an
:class:`~bot.runtime.callers.Operator`. Holding the token proves only that the caller may
read the bot's data directory; the policy still decides what the claimed roles may do.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.backends.actions import runtime_for, surface_for
from bot.backends.registry import registered_actions
from bot.runtime.callers import Operator
from bot.runtime.runtime import Submission

PATH = "/operator/actions"
TOKEN_FILE = "operator.token"
ADDRESS_FILE = "http.address"
MAX_FIELD_CHARS = 4096


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by this user only (never briefly wider)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text + "\n")


def new_token(data_dir: Path) -> str:
    """A fresh operator token, written to ``data_dir/operator.token`` (mode 0600)."""
    token = secrets.token_urlsafe(32)
    write_private(data_dir / TOKEN_FILE, token)
    return token


class BadRequest(ValueError):
    """A body that is not what ``opsroom do`` sends."""


def _text(body: dict[str, Any], key: str, required: bool = True) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS or (required and not value):
        raise BadRequest(f"{key!r} must be a non-empty string" if required else f"bad {key!r}")
    return value


def parse_body(raw: bytes) -> tuple[str, str, Operator, str]:
    """(action, arguments, operator, channel) from a request body; raises BadRequest."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("the body must be JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    roles = body.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
        raise BadRequest("'roles' must be a list of role names")
    operator = Operator(_text(body, "operator"), frozenset(roles))
    arguments = _text(body, "arguments", required=False)
    return _text(body, "action"), arguments, operator, _text(body, "channel", required=False)


class OperatorEndpoint:
    """``POST /operator/actions`` for the running bot ``bot``, guarded by ``token``."""

    def __init__(self, bot: Any, token: str) -> None:
        self._bot = bot
        self._token = token.encode()

    def authorized(self, header: str) -> bool:
        scheme, _, given = header.partition(" ")
        return scheme == "Bearer" and hmac.compare_digest(given.strip().encode(), self._token)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.authorized(request.headers.get("Authorization", "")):
            return web.json_response({"error": "wrong or missing operator token"}, status=401)
        try:
            action, arguments, operator, channel = parse_body(await request.read())
        except BadRequest as exc:
            return web.json_response({"error": str(exc)}, status=400)
        loop = asyncio.get_running_loop()
        status, answer = await loop.run_in_executor(
            None, self.submit, action, arguments, operator, channel
        )
        return web.json_response(answer, status=status)

    def submit(
        self, action: str, arguments: str, operator: Operator, channel: str
    ) -> tuple[int, dict[str, Any]]:
        """Run ``action`` for ``operator`` (on a worker thread: the runtime writes to disk)."""
        actions = registered_actions(self._bot)
        if action not in actions:
            known = sorted(actions)
            return 404, {"error": f"no action named {action}", "actions": known}
        spec, plugin = actions[action]
        place = None
        if channel:
            try:
                place = surface_for(self._bot).place_named(channel)
            except Exception as exc:
                return 400, {"error": f"no channel {channel}: {exc}"}
        submitted = runtime_for(self._bot).submit(spec, plugin, arguments, operator, place, "")
        return 200, answer(submitted)


def answer(submitted: Submission) -> dict[str, Any]:
    """What became of a submission, as the CLI reads it."""
    reply: dict[str, Any] = {"job_id": submitted.job_id, "status": submitted.status}
    if submitted.status in ("refused", "denied"):
        reply.update(reason=submitted.reason, audit=submitted.audit_id)
    return reply
