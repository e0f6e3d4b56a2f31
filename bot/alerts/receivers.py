"""The webhook receivers: authenticate, bound, validate, store, answer; work comes later.

Each configured receiver is one path on the bot's HTTP server (``/alerts/<name>`` unless
configured). A request is answered:

- 413 when the body is larger than the receiver's ``max_body`` (nothing more is read);
- 401 when the credential is missing or wrong (nothing is parsed or stored);
- 415 when it is not ``application/json``; 400 when it is not JSON; 422 when it is JSON but
  not the receiver's schema (the reason names the first bad field);
- 200 once every alert of it is committed to the store (``{"received": n, "new": m}``).

Nothing runs in the request: the engine is woken and does the posting and remediation on
its own thread, so Alertmanager (which has no webhook timeout in 0.25 and re-sends a
request it holds open after about 10 s) always gets its answer in milliseconds. Refusals
are logged once per source and reason per interval (:class:`~bot.alerts.auth.RefusalLog`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from aiohttp import web

from bot.alerts.auth import Authenticator, RefusalLog, Unauthenticated
from bot.alerts.config import Receiver as ReceiverConfig
from bot.alerts.model import Notification
from bot.alerts.payloads import PayloadError, parse_generic, parse_webhook
from bot.alerts.store import AlertStore

log = logging.getLogger(__name__)


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Receiver:
    """One configured receiver: an aiohttp handler."""

    def __init__(
        self,
        name: str,
        config: ReceiverConfig,
        store: AlertStore,
        *,
        on_stored: Callable[[list[Notification]], None],
        refusals: RefusalLog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.config = config
        self.store = store
        self.auth = Authenticator(config.auth, clock=clock)
        self.on_stored = on_stored
        self.refusals = refusals
        self.clock = clock

    async def handle(self, request: web.Request) -> web.Response:
        source = request.remote or "unknown"
        try:
            body = await self._body(request)
            try:
                self.auth.check(request.headers, body)
            except Unauthenticated as exc:
                raise Refused(401, str(exc)) from None
            notifications = self.parse(request.content_type, body)
        except Refused as refused:
            self.refusals.refused(source, self.name, refused.status, refused.reason)
            headers = {"WWW-Authenticate": "Bearer"} if refused.status == 401 else None
            return web.json_response(
                {"error": refused.reason}, status=refused.status, headers=headers
            )
        received = sum(len(n.alerts) for n in notifications)
        new = await asyncio.wrap_future(self.store.submit(notifications, self.clock()))
        self.on_stored(notifications)
        return web.json_response({"received": received, "new": new})

    async def _body(self, request: web.Request) -> bytes:
        limit = self.config.max_body
        if request.content_length is not None and request.content_length > limit:
            raise Refused(413, f"body of {request.content_length} bytes; the limit is {limit}")
        chunks, size = [], 0
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise Refused(413, f"body larger than the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(self, content_type: str, body: bytes) -> list[Notification]:
        """The request's notifications; raises :class:`Refused` with a 4xx and a reason."""
        if content_type != "application/json":
            raise Refused(415, f"content type {content_type or 'none'}; expected application/json")
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise Refused(400, f"not JSON: {exc}") from None
        try:
            if self.config.kind == "generic":
                assert self.config.mapping is not None
                return parse_generic(document, self.name, self.config.mapping)
            return [parse_webhook(document, self.name, kind=self.config.kind)]
        except PayloadError as exc:
            raise Refused(422, str(exc)) from None
