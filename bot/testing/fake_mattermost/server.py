"""A fake Mattermost server (REST API v4 + reliable WebSocket) for Opsroom's tests.

The server runs aiohttp in a background thread with its own event loop and listens on a real
loopback socket, so the bot under test talks to it exactly as it would to Mattermost.  Tests drive
and inspect it through the thread-safe control API on :class:`FakeMattermost`.

Concurrency model: all server state lives in plain Python objects guarded by one re-entrant lock.
REST handlers are synchronous functions run under that lock on the server loop; control methods
take the same lock from the test thread.  WebSocket frames are handed to the loop with
``call_soon_threadsafe`` while the lock is held, so events reach every socket in ``seq`` order.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import mimetypes
import re
import secrets
import ssl
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiohttp import BodyPartReader, WSMsgType, web

from bot.loop_thread import ThreadedServer

from .openapi import WEBSOCKET_PATH, OpenAPIDocs, load_docs

SERVER_VERSION = "9.11.0"
MAX_POST_RUNES = 16383
PENDING_POST_DEDUP_SECONDS = 30.0
# Channel limits of model.Channel.IsValid; a longer name passes the API's checks and then
# fails in the store with a 500, which is what the fake answers too.
MAX_CHANNEL_NAME = 64
MAX_CHANNEL_DISPLAY_NAME = 64
MAX_CHANNEL_HEADER = 1024
MAX_CHANNEL_PURPOSE = 250
_CHANNEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ID_ALPHABET = string.ascii_lowercase + string.digits
_MENTION_RE = re.compile(r"@([a-z0-9][a-z0-9._-]*)", re.IGNORECASE)

Ref = dict[str, Any] | str
"""A user/team/channel given as the dict the seeding API returned, its id, or its (user)name."""


def new_id() -> str:
    """A 26-character lowercase alphanumeric id, like Mattermost's."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def now_ms() -> int:
    return int(time.time() * 1000)


def _dumps(value: Any) -> str:
    # Go's encoding/json writes no spaces; keep the wire format byte-compatible in spirit.
    return json.dumps(value, separators=(",", ":"))


def rate_limit_headers(reset_seconds: int = 1, limit: int = 10) -> dict[str, str]:
    """Headers of a Mattermost 429 (introduction.yaml, "rate limiting"), for ``fail_next``."""
    return {
        "Retry-After": str(reset_seconds),
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset_seconds),
    }


class RecordedRequest(NamedTuple):
    """One HTTP request the server saw (websocket upgrades included)."""

    time: float
    method: str
    path: str
    status: int
    user_id: str


class ApiError(Exception):
    """Raised by handlers; rendered as a Mattermost AppError."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message


def _unauthorized() -> ApiError:
    return ApiError(
        401,
        "api.context.session_expired.app_error",
        "Invalid or expired session, please login again.",
    )


def _forbidden() -> ApiError:
    return ApiError(
        403, "api.context.permissions.app_error", "You do not have the appropriate permissions."
    )


def _not_found(what: str) -> ApiError:
    return ApiError(404, f"app.{what}.missing.app_error", f"Unable to find the {what}.")


def _bad_request(error_id: str, message: str) -> ApiError:
    return ApiError(400, error_id, message)


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    remaining: int
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and self.path.search(path) is not None


@dataclass(eq=False)
class _LiveSocket:
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str]
    token: str

    def send(self, text: str) -> None:
        """Queue a frame for the socket's writer task (callable from any thread)."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, text)


@dataclass
class _Connection:
    """Server-side state of one reliable-websocket connection id (outlives its sockets)."""

    connection_id: str
    user_id: str
    buffer: deque[tuple[int, str]]
    next_seq: int = 0
    live: _LiveSocket | None = None
    disconnected_at: float = 0.0


@dataclass
class _Payload:
    """A request body as read off the wire."""

    content_type: str
    raw: bytes
    fields: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, str, bytes]] = field(default_factory=list)


@dataclass
class _Ctx:
    """What a REST handler gets about its request."""

    user: dict[str, Any] | None
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    files: list[tuple[str, str, bytes]]
    received_time: float
    received_monotonic: float
    created_post: dict[str, Any] | None = None

    @property
    def user_id(self) -> str:
        return self.user["id"] if self.user else ""


class Route(NamedTuple):
    """A REST route the fake serves, keyed by its OpenAPI path template."""

    method: str
    template: str
    handler: str
    auth: bool = True


class FakeMattermost(ThreadedServer):
    """Fake Mattermost server; see bot/testing/fake_mattermost/README.md for the control API."""

    # (method, OpenAPI path template, handler method name, needs auth)
    ROUTES: tuple[Route, ...] = (
        Route("GET", "/api/v4/system/ping", "_ping", auth=False),
        Route("GET", "/api/v4/users/{user_id}", "_get_user"),
        Route("GET", "/api/v4/users/username/{username}", "_get_user_by_username"),
        Route("POST", "/api/v4/users/ids", "_get_users_by_ids"),
        Route("POST", "/api/v4/users/usernames", "_get_users_by_usernames"),
        Route("GET", "/api/v4/users/{user_id}/teams", "_get_user_teams"),
        Route("GET", "/api/v4/users/{user_id}/groups", "_get_user_groups"),
        Route("GET", "/api/v4/teams/{team_id}", "_get_team"),
        Route("GET", "/api/v4/teams/name/{name}", "_get_team_by_name"),
        Route("GET", "/api/v4/users/{user_id}/teams/{team_id}/channels", "_get_user_channels"),
        Route("GET", "/api/v4/channels/{channel_id}", "_get_channel"),
        Route(
            "GET",
            "/api/v4/teams/name/{team_name}/channels/name/{channel_name}",
            "_get_channel_by_team_name",
        ),
        Route(
            "GET", "/api/v4/teams/{team_id}/channels/name/{channel_name}", "_get_channel_by_name"
        ),
        Route("GET", "/api/v4/channels/{channel_id}/members", "_get_channel_members"),
        Route("POST", "/api/v4/channels/{channel_id}/members", "_add_channel_member"),
        Route("DELETE", "/api/v4/channels/{channel_id}/members/{user_id}", "_remove_member_rest"),
        Route("POST", "/api/v4/channels/direct", "_create_direct"),
        Route("POST", "/api/v4/posts", "_create_post"),
        Route("PUT", "/api/v4/posts/{post_id}/patch", "_patch_post"),
        Route("GET", "/api/v4/posts/{post_id}", "_get_post"),
        Route("GET", "/api/v4/posts/{post_id}/thread", "_get_thread"),
        Route("GET", "/api/v4/channels/{channel_id}/posts", "_get_channel_posts"),
        Route("POST", "/api/v4/reactions", "_create_reaction"),
        Route("GET", "/api/v4/posts/{post_id}/reactions", "_get_reactions"),
        Route("POST", "/api/v4/files", "_upload_files"),
        Route("POST", "/api/v4/channels", "_create_channel"),
        Route("PUT", "/api/v4/channels/{channel_id}/patch", "_patch_channel"),
        Route("POST", "/api/v4/posts/{post_id}/pin", "_pin_post"),
        Route("POST", "/api/v4/posts/{post_id}/unpin", "_unpin_post"),
        Route("GET", "/api/v4/groups", "_get_groups"),
        Route("GET", "/api/v4/groups/{group_id}/members", "_get_group_members"),
    )

    def __init__(
        self,
        *,
        strict: bool = True,
        resume_window: float = 60.0,
        dead_queue_size: int = 128,
        post_received: Callable[[dict[str, Any]], None] | None = None,
        docs: OpenAPIDocs | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``strict`` validates every request and JSON response against the OpenAPI docs.

        ``ssl_context`` (a server context) serves HTTPS and WSS instead of plain HTTP.

        ``post_received`` is called on the server thread (keep it quick) with a copy of every
        post created through REST.
        """
        self.strict = strict
        self.ssl_context = ssl_context
        self.resume_window = resume_window
        self.dead_queue_size = dead_queue_size
        self.post_received = post_received
        if docs is None and strict:
            docs = load_docs()
        self.docs = docs
        self.contract_violations: list[str] = []

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._users: dict[str, dict[str, Any]] = {}
        self._groups: dict[str, dict[str, Any]] = {}  # id -> Group, with "members" ids
        self.groups_enabled = True  # False: the server answers 501 (unlicensed feature)
        # True: /users/{id}/groups answers 403, as with a Professional licence
        self.user_groups_forbidden = False
        # False: a permission scheme took create_*_channel from team members (403)
        self.channel_creation_allowed = True
        self._teams: dict[str, dict[str, Any]] = {}
        self._team_members: dict[str, set[str]] = {}
        self._channels: dict[str, dict[str, Any]] = {}
        self._channel_members: dict[str, dict[str, dict[str, Any]]] = {}
        self._posts: dict[str, dict[str, Any]] = {}
        self._post_times: dict[str, tuple[float, float]] = {}
        self._pending: dict[tuple[str, str], tuple[str, float]] = {}
        self._files: dict[str, dict[str, Any]] = {}
        self._uploaded: list[dict[str, Any]] = []
        self._tokens: dict[str, str] = {}
        self._conns: dict[str, _Connection] = {}
        self._sockets: set[_LiveSocket] = set()  # every open websocket, authenticated or not
        self._background: set[asyncio.Task[Any]] = set()
        self._last_conn: dict[str, str] = {}
        self._faults: list[_Fault] = []
        self._requests: list[RecordedRequest] = []
        self._unexpected: list[RecordedRequest] = []
        self._ws_accepted = 0
        self._last_resume: dict[str, Any] | None = None

        self._routes = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "([^/]+)", r.template) + "$"), r)
            for r in sorted(self.ROUTES, key=lambda r: r.template.count("{"))
        ]
        self._route_params = {
            r.template: re.findall(r"\{([^}]+)\}", r.template) for r in self.ROUTES
        }

        self._port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self._port}"

    # start() and stop() come from ThreadedServer. Stopping is a server down: the listening
    # socket closes and every websocket is aborted. Users, teams, channels, posts, files and
    # tokens are kept (they live in the database of a real server). Websocket sessions are
    # not: like a restarted Mattermost, the server then cannot resume any connection id, so
    # clients get a fresh one and must catch up over REST.
    thread_name = "fake-mattermost"

    def restart(self) -> str:
        self.stop()
        return self.start()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("GET", WEBSOCKET_PATH, self._websocket)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(
            runner, "127.0.0.1", self._port, reuse_address=True, ssl_context=self.ssl_context
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = runner.addresses[0][1]
        self._runner = runner

    async def _shutdown(self) -> None:
        self._abort_sockets(forget=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ helpers (lock held)

    def _user(self, ref: Ref) -> dict[str, Any]:
        with self._lock:
            if isinstance(ref, dict):
                ref = ref["id"]
            if ref in self._users:
                return self._users[ref]
            for user in self._users.values():
                if user["username"] == ref:
                    return user
        raise ValueError(f"unknown user {ref!r}")

    def _team(self, ref: Ref) -> dict[str, Any]:
        with self._lock:
            if isinstance(ref, dict):
                ref = ref["id"]
            if ref in self._teams:
                return self._teams[ref]
            for team in self._teams.values():
                if team["name"] == ref:
                    return team
        raise ValueError(f"unknown team {ref!r}")

    def _channel(self, ref: Ref) -> dict[str, Any]:
        with self._lock:
            if isinstance(ref, dict):
                ref = ref["id"]
            if ref in self._channels:
                return self._channels[ref]
            found = [c for c in self._channels.values() if c["name"] == ref]
        if len(found) == 1:
            return found[0]
        raise ValueError(f"unknown or ambiguous channel {ref!r}")

    def _is_member(self, channel_id: str, user_id: str) -> bool:
        return user_id in self._channel_members.get(channel_id, {})

    def _can_read(self, channel: dict[str, Any], user_id: str) -> bool:
        if self._is_member(channel["id"], user_id):
            return True
        return channel["type"] == "O" and user_id in self._team_members.get(channel["team_id"], ())

    def _user_channels(self, user_id: str) -> list[dict[str, Any]]:
        return [c for c in self._channels.values() if self._is_member(c["id"], user_id)]

    # ------------------------------------------------------------------ websocket events

    def _emit(
        self,
        event: str,
        data: dict[str, Any],
        user_ids: Iterable[str],
        *,
        channel_id: str = "",
        team_id: str = "",
        user_id: str = "",
    ) -> None:
        """Sequence and deliver one event to each user's live sockets (or buffer it)."""
        broadcast = {
            "omit_users": None,
            "user_id": user_id,
            "channel_id": channel_id,
            "team_id": team_id,
        }
        with self._lock:
            for uid in dict.fromkeys(user_ids):
                for conn in self._targets(uid):
                    self._push(conn, {"event": event, "data": data, "broadcast": broadcast})

    def _targets(self, user_id: str) -> list[_Connection]:
        live = [c for c in self._conns.values() if c.user_id == user_id and c.live is not None]
        if live:
            return live
        last = self._conns.get(self._last_conn.get(user_id, ""))
        return [last] if last is not None else []

    def _push(self, conn: _Connection, event: dict[str, Any]) -> None:
        text = _dumps({**event, "seq": conn.next_seq})
        conn.buffer.append((conn.next_seq, text))
        conn.next_seq += 1
        if conn.live is not None:
            conn.live.send(text)

    def _channel_user_ids(self, channel_id: str) -> list[str]:
        return list(self._channel_members.get(channel_id, {}))

    def _abort_sockets(self, *, forget: bool) -> None:
        """Reset every open websocket's TCP connection (no close frame); loop thread only."""
        with self._lock:
            for live in self._sockets:
                if live.transport is not None:
                    live.transport.abort()
            self._sockets.clear()
            for conn in self._conns.values():
                if conn.live is not None:
                    conn.live = None
                    conn.disconnected_at = time.monotonic()
            if forget:
                self._conns.clear()
                self._last_conn.clear()

    def _attach(
        self, user_id: str, live: _LiveSocket, connection_id: str, sequence_number: int | None
    ) -> None:
        """Bind a new socket to a resumed or fresh connection; queue replay and hello."""
        with self._lock:
            conn = self._conns.get(connection_id) if connection_id else None
            replay: list[str] = []
            resumed = False
            if conn is not None and conn.user_id == user_id and sequence_number is not None:
                fresh_enough = (
                    conn.live is not None
                    or time.monotonic() - conn.disconnected_at <= self.resume_window
                )
                oldest = conn.buffer[0][0] if conn.buffer else conn.next_seq
                if fresh_enough and oldest <= sequence_number <= conn.next_seq:
                    resumed = True
                    replay = [text for seq, text in conn.buffer if seq >= sequence_number]
            if resumed and conn is not None:
                if conn.live is not None and conn.live.transport is not None:
                    conn.live.transport.abort()
            else:
                conn = _Connection(new_id(), user_id, deque(maxlen=self.dead_queue_size))
                self._conns[conn.connection_id] = conn
            conn.live = live
            self._last_conn[user_id] = conn.connection_id
            for text in replay:
                live.send(text)
            self._last_resume = {
                "resumed": resumed,
                "connection_id": conn.connection_id,
                "requested_connection_id": connection_id,
                "sequence_number": sequence_number,
                "replayed": len(replay),
                "user_id": user_id,
            }
            self._push(
                conn,
                {
                    "event": "hello",
                    "data": {"server_version": SERVER_VERSION, "connection_id": conn.connection_id},
                    "broadcast": {
                        "omit_users": None,
                        "user_id": user_id,
                        "channel_id": "",
                        "team_id": "",
                    },
                },
            )
            self._changed.notify_all()

    def _detach(self, live: _LiveSocket) -> None:
        with self._lock:
            self._sockets.discard(live)
            for conn in self._conns.values():
                if conn.live is live:
                    conn.live = None
                    conn.disconnected_at = time.monotonic()
            self._changed.notify_all()

    # ------------------------------------------------------------------ HTTP plumbing

    def _record(self, received: float, method: str, path: str, status: int, user_id: str) -> None:
        with self._lock:
            self._requests.append(RecordedRequest(received, method, path, status, user_id))

    def _violation(self, text: str) -> None:
        with self._lock:
            self.contract_violations.append(text)

    async def _apply_faults(self, method: str, path: str) -> web.Response | None:
        with self._lock:
            delays = [f for f in self._faults if f.delay and f.matches(method, path)]
            for fault in delays:
                fault.remaining -= 1
            fail = next((f for f in self._faults if f.status and f.matches(method, path)), None)
            if fail is not None:
                fail.remaining -= 1
            self._faults = [f for f in self._faults if f.remaining > 0]
        for fault in delays:
            await asyncio.sleep(fault.delay)
        if fail is None:
            return None
        body = fail.body
        if body is None:
            body = self._app_error(fail.status, "fake.injected_fault", "Injected fault.")
        if isinstance(body, (dict, list)):
            return self._json_response(fail.status, body, fail.headers)
        return web.Response(status=fail.status, text=str(body), headers=fail.headers)

    @staticmethod
    def _app_error(status: int, error_id: str, message: str) -> dict[str, Any]:
        return {
            "id": error_id,
            "message": message,
            "detailed_error": "",
            "request_id": new_id(),
            "status_code": status,
        }

    @staticmethod
    def _json_response(
        status: int, body: Any, headers: dict[str, str] | None = None
    ) -> web.Response:
        # Exactly "application/json": mattermostdriver compares the header literally.
        return web.Response(
            status=status,
            body=_dumps(body).encode(),
            headers={
                **(headers or {}),
                "Content-Type": "application/json",
                "X-Request-Id": new_id(),
                "X-Version-Id": SERVER_VERSION,
            },
        )

    def _token_user(self, request: web.Request) -> tuple[str | None, dict[str, Any] | None]:
        """(token, user) from the Authorization header; token None when there is no header."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not token.strip():
            return None, None
        token = token.strip()
        with self._lock:
            user_id = self._tokens.get(token)
            return token, self._users.get(user_id) if user_id else None

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for rx, route in self._routes:
            m = rx.match(path)
            if m and route.method == method:
                return route, dict(zip(self._route_params[route.template], m.groups(), strict=True))
        return None

    @staticmethod
    async def _read_payload(request: web.Request) -> _Payload:
        """Read the whole request body up front, as a real server does before handling it."""
        if not request.content_type.startswith("multipart/"):
            return _Payload(request.content_type, await request.read())
        payload = _Payload("multipart/form-data", b"")
        async for part in await request.multipart():
            if not isinstance(part, BodyPartReader):
                continue
            if part.filename:
                content = bytes(await part.read())
                ctype = part.headers.get("Content-Type", "application/octet-stream")
                payload.files.append((part.filename, ctype, content))
                payload.fields[part.name or "files"] = part.filename
            else:
                payload.fields[part.name or ""] = await part.text()
        return payload

    def _parse_body(self, payload: _Payload, route: Route) -> Any:
        """The JSON body (or multipart text fields); None when the route documents no body."""
        if payload.content_type == "multipart/form-data":
            return payload.fields
        if self.docs is not None:
            op = self.docs.operation(route.method, route.template)
            if op is None or not op.spec.get("requestBody"):
                return None  # e.g. the "{}" mattermostdriver sends with every GET
        if not payload.raw:
            return None
        try:
            return json.loads(payload.raw)
        except ValueError:
            raise _bad_request(
                "api.context.invalid_body_param.app_error", "Invalid or missing body in request."
            ) from None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        received_time, received_mono = time.time(), time.monotonic()
        method, path = request.method, request.path
        _, user = self._token_user(request)
        user_id = user["id"] if user else ""
        try:
            payload = await self._read_payload(request)
        except ConnectionError:  # the client went away mid-request; nobody to answer
            self._record(received_time, method, path, 499, user_id)
            return web.Response(status=499)
        # Faults apply after the body is in: a client that times out on a delayed request
        # still gets its request processed, like with a real slow server.
        response = await self._apply_faults(method, path)
        if response is None:
            try:
                response = self._handle(request, payload, user, received_time, received_mono)
            except Exception as exc:
                # A bug in the fake must fail the test run, not look like a server error to retry.
                self._violation(f"fake server crashed on {method} {path}: {exc!r}")
                response = self._error_response(
                    ApiError(500, "fake.internal_error", f"Fake server error: {exc!r}")
                )
        self._record(received_time, method, path, response.status, user_id)
        return response

    def _handle(
        self,
        request: web.Request,
        payload: _Payload,
        user: dict[str, Any] | None,
        received_time: float,
        received_mono: float,
    ) -> web.Response:
        method, path = request.method, request.path
        matched = self._match(method, path)
        if matched is None:
            with self._lock:
                self._unexpected.append(
                    RecordedRequest(received_time, method, path, 404, user["id"] if user else "")
                )
            if self.docs is not None and self.docs.match(method, path) is None:
                self._violation(f"request {method} {path}: endpoint not documented")
            error = ApiError(404, "api.context.404.app_error", "Sorry, we could not find the page.")
            return self._error_response(error)
        route, params = matched
        ctx = _Ctx(
            user, params, dict(request.query), None, payload.files, received_time, received_mono
        )
        try:
            if route.auth and user is None:
                raise _unauthorized()
            ctx.body = self._parse_body(payload, route)
            if self.strict and self.docs is not None:
                if ctx.body is not None:
                    for v in self.docs.validate_request(
                        method, route.template, ctx.body, content_type=payload.content_type
                    ):
                        self._violation(v)
                for v in self.docs.validate_query(method, route.template, ctx.query):
                    self._violation(v)
            with self._lock:
                status, body = getattr(self, route.handler)(ctx)
                # Snapshot under the lock: control calls may mutate the stored objects.
                body = copy.deepcopy(body)
                created = copy.deepcopy(ctx.created_post)
        except ApiError as error:
            status, body = (
                error.status,
                self._app_error(error.status, error.error_id, error.message),
            )
            created = None
        if self.strict and self.docs is not None:
            for v in self.docs.validate_response(method, route.template, status, body):
                self._violation(v)
        if created is not None and self.post_received is not None:
            self.post_received(created)
        return self._json_response(status, body)

    def _error_response(self, error: ApiError) -> web.Response:
        return self._json_response(
            error.status, self._app_error(error.status, error.error_id, error.message)
        )

    # ------------------------------------------------------------------ websocket endpoint

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        received = time.time()
        token, user = self._token_user(request)
        response = await self._apply_faults(request.method, request.path)
        if response is None and token is not None and user is None:
            response = self._error_response(_unauthorized())
        if response is not None:
            self._record(received, request.method, request.path, response.status, "")
            return response
        try:
            sequence_number: int | None = int(request.query.get("sequence_number", ""))
        except ValueError:
            sequence_number = None
        connection_id = request.query.get("connection_id", "")

        ws = web.WebSocketResponse(autoping=True)
        try:
            await ws.prepare(request)
        except web.HTTPException as refused:  # not a websocket handshake
            self._record(received, request.method, request.path, refused.status, "")
            raise
        live = _LiveSocket(ws, request.transport, asyncio.get_running_loop(), asyncio.Queue(), "")
        with self._lock:
            self._ws_accepted += 1
            self._sockets.add(live)
        self._record(received, request.method, request.path, 101, user["id"] if user else "")
        writer = asyncio.create_task(self._ws_writer(live))
        try:
            if user is None:
                token, user = await self._ws_challenge(ws, live)
                if user is None:
                    await asyncio.sleep(0.05)  # let the FAIL reply go out before closing
                    await ws.close()
                    return ws
            live.token = token or ""
            self._attach(user["id"], live, connection_id, sequence_number)
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    reply = self._ws_action(user, msg.data)
                    if reply is not None:
                        live.send(_dumps(reply))
        finally:
            self._detach(live)
            writer.cancel()
        return ws

    async def _ws_writer(self, live: _LiveSocket) -> None:
        while True:
            text = await live.queue.get()
            try:
                await live.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    async def _ws_challenge(
        self, ws: web.WebSocketResponse, live: _LiveSocket
    ) -> tuple[str | None, dict[str, Any] | None]:
        """Wait for an authentication_challenge; (token, user) or (None, None) after a FAIL."""
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            try:
                request = json.loads(msg.data)
                action, seq = request.get("action"), request.get("seq")
            except (ValueError, AttributeError):
                continue
            if action != "authentication_challenge":
                live.send(
                    _dumps(
                        self._ws_fail(
                            seq,
                            "api.web_socket_router.not_authenticated.app_error",
                            "Not authenticated.",
                        )
                    )
                )
                continue
            token = str((request.get("data") or {}).get("token", ""))
            with self._lock:
                user = self._users.get(self._tokens.get(token, ""))
            if user is None:
                live.send(
                    _dumps(
                        self._ws_fail(
                            seq, "api.web_socket_router.bad_token.app_error", "Invalid token."
                        )
                    )
                )
                return None, None
            live.send(_dumps({"status": "OK", "seq_reply": seq}))
            return token, user
        return None, None

    @staticmethod
    def _ws_fail(seq: Any, error_id: str, message: str) -> dict[str, Any]:
        return {"status": "FAIL", "seq_reply": seq, "error": {"id": error_id, "message": message}}

    def _ws_action(self, user: dict[str, Any], raw: str | bytes) -> dict[str, Any] | None:
        try:
            request = json.loads(raw)
            action, seq, data = request.get("action"), request.get("seq"), request.get("data") or {}
        except (ValueError, AttributeError):
            return None
        if action == "ping":
            return {"status": "OK", "seq_reply": seq, "data": {"text": "pong"}}
        if action == "user_typing":
            with self._lock:
                channel_id = str(data.get("channel_id", ""))
                members = [u for u in self._channel_user_ids(channel_id) if u != user["id"]]
                self._emit(
                    "typing",
                    {"parent_id": data.get("parent_id", ""), "user_id": user["id"]},
                    members,
                    channel_id=channel_id,
                )
            return {"status": "OK", "seq_reply": seq}
        if action in ("get_statuses", "get_statuses_by_ids"):
            with self._lock:
                ids = data.get("user_ids") if action == "get_statuses_by_ids" else self._users
                online = {c.user_id for c in self._conns.values() if c.live is not None}
                statuses = {uid: "online" if uid in online else "offline" for uid in ids or ()}
            return {"status": "OK", "seq_reply": seq, "data": statuses}
        return self._ws_fail(
            seq, "api.web_socket_router.bad_action.app_error", f"Unknown action {action!r}."
        )

    # ------------------------------------------------------------------ REST handlers (lock held)

    def _ping(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, {"status": "OK"}

    def _path_user(self, ctx: _Ctx, key: str = "user_id") -> dict[str, Any]:
        user_id = ctx.params[key]
        if user_id == "me":
            assert ctx.user is not None
            return ctx.user
        user = self._users.get(user_id)
        if user is None:
            raise _not_found("user")
        return user

    def _get_user(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, self._path_user(ctx)

    def _groups_licensed(self) -> None:
        if not self.groups_enabled:
            raise ApiError(
                501, "api.ldap_groups.license_error", "Your license does not support groups."
            )

    def _get_user_groups(self, ctx: _Ctx) -> tuple[int, Any]:
        user = self._path_user(ctx)
        self._groups_licensed()
        if self.user_groups_forbidden:
            raise _forbidden()
        return 200, [
            {key: value for key, value in group.items() if key != "members"}
            for group in self._groups.values()
            if user["id"] in group["members"]
        ]

    def _get_user_by_username(self, ctx: _Ctx) -> tuple[int, Any]:
        for user in self._users.values():
            if user["username"] == ctx.params["username"]:
                return 200, user
        raise _not_found("user")

    def _body_strings(self, ctx: _Ctx) -> list[str]:
        if not isinstance(ctx.body, list) or not all(isinstance(x, str) for x in ctx.body):
            raise _bad_request(
                "api.context.invalid_body_param.app_error", "Expected a JSON list of strings."
            )
        return ctx.body

    def _get_users_by_ids(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, [self._users[i] for i in self._body_strings(ctx) if i in self._users]

    def _get_users_by_usernames(self, ctx: _Ctx) -> tuple[int, Any]:
        wanted = set(self._body_strings(ctx))
        return 200, [u for u in self._users.values() if u["username"] in wanted]

    def _get_user_teams(self, ctx: _Ctx) -> tuple[int, Any]:
        user = self._path_user(ctx)
        if user["id"] != ctx.user_id:
            raise _forbidden()
        return 200, [t for t in self._teams.values() if user["id"] in self._team_members[t["id"]]]

    def _visible_team(self, team: dict[str, Any] | None, ctx: _Ctx) -> dict[str, Any]:
        if team is None:
            raise _not_found("team")
        if ctx.user_id not in self._team_members[team["id"]]:
            raise _forbidden()
        return team

    def _get_team(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, self._visible_team(self._teams.get(ctx.params["team_id"]), ctx)

    def _team_by_name(self, name: str) -> dict[str, Any] | None:
        return next((t for t in self._teams.values() if t["name"] == name), None)

    def _get_team_by_name(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, self._visible_team(self._team_by_name(ctx.params["name"]), ctx)

    def _get_user_channels(self, ctx: _Ctx) -> tuple[int, Any]:
        user = self._path_user(ctx)
        if user["id"] != ctx.user_id:
            raise _forbidden()
        team_id = ctx.params["team_id"]
        self._visible_team(self._teams.get(team_id), ctx)
        return 200, [
            c
            for c in self._user_channels(user["id"])
            if c["team_id"] == team_id or c["type"] in ("D", "G")
        ]

    def _readable_channel(self, channel: dict[str, Any] | None, ctx: _Ctx) -> dict[str, Any]:
        if channel is None:
            raise ApiError(
                404, "app.channel.get.existing.app_error", "Unable to find the existing channel."
            )
        if not self._can_read(channel, ctx.user_id):
            raise _forbidden()
        return channel

    def _get_channel(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, self._readable_channel(self._channels.get(ctx.params["channel_id"]), ctx)

    def _channel_in_team(self, team: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
        if team is None:
            return None
        return next(
            (
                c
                for c in self._channels.values()
                if c["team_id"] == team["id"] and c["name"] == name
            ),
            None,
        )

    def _get_channel_by_team_name(self, ctx: _Ctx) -> tuple[int, Any]:
        team = self._team_by_name(ctx.params["team_name"])
        channel = self._channel_in_team(team, ctx.params["channel_name"])
        return 200, self._readable_channel(channel, ctx)

    def _get_channel_by_name(self, ctx: _Ctx) -> tuple[int, Any]:
        team = self._teams.get(ctx.params["team_id"])
        channel = self._channel_in_team(team, ctx.params["channel_name"])
        return 200, self._readable_channel(channel, ctx)

    @staticmethod
    def _paging(ctx: _Ctx, default: int = 60) -> tuple[int, int]:
        try:
            page = max(0, int(ctx.query.get("page", 0)))
            per_page = min(200, max(1, int(ctx.query.get("per_page", default))))
        except ValueError:
            raise _bad_request("api.context.invalid_url_param.app_error", "Invalid page.") from None
        return page, per_page

    def _get_channel_members(self, ctx: _Ctx) -> tuple[int, Any]:
        channel = self._readable_channel(self._channels.get(ctx.params["channel_id"]), ctx)
        page, per_page = self._paging(ctx)
        members = list(self._channel_members[channel["id"]].values())
        return 200, members[page * per_page : (page + 1) * per_page]

    def _add_channel_member(self, ctx: _Ctx) -> tuple[int, Any]:
        channel = self._channels.get(ctx.params["channel_id"])
        if channel is not None and channel["type"] == "P":
            channel = self._member_channel(channel["id"], ctx)  # non-members: 404
        channel = self._readable_channel(channel, ctx)
        user_id = ctx.body.get("user_id") if isinstance(ctx.body, dict) else None
        if not isinstance(user_id, str) or user_id not in self._users:
            raise _bad_request("api.context.invalid_body_param.app_error", "Invalid user_id.")
        if channel["type"] in ("D", "G"):
            raise _bad_request(
                "api.channel.add_user_to_channel.type.app_error",
                "Can not add user to this channel type.",
            )
        if not self._is_member(channel["id"], ctx.user_id) and user_id != ctx.user_id:
            raise _forbidden()
        if user_id not in self._team_members[channel["team_id"]]:
            raise _forbidden()
        added = not self._is_member(channel["id"], user_id)
        member = self._add_member(channel, user_id, notify=True)
        if added:
            name = self._users[user_id]["username"]
            kind, text = (
                ("system_join_channel", "joined the channel.")
                if user_id == ctx.user_id
                else ("system_add_to_channel", f"added @{name} to the channel.")
            )
            self._system_post(channel, ctx.user_id, kind, text, {"addedUserId": user_id})
        return 201, member

    def _remove_member_rest(self, ctx: _Ctx) -> tuple[int, Any]:
        channel = self._readable_channel(self._channels.get(ctx.params["channel_id"]), ctx)
        user = self._path_user(ctx)
        if channel["type"] in ("D", "G"):
            raise _bad_request(
                "api.channel.remove.default.app_error",
                "Can not remove user from this channel type.",
            )
        if not self._is_member(channel["id"], ctx.user_id):
            raise _forbidden()
        if not self._is_member(channel["id"], user["id"]):
            raise _not_found("channel member")
        self._remove_member(channel, user["id"], ctx.user_id, notify=True)
        return 200, {"status": "OK"}

    def _create_direct(self, ctx: _Ctx) -> tuple[int, Any]:
        ids = self._body_strings(ctx)
        if len(ids) != 2 or any(i not in self._users for i in ids):
            raise _bad_request("api.context.invalid_body_param.app_error", "Invalid user ids.")
        if ctx.user_id not in ids:
            raise _forbidden()
        return 201, self._direct(ids[0], ids[1])

    def _create_post(self, ctx: _Ctx) -> tuple[int, Any]:
        body = ctx.body if isinstance(ctx.body, dict) else {}
        channel = self._channels.get(str(body.get("channel_id", "")))
        if channel is None or not self._is_member(channel["id"], ctx.user_id):
            raise _forbidden()
        pending = body.get("pending_post_id") or ""
        if pending:
            previous = self._pending.get((ctx.user_id, pending))
            if previous and ctx.received_monotonic - previous[1] <= PENDING_POST_DEDUP_SECONDS:
                return 201, self._posts[previous[0]]
        post = self._new_post(
            ctx.user_id,
            channel,
            body.get("message"),
            root_id=body.get("root_id") or "",
            props=body.get("props"),
            file_ids=body.get("file_ids") or [],
            pending_post_id=pending,
            times=(ctx.received_time, ctx.received_monotonic),
        )
        if pending:
            self._pending[(ctx.user_id, pending)] = (post["id"], ctx.received_monotonic)
        ctx.created_post = post
        return 201, post

    def _editable_post(self, post_id: str, user_id: str) -> dict[str, Any]:
        post = self._posts.get(post_id)
        if post is None:
            raise _not_found("post")
        if post["user_id"] != user_id:
            raise _forbidden()
        return post

    def _patch_post(self, ctx: _Ctx) -> tuple[int, Any]:
        post = self._editable_post(ctx.params["post_id"], ctx.user_id)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        message = body.get("message")
        if message is not None:
            self._check_message(message)
        props = body.get("props")
        if props is not None and not isinstance(props, dict):
            raise _bad_request("api.context.invalid_body_param.app_error", "Invalid props.")
        return 200, self._edit(post, message, props)

    def _readable_post(self, ctx: _Ctx) -> dict[str, Any]:
        post = self._posts.get(ctx.params["post_id"])
        if post is None:
            raise _not_found("post")
        if not self._can_read(self._channels[post["channel_id"]], ctx.user_id):
            raise _forbidden()
        return post

    def _get_post(self, ctx: _Ctx) -> tuple[int, Any]:
        return 200, self._readable_post(ctx)

    def _get_reactions(self, ctx: _Ctx) -> tuple[int, Any]:
        post = self._readable_post(ctx)
        return 200, post.get("metadata", {}).get("reactions", [])

    @staticmethod
    def _post_list(posts: list[dict[str, Any]], extra: Iterable[dict[str, Any]] = ()) -> dict:
        ordered = sorted(posts, key=lambda p: p["create_at"], reverse=True)
        return {
            "order": [p["id"] for p in ordered],
            "posts": {p["id"]: p for p in [*ordered, *extra]},
            "next_post_id": "",
            "prev_post_id": "",
            "has_next": False,
        }

    def _get_thread(self, ctx: _Ctx) -> tuple[int, Any]:
        post = self._readable_post(ctx)
        root_id = post["root_id"] or post["id"]
        thread = [p for p in self._posts.values() if root_id in (p["id"], p["root_id"])]
        return 200, self._post_list(thread)

    def _get_channel_posts(self, ctx: _Ctx) -> tuple[int, Any]:
        channel = self._readable_channel(self._channels.get(ctx.params["channel_id"]), ctx)
        posts = [p for p in self._posts.values() if p["channel_id"] == channel["id"]]
        if "since" in ctx.query:
            try:
                since = int(ctx.query["since"])
            except ValueError:
                raise _bad_request(
                    "api.context.invalid_url_param.app_error", "Invalid since."
                ) from None
            changed = [p for p in posts if p["update_at"] >= since]
            roots = {p["root_id"] for p in changed} - {p["id"] for p in changed} - {""}
            return 200, self._post_list(changed, (self._posts[r] for r in roots))
        page, per_page = self._paging(ctx)
        posts.sort(key=lambda p: p["create_at"], reverse=True)
        result = self._post_list(posts[page * per_page : (page + 1) * per_page])
        result["has_next"] = len(posts) > (page + 1) * per_page
        return 200, result

    def _create_reaction(self, ctx: _Ctx) -> tuple[int, Any]:
        body = ctx.body if isinstance(ctx.body, dict) else {}
        if body.get("user_id") != ctx.user_id:
            raise _forbidden()
        post = self._posts.get(str(body.get("post_id", "")))
        if post is None:
            raise _not_found("post")
        if not self._is_member(post["channel_id"], ctx.user_id):
            raise _forbidden()
        emoji = body.get("emoji_name")
        if not isinstance(emoji, str) or not re.fullmatch(r"[a-z0-9_+-]{1,64}", emoji):
            raise _bad_request(
                "model.reaction.is_valid.emoji_name.app_error", "Invalid emoji name."
            )
        return 201, self._react(ctx.user_id, post, emoji)

    def _upload_files(self, ctx: _Ctx) -> tuple[int, Any]:
        form = ctx.body if isinstance(ctx.body, dict) else {}
        channel_id = form.get("channel_id") or ctx.query.get("channel_id", "")
        channel = self._channels.get(channel_id)
        if channel is None or not self._is_member(channel_id, ctx.user_id):
            raise _forbidden()
        if not ctx.files:
            raise _bad_request(
                "api.file.upload_file.incorrect_number_of_files.app_error",
                "Unable to upload files. Incorrect number of files specified.",
            )
        infos = []
        for filename, content_type, content in ctx.files:
            name = filename.rsplit("/", 1)[-1]
            info: dict[str, Any] = {
                "id": new_id(),
                "user_id": ctx.user_id,
                "channel_id": channel_id,
                "post_id": "",
                "create_at": now_ms(),
                "update_at": now_ms(),
                "delete_at": 0,
                "name": name,
                "extension": name.rsplit(".", 1)[-1].lower() if "." in name else "",
                "size": len(content),
                "mime_type": mimetypes.guess_type(name)[0] or content_type,
                "width": 0,
                "height": 0,
                "has_preview_image": False,
            }
            self._files[info["id"]] = info
            self._uploaded.append({**info, "content": content})
            infos.append(info)
        return 201, {"file_infos": infos, "client_ids": []}

    def _get_groups(self, ctx: _Ctx) -> tuple[int, Any]:
        self._groups_licensed()
        query = ctx.query.get("q", "").lower()
        return 200, [
            {key: value for key, value in group.items() if key != "members"}
            for group in self._groups.values()
            if query in group["name"].lower() or query in group["display_name"].lower()
        ]

    def _get_group_members(self, ctx: _Ctx) -> tuple[int, Any]:
        self._groups_licensed()
        group = self._groups.get(ctx.params["group_id"])
        if group is None:
            raise _not_found("group")
        members = [self._users[user_id] for user_id in sorted(group["members"])]
        return 200, {"members": members, "total_member_count": len(members)}

    def _member_channel(self, channel_id: str, ctx: _Ctx) -> dict[str, Any]:
        """A channel the caller may change: a private one only by its members (others get
        a 404, as if it did not exist), a public one by members of its team."""
        channel = self._channels.get(channel_id)
        if channel is None or (
            channel["type"] == "P" and not self._is_member(channel["id"], ctx.user_id)
        ):
            raise ApiError(
                404, "app.channel.get.existing.app_error", "Unable to find the existing channel."
            )
        if not self._can_read(channel, ctx.user_id):
            raise _forbidden()
        return channel

    def _check_channel_fields(self, fields: dict[str, Any]) -> None:
        limits = (
            ("display_name", MAX_CHANNEL_DISPLAY_NAME),
            ("header", MAX_CHANNEL_HEADER),
            ("purpose", MAX_CHANNEL_PURPOSE),
        )
        for key, limit in limits:
            value = fields.get(key)
            if value is None:
                continue
            if (
                not isinstance(value, str)
                or len(value) > limit
                or (key == "display_name" and not value)
            ):
                raise _bad_request(
                    f"model.channel.is_valid.{key}.app_error", f"Invalid {key} for channel."
                )

    def _create_channel(self, ctx: _Ctx) -> tuple[int, Any]:
        body = ctx.body if isinstance(ctx.body, dict) else {}
        team = self._teams.get(str(body.get("team_id", "")))
        if team is None or ctx.user_id not in self._team_members[team["id"]]:
            raise _forbidden()
        type_ = body.get("type")
        if type_ not in ("O", "P"):
            raise _bad_request("model.channel.is_valid.type.app_error", "Invalid type.")
        if not self.channel_creation_allowed:
            raise _forbidden()
        name = body.get("name")
        if not isinstance(name, str) or not _CHANNEL_NAME_RE.match(name):
            raise _bad_request(
                "model.channel.is_valid.2_or_more.app_error",
                "Name must be 2 or more lowercase alphanumeric characters.",
            )
        self._check_channel_fields(body)
        if any(c["team_id"] == team["id"] and c["name"] == name for c in self._channels.values()):
            # archived channels included: their names stay taken
            raise _bad_request(
                "store.sql_channel.save_channel.exists.app_error",
                "A channel with that name already exists on the same team.",
            )
        if len(name) > MAX_CHANNEL_NAME:
            raise ApiError(
                500, "store.sql_channel.save_channel.save.app_error", "Unable to save channel."
            )
        channel = self._new_channel(
            team["id"], name, type_, body["display_name"], creator_id=ctx.user_id
        )
        channel["header"] = body.get("header") or ""
        channel["purpose"] = body.get("purpose") or ""
        member = self._add_member(channel, ctx.user_id, notify=False)
        member.update(roles="channel_user channel_admin", scheme_admin=True)
        self._system_post(channel, ctx.user_id, "system_join_channel", "joined the channel.")
        return 201, channel

    def _patch_channel(self, ctx: _Ctx) -> tuple[int, Any]:
        channel = self._member_channel(ctx.params["channel_id"], ctx)
        body = ctx.body if isinstance(ctx.body, dict) else {}
        self._check_channel_fields(body)
        for key, kind in (
            ("header", "system_header_change"),
            ("purpose", "system_purpose_change"),
            ("display_name", "system_displayname_change"),
        ):
            value = body.get(key)
            if value is not None and value != channel[key]:
                old, channel[key] = channel[key], value
                self._system_post(
                    channel, ctx.user_id, kind, f"updated the channel {key}", {f"old_{key}": old}
                )
        channel["update_at"] = now_ms()
        return 200, channel

    def _set_pinned(self, ctx: _Ctx, pinned: bool) -> tuple[int, Any]:
        post = self._posts.get(ctx.params["post_id"])
        if post is None:
            raise _not_found("post")
        self._member_channel(post["channel_id"], ctx)  # anyone who can read may (un)pin
        if post["is_pinned"] != pinned:
            post["is_pinned"] = pinned
            post["update_at"] = max(now_ms(), post["update_at"] + 1)
            # Pinning is not an edit of the text: edit_at stays; only post_edited is sent.
            self._emit(
                "post_edited",
                {"post": _dumps(post)},
                self._channel_user_ids(post["channel_id"]),
                channel_id=post["channel_id"],
            )
        return 200, {"status": "OK"}

    def _pin_post(self, ctx: _Ctx) -> tuple[int, Any]:
        return self._set_pinned(ctx, True)

    def _unpin_post(self, ctx: _Ctx) -> tuple[int, Any]:
        return self._set_pinned(ctx, False)

    # ------------------------------------------------------------------ domain operations

    def _system_post(
        self,
        channel: dict[str, Any],
        user_id: str,
        type_: str,
        message: str,
        props: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What Mattermost writes itself, as the user who caused it (``type`` system_*)."""
        return self._new_post(user_id, channel, message, props=props, type_=type_)

    def _check_message(self, message: Any) -> None:
        if not isinstance(message, str):
            raise _bad_request("api.context.invalid_body_param.app_error", "Invalid message.")
        if len(message) > MAX_POST_RUNES:
            raise _bad_request("model.post.is_valid.msg.app_error", "Invalid Message.")

    def _new_post(
        self,
        user_id: str,
        channel: dict[str, Any],
        message: Any,
        *,
        root_id: str = "",
        props: Any = None,
        file_ids: Any = (),
        pending_post_id: str = "",
        create_at: int | None = None,
        times: tuple[float, float] | None = None,
        type_: str = "",
    ) -> dict[str, Any]:
        with self._lock:
            self._check_message(message)
            if root_id:
                root = self._posts.get(root_id)
                if root is None or root["channel_id"] != channel["id"] or root["root_id"]:
                    raise _bad_request(
                        "api.post.create_post.root_id.app_error", "Invalid RootId parameter."
                    )
            if props is not None and not isinstance(props, dict):
                raise _bad_request("api.context.invalid_body_param.app_error", "Invalid props.")
            files = []
            for file_id in file_ids:
                info = self._files.get(file_id)
                if info is None or info["user_id"] != user_id or info["post_id"]:
                    raise _bad_request(
                        "api.post.create_post.file_ids.app_error", "Invalid file_ids."
                    )
                if info["channel_id"] != channel["id"]:
                    continue  # uploaded to another channel: Mattermost drops it silently
                files.append(info)
            props = dict(props or {})
            if self._users[user_id]["is_bot"]:
                props["from_bot"] = "true"
            at = create_at if create_at is not None else now_ms()
            post: dict[str, Any] = {
                "id": new_id(),
                "create_at": at,
                "update_at": at,
                "edit_at": 0,
                "delete_at": 0,
                "is_pinned": False,
                "user_id": user_id,
                "channel_id": channel["id"],
                "root_id": root_id,
                "original_id": "",
                "message": message,
                "type": type_,
                "props": props,
                "hashtags": "",
                "pending_post_id": pending_post_id,
                "reply_count": 0,
                "last_reply_at": 0,
                "participants": None,
                "metadata": {},
            }
            if files:
                for info in files:
                    info["post_id"] = post["id"]
                post["file_ids"] = [f["id"] for f in files]
                post["metadata"]["files"] = [dict(f) for f in files]
            if root_id:
                root = self._posts[root_id]
                root["reply_count"] += 1
                root["last_reply_at"] = root["update_at"] = at
                post["reply_count"] = root["reply_count"]
            self._posts[post["id"]] = post
            self._post_times[post["id"]] = times or (time.time(), time.monotonic())
            channel["last_post_at"] = max(channel["last_post_at"], at)
            channel["total_msg_count"] += 1
            self._emit_posted(post, channel)
            self._changed.notify_all()
            return post

    def _mentions(self, post: dict[str, Any], channel: dict[str, Any]) -> list[str]:
        members = self._channel_user_ids(channel["id"])
        sender = post["user_id"]
        if channel["type"] == "D":
            return [u for u in members if u != sender]
        by_name = {self._users[u]["username"].lower(): u for u in members}
        found: list[str] = []
        for word in _MENTION_RE.findall(post["message"]):
            word = word.lower()
            if word in ("channel", "all", "here"):
                found.extend(members)
                continue
            while word and word not in by_name and word[-1] in "._-":
                word = word[:-1]
            if word in by_name:
                found.append(by_name[word])
        return [u for u in dict.fromkeys(found) if u != sender]

    def _emit_posted(self, post: dict[str, Any], channel: dict[str, Any]) -> None:
        sender = self._users[post["user_id"]]
        display = channel["display_name"]
        if channel["type"] == "D":
            display = "@" + sender["username"]
        data: dict[str, Any] = {
            "channel_display_name": display,
            "channel_name": channel["name"],
            "channel_type": channel["type"],
            "post": _dumps(post),
            "sender_name": "@" + sender["username"],
            "set_online": True,
            "team_id": channel["team_id"],
        }
        mentions = self._mentions(post, channel)
        if mentions:
            data["mentions"] = _dumps(mentions)
        self._emit("posted", data, self._channel_user_ids(channel["id"]), channel_id=channel["id"])

    def _edit(
        self, post: dict[str, Any], message: str | None, props: dict[str, Any] | None
    ) -> dict[str, Any]:
        with self._lock:
            if message is not None:
                post["message"] = message
            if props is not None:
                if self._users[post["user_id"]]["is_bot"]:
                    props = {**props, "from_bot": "true"}
                post["props"] = props
            post["edit_at"] = post["update_at"] = max(now_ms(), post["update_at"] + 1)
            self._emit(
                "post_edited",
                {"post": _dumps(post)},
                self._channel_user_ids(post["channel_id"]),
                channel_id=post["channel_id"],
            )
            return post

    def _react(self, user_id: str, post: dict[str, Any], emoji: str) -> dict[str, Any]:
        with self._lock:
            at = now_ms()
            reaction = {
                "user_id": user_id,
                "post_id": post["id"],
                "emoji_name": emoji,
                "create_at": at,
                "update_at": at,
                "delete_at": 0,
                "remote_id": "",
                "channel_id": post["channel_id"],
            }
            reactions = post["metadata"].setdefault("reactions", [])
            existing = next(
                (r for r in reactions if r["user_id"] == user_id and r["emoji_name"] == emoji),
                None,
            )
            if existing is not None:
                return existing
            reactions.append(reaction)
            post["has_reactions"] = True
            post["update_at"] = max(at, post["update_at"] + 1)
            self._emit(
                "reaction_added",
                {"reaction": _dumps(reaction)},
                self._channel_user_ids(post["channel_id"]),
                channel_id=post["channel_id"],
            )
            return reaction

    def _member_record(self, channel_id: str, user_id: str) -> dict[str, Any]:
        return {
            "channel_id": channel_id,
            "user_id": user_id,
            "roles": "channel_user",
            "last_viewed_at": 0,
            "msg_count": 0,
            "mention_count": 0,
            "mention_count_root": 0,
            "msg_count_root": 0,
            "notify_props": {
                "desktop": "default",
                "email": "default",
                "mark_unread": "all",
                "push": "default",
                "ignore_channel_mentions": "default",
            },
            "last_update_at": now_ms(),
            "scheme_guest": False,
            "scheme_user": True,
            "scheme_admin": False,
            "explicit_roles": "",
        }

    def _add_member(self, channel: dict[str, Any], user_id: str, *, notify: bool) -> dict:
        with self._lock:
            members = self._channel_members[channel["id"]]
            if user_id in members:
                return members[user_id]
            members[user_id] = self._member_record(channel["id"], user_id)
            if notify:
                self._emit(
                    "user_added",
                    {"team_id": channel["team_id"], "user_id": user_id},
                    list(members),
                    channel_id=channel["id"],
                )
            return members[user_id]

    def _remove_member(
        self, channel: dict[str, Any], user_id: str, remover_id: str, *, notify: bool
    ) -> None:
        """Like Mattermost: one user_removed to the channel, one to the removed user."""
        with self._lock:
            self._channel_members[channel["id"]].pop(user_id, None)
            if not notify:
                return
            self._emit(
                "user_removed",
                {"remover_id": remover_id, "user_id": user_id},
                self._channel_user_ids(channel["id"]),
                channel_id=channel["id"],
            )
            self._emit(
                "user_removed",
                {"channel_id": channel["id"], "remover_id": remover_id, "user_id": user_id},
                [user_id],
                user_id=user_id,
            )

    def _new_channel(
        self, team_id: str, name: str, type_: str, display_name: str, creator_id: str = ""
    ) -> dict[str, Any]:
        at = now_ms()
        channel: dict[str, Any] = {
            "id": new_id(),
            "create_at": at,
            "update_at": at,
            "delete_at": 0,
            "team_id": team_id,
            "type": type_,
            "display_name": display_name,
            "name": name,
            "header": "",
            "purpose": "",
            "last_post_at": at,
            "total_msg_count": 0,
            "extra_update_at": 0,
            "creator_id": creator_id,
        }
        self._channels[channel["id"]] = channel
        self._channel_members[channel["id"]] = {}
        return channel

    def _direct(self, user_a: str, user_b: str) -> dict[str, Any]:
        with self._lock:
            name = "__".join(sorted((user_a, user_b)))
            for channel in self._channels.values():
                if channel["type"] == "D" and channel["name"] == name:
                    return channel
            channel = self._new_channel("", name, "D", "", user_a)
            for uid in (user_a, user_b):
                self._add_member(channel, uid, notify=False)
            return channel

    # ------------------------------------------------------------------ control API: seeding

    def add_team(self, name: str, display_name: str | None = None) -> dict[str, Any]:
        with self._lock:
            at = now_ms()
            team: dict[str, Any] = {
                "id": new_id(),
                "create_at": at,
                "update_at": at,
                "delete_at": 0,
                "display_name": display_name or name,
                "name": name,
                "description": "",
                "email": "",
                "type": "O",
                "company_name": "",
                "allowed_domains": "",
                "invite_id": new_id(),
                "allow_open_invite": False,
                "scheme_id": "",
                "policy_id": "",
            }
            self._teams[team["id"]] = team
            self._team_members[team["id"]] = set()
            return copy.deepcopy(team)

    def add_group(self, name: str, members: Iterable[Ref] = ()) -> dict[str, Any]:
        """A custom user group (``group:<name>`` in Opsroom's policy) with these members."""
        ids = {self._user(member)["id"] for member in members}
        with self._lock:
            at = now_ms()
            group: dict[str, Any] = {
                "id": new_id(),
                "name": name,
                "display_name": name,
                "description": "",
                "source": "custom",
                "remote_id": "",
                "create_at": at,
                "update_at": at,
                "delete_at": 0,
                "has_syncables": False,
                "members": ids,
            }
            self._groups[group["id"]] = group
        return {key: value for key, value in group.items() if key != "members"}

    def add_user(self, username: str, *, is_bot: bool = False) -> dict[str, Any]:
        with self._lock:
            if any(u["username"] == username for u in self._users.values()):
                raise ValueError(f"username {username!r} taken")
            at = now_ms()
            user: dict[str, Any] = {
                "id": new_id(),
                "create_at": at,
                "update_at": at,
                "delete_at": 0,
                "username": username,
                "auth_data": "",
                "auth_service": "",
                "email": f"{username}@opsroom.test",
                "email_verified": True,
                "nickname": "",
                "first_name": "",
                "last_name": "",
                "position": "",
                "roles": "system_user",
                "props": {},
                "notify_props": {
                    "channel": "true",
                    "desktop": "mention",
                    "desktop_sound": "true",
                    "email": "true",
                    "first_name": "false",
                    "mention_keys": "",
                    "push": "mention",
                },
                "last_password_update": at,
                "last_picture_update": 0,
                "failed_attempts": 0,
                "locale": "en",
                "timezone": {
                    "automaticTimezone": "",
                    "manualTimezone": "",
                    "useAutomaticTimezone": True,
                },
                "mfa_active": False,
                "is_bot": is_bot,
            }
            if is_bot:
                user["bot_description"] = ""
            self._users[user["id"]] = user
            return copy.deepcopy(user)

    def add_to_team(self, team: Ref, user: Ref, *, notify: bool = False) -> None:
        """Make ``user`` a team member; ``notify`` sends added_to_team to that user."""
        with self._lock:
            team_id, user_id = self._team(team)["id"], self._user(user)["id"]
            if user_id in self._team_members[team_id]:
                return
            self._team_members[team_id].add(user_id)
            if notify:
                self._emit(
                    "added_to_team",
                    {"team_id": team_id, "user_id": user_id},
                    [user_id],
                    user_id=user_id,
                )

    def remove_from_team(self, team: Ref, user: Ref, *, notify: bool = True) -> None:
        """Remove ``user`` from the team and its channels; ``notify`` sends leave_team."""
        with self._lock:
            team_id, user_id = self._team(team)["id"], self._user(user)["id"]
            recipients = [*self._team_members[team_id], user_id]
            self._team_members[team_id].discard(user_id)
            for channel in self._channels.values():
                if channel["team_id"] == team_id:
                    self._channel_members[channel["id"]].pop(user_id, None)
            if notify:
                self._emit(
                    "leave_team",
                    {"team_id": team_id, "user_id": user_id},
                    recipients,
                    team_id=team_id,
                )

    def add_channel(
        self, team: Ref, name: str, *, type: str = "O", display_name: str | None = None
    ) -> dict[str, Any]:
        if type not in ("O", "P"):
            raise ValueError("team channels are type 'O' or 'P'; use direct/group_channel")
        with self._lock:
            team_id = self._team(team)["id"]
            if self._channel_in_team(self._teams[team_id], name) is not None:
                raise ValueError(f"channel {name!r} exists in that team")
            return copy.deepcopy(self._new_channel(team_id, name, type, display_name or name))

    def add_member(self, channel: Ref, user: Ref, *, notify: bool = False) -> None:
        """Add ``user`` to a team channel (must be a team member); ``notify`` sends user_added."""
        with self._lock:
            chan, user_id = self._channel(channel), self._user(user)["id"]
            if chan["team_id"] and user_id not in self._team_members[chan["team_id"]]:
                raise ValueError(f"user {user!r} is not in the channel's team; add_to_team first")
            self._add_member(chan, user_id, notify=notify)

    def remove_member(
        self, channel: Ref, user: Ref, *, remover: Ref | None = None, notify: bool = True
    ) -> None:
        """Remove ``user`` from a channel (kicked by ``remover``, default themselves)."""
        with self._lock:
            user_id = self._user(user)["id"]
            remover_id = self._user(remover)["id"] if remover is not None else user_id
            self._remove_member(self._channel(channel), user_id, remover_id, notify=notify)

    def archive_channel(self, channel: Ref, by: Ref | None = None) -> None:
        """Archive a channel (its name stays taken, as in Mattermost)."""
        with self._lock:
            chan = self._channel(channel)
            actor = self._user(by)["id"] if by is not None else chan["creator_id"]
            if actor:
                self._system_post(chan, actor, "system_channel_deleted", "archived the channel")
            chan["delete_at"] = now_ms()

    def direct_channel(self, user_a: Ref, user_b: Ref) -> dict[str, Any]:
        with self._lock:
            channel = self._direct(self._user(user_a)["id"], self._user(user_b)["id"])
            return copy.deepcopy(channel)

    def group_channel(self, users: Iterable[Ref]) -> dict[str, Any]:
        with self._lock:
            members = sorted({self._user(u)["id"] for u in users})
            if not 3 <= len(members) <= 8:
                raise ValueError("group channels have 3 to 8 members")
            name = hashlib.sha1(",".join(members).encode()).hexdigest()
            for channel in self._channels.values():
                if channel["type"] == "G" and channel["name"] == name:
                    return copy.deepcopy(channel)
            display = ", ".join(sorted(self._users[u]["username"] for u in members))
            channel = self._new_channel("", name, "G", display, members[0])
            for uid in members:
                self._add_member(channel, uid, notify=False)
            return copy.deepcopy(channel)

    def create_token(self, user: Ref) -> str:
        with self._lock:
            token = new_id()
            self._tokens[token] = self._user(user)["id"]
            return token

    def revoke_token(self, token: str) -> None:
        """Invalidate ``token``; its websockets are closed with code 1008 (policy violation)."""
        with self._lock:
            self._tokens.pop(token, None)
            sockets = [
                c.live for c in self._conns.values() if c.live is not None and c.live.token == token
            ]
        for live in sockets:
            closing = live.ws.close(code=1008, message=b"session revoked")
            if threading.current_thread() is self._thread:  # e.g. from a post_received hook
                task = live.loop.create_task(closing)
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            else:
                asyncio.run_coroutine_threadsafe(closing, live.loop).result(timeout=5)

    # ------------------------------------------------------------------ control API: traffic

    def post_as(
        self,
        user: Ref,
        channel: Ref,
        message: str,
        *,
        root_id: str = "",
        props: dict[str, Any] | None = None,
        create_at: int | None = None,
        from_webhook: bool = False,
    ) -> dict[str, Any]:
        """Create a post as if ``user`` sent it (stored and broadcast to channel members).

        ``create_at`` (ms since epoch) backdates the post, e.g. for stale-command tests.
        """
        with self._lock:
            author, chan = self._user(user), self._channel(channel)
            if not self._is_member(chan["id"], author["id"]):
                raise ValueError(f"{author['username']} is not a member of {chan['name']}")
            props = dict(props or {})
            if from_webhook:
                props["from_webhook"] = "true"
            post = self._new_post(
                author["id"], chan, message, root_id=root_id, props=props, create_at=create_at
            )
            return copy.deepcopy(post)

    def edit_as(self, user: Ref, post_id: str, message: str) -> dict[str, Any]:
        with self._lock:
            post = self._editable_post(post_id, self._user(user)["id"])
            self._check_message(message)
            return copy.deepcopy(self._edit(post, message, None))

    def react_as(self, user: Ref, post_id: str, emoji: str) -> dict[str, Any]:
        with self._lock:
            post = self._posts.get(post_id)
            if post is None:
                raise ValueError(f"unknown post {post_id!r}")
            return copy.deepcopy(self._react(self._user(user)["id"], post, emoji))

    # ------------------------------------------------------------------ control API: faults

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        *,
        count: int = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status``.

        ``method`` may be "*"; ``path_regex`` is searched in the request path.  ``body`` defaults
        to an AppError; a str body is sent as text/plain.  Websocket upgrades match too.
        """
        with self._lock:
            self._faults.append(
                _Fault(
                    method.upper(), re.compile(path_regex), count, status, dict(headers or {}), body
                )
            )

    def delay_next(self, method: str, path_regex: str, seconds: float, count: int = 1) -> None:
        """Hold the next ``count`` matching requests for ``seconds`` before handling them."""
        with self._lock:
            self._faults.append(
                _Fault(method.upper(), re.compile(path_regex), count, delay=seconds)
            )

    def drop_websockets(self, *, forget: bool = False) -> None:
        """Abort every live websocket (TCP reset, no close frame).

        ``forget`` also discards all connection state, so no resume is possible.
        """
        self._on_loop(lambda: self._abort_sockets(forget=forget))

    def freeze_websockets(self) -> None:
        """Stop reading from every live websocket, so pings go unanswered: a half-dead TCP
        path that only the client's keep-alive can detect."""

        def freeze() -> None:
            with self._lock:
                sockets = list(self._sockets)
            for live in sockets:
                if live.transport is not None:
                    live.transport.pause_reading()

        self._on_loop(freeze)

    def _on_loop(self, action: Callable[[], Any]) -> None:
        """Run ``action`` on the server loop and wait for it (inline if stopped or on the loop)."""
        loop = self._loop
        if loop is None or threading.current_thread() is self._thread:
            action()
            return
        done = threading.Event()

        def run() -> None:
            try:
                action()
            finally:
                done.set()

        loop.call_soon_threadsafe(run)
        if not done.wait(timeout=5):
            raise TimeoutError("fake Mattermost loop did not respond")

    # ------------------------------------------------------------------ control API: inspection

    def posts_by(self, user: Ref) -> list[dict[str, Any]]:
        """The user's posts in creation order, each with ``received_time`` (time.time()) and
        ``received_monotonic`` (time.monotonic()) of the request that created it.
        """
        with self._lock:
            user_id = self._user(user)["id"]
            return [
                {
                    **copy.deepcopy(p),
                    "received_time": self._post_times[p["id"]][0],
                    "received_monotonic": self._post_times[p["id"]][1],
                }
                for p in self._posts.values()
                if p["user_id"] == user_id
            ]

    def get_post(self, post_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._posts[post_id])

    def get_channel(self, channel: Ref) -> dict[str, Any]:
        """A channel as stored (header, purpose, type...)."""
        with self._lock:
            return copy.deepcopy(self._channel(channel))

    def channel_members(self, channel: Ref) -> list[dict[str, Any]]:
        """The channel's member records (``user_id``, ``roles``...), in the order they joined."""
        with self._lock:
            return copy.deepcopy(list(self._channel_members[self._channel(channel)["id"]].values()))

    def set_pinned(self, user: Ref, post_id: str, pinned: bool) -> None:
        """Pin or unpin a post as ``user`` (anyone who can read the channel may)."""
        with self._lock:
            ctx = _Ctx(self._user(user), {"post_id": post_id}, {}, None, [], 0.0, 0.0)
            self._set_pinned(ctx, pinned)

    def reactions_on(self, post_id: str) -> list[str]:
        """Emoji names of the post's reactions, in the order they were added."""
        with self._lock:
            reactions = self._posts[post_id]["metadata"].get("reactions", [])
            return [r["emoji_name"] for r in reactions]

    def wait_for_posts(self, user: Ref, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until ``user`` has at least ``count`` posts; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                posts = self.posts_by(user)
                remaining = deadline - time.monotonic()
                if len(posts) >= count:
                    return posts
                if remaining <= 0:
                    got = [p["message"] for p in posts]
                    raise AssertionError(
                        f"expected {count} posts by {user!r} within {timeout}s, got {len(posts)}: "
                        f"{got!r}"
                    )
                self._changed.wait(remaining)

    def wait_for_live_websockets(self, count: int = 1, timeout: float = 10.0) -> None:
        """Block until at least ``count`` websockets are live; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.live_websockets() < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"expected {count} live websockets within {timeout}s, "
                        f"have {self.live_websockets()}"
                    )
                self._changed.wait(remaining)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request (time.time(), method, path, status, user_id), upgrades included."""
        with self._lock:
            return list(self._requests)

    @property
    def unexpected_requests(self) -> list[RecordedRequest]:
        """Requests that matched no route the fake serves (answered 404)."""
        with self._lock:
            return list(self._unexpected)

    @property
    def websocket_connections(self) -> int:
        """Number of websocket upgrades accepted so far."""
        with self._lock:
            return self._ws_accepted

    def live_websockets(self) -> int:
        """Number of websockets currently connected and authenticated."""
        with self._lock:
            return sum(1 for c in self._conns.values() if c.live is not None)

    @property
    def last_resume(self) -> dict[str, Any] | None:
        """How the last websocket attached: {"resumed", "connection_id",
        "requested_connection_id", "sequence_number", "replayed", "user_id"}."""
        with self._lock:
            return dict(self._last_resume) if self._last_resume else None

    @property
    def uploaded_files(self) -> list[dict[str, Any]]:
        """FileInfo dicts of every upload, plus the bytes under "content"."""
        with self._lock:
            return [dict(f) for f in self._uploaded]
