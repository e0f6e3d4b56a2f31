"""The bot's one HTTP server: aiohttp in its own thread, with its own event loop.

Nothing else in the bot listens on a port. Handlers are mounted by path at any time (the
alert receivers mount theirs when the alerts plugin starts), so the server can start before
every feature is ready and ``/readyz`` says when it is. Two paths are built in:

- ``/healthz``: 200 while the process serves HTTP at all (a liveness probe);
- ``/readyz``: 200 when every registered readiness check passes (the Mattermost session is
  up, the stores are writable), else 503 naming the failing checks (a readiness probe).

Handlers run on the server's event loop: they must answer fast and hand slow work to
threads of their own (the alert receivers store, answer and let the alert engine work).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from bot.errors import ConfigurationError
from bot.loop_thread import ThreadedServer

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A readiness check: None when ready, else why not (one short sentence).
Check = Callable[[], str | None]


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6) -> (host, port); raises ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "0.0.0.0", int(port)


class HttpServer(ThreadedServer):
    """One aiohttp server on ``listen`` (``host:port``), TLS when a certificate is given."""

    def __init__(
        self,
        listen: str,
        *,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        client_max_size: int = 1024**2,
    ) -> None:
        self.host, self.port = parse_listen(listen)
        self._tls = self._tls_context(tls_cert, tls_key)
        self._client_max_size = client_max_size
        self._routes: dict[tuple[str, str], Handler] = {}
        self._checks: dict[str, Check] = {}
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None

    @staticmethod
    def _tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            raise ConfigurationError(
                "OPSROOM_HTTP_TLS_CERT and OPSROOM_HTTP_TLS_KEY go together: set both or neither"
            )
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"OPSROOM_HTTP_TLS_CERT/KEY: cannot load {cert} and {key}: {exc}"
            ) from None
        return context

    @property
    def scheme(self) -> str:
        return "https" if self._tls else "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    # --- what it serves -----------------------------------------------------------------
    def mount(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method path`` with ``handler`` (replacing any handler there)."""
        with self._lock:
            self._routes[(method.upper(), path)] = handler

    def unmount(self, method: str, path: str) -> None:
        with self._lock:
            self._routes.pop((method.upper(), path), None)

    def add_check(self, name: str, check: Check) -> None:
        """A readiness check shown by ``/readyz`` under ``name``."""
        with self._lock:
            self._checks[name] = check

    def remove_check(self, name: str) -> None:
        with self._lock:
            self._checks.pop(name, None)

    def readiness(self) -> dict[str, str]:
        """Each check's state: ``ok`` or why not."""
        with self._lock:
            checks = dict(self._checks)
        states = {}
        for name, check in sorted(checks.items()):
            try:
                problem = check()
            except Exception as exc:  # a check that breaks is a failing check
                log.exception("readiness check %s failed", name)
                problem = f"check failed: {type(exc).__name__}"
            states[name] = problem or "ok"
        return states

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/healthz" and request.method in ("GET", "HEAD"):
            return web.Response(text="ok\n")
        if request.path == "/readyz" and request.method in ("GET", "HEAD"):
            states = await asyncio.get_running_loop().run_in_executor(None, self.readiness)
            ready = all(state == "ok" for state in states.values())
            body = json.dumps({"ready": ready, "checks": states}, indent=1) + "\n"
            return web.Response(
                text=body, status=200 if ready else 503, content_type="application/json"
            )
        with self._lock:
            handler = self._routes.get((request.method, request.path))
            known_path = any(path == request.path for _, path in self._routes)
        if handler is None:
            if known_path:
                raise web.HTTPMethodNotAllowed(request.method, self._methods(request.path))
            raise web.HTTPNotFound(text="not found\n")
        return await handler(request)

    def _methods(self, path: str) -> list[str]:
        with self._lock:
            return sorted(method for method, p in self._routes if p == path)

    # --- lifecycle -------------------------------------------------------------------------
    thread_name = "opsroom-http"

    def start(self) -> str:
        """Listen (raising ConfigurationError when the address cannot be bound) and serve
        in a background thread until :meth:`stop`."""
        try:
            url = super().start()
        except OSError as exc:
            raise ConfigurationError(
                f"OPSROOM_HTTP_LISTEN: cannot listen on {self.host}:{self.port}: "
                f"{exc.strerror or exc}"
            ) from None
        log.info("HTTP server listening on %s", url)
        return url

    async def _serve(self) -> None:
        app = web.Application(client_max_size=self._client_max_size)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=self._tls, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if self.port == 0:  # a free port was asked for: say which one
            self.port = int(runner.addresses[0][1])

    async def _shutdown(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            try:
                await runner.cleanup()
            except Exception:  # the bot is stopping: say so, do not stop the stop
                log.exception("HTTP server did not stop cleanly")
