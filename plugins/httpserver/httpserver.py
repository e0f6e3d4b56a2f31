"""Starts and stops the bot's one HTTP server (:mod:`bot.http`) with the bot.

``/healthz`` answers while the process serves; ``/readyz`` checks that the Mattermost
session is up (the heartbeat the backend writes while connected is fresh; always true on the
terminal) and that the data directory is writable. Other plugins mount their handlers on
``self.get_plugin("HttpServer").server`` (declare ``DependsOn = HttpServer``).

It also serves ``opsroom do`` (:mod:`bot.operator_api`): at each start it writes a fresh
operator token and the address it bound (``operator.token``, ``http.address``) to the data
directory, and removes both when it stops.
"""

from __future__ import annotations

from errbot import BotPlugin

from bot.http import HttpServer
from bot.mattermost.heartbeat import heartbeat_age
from bot.operator_api import ADDRESS_FILE, PATH, TOKEN_FILE, OperatorEndpoint, new_token
from bot.preflight import data_dir_problem
from bot.settings import get_settings


class HttpServerPlugin(BotPlugin):  # type: ignore[misc]
    """The bot's HTTP server (OPSROOM_HTTP_LISTEN): health, readiness and alert receivers."""

    server: HttpServer | None = None

    def activate(self) -> None:
        super().activate()
        settings = get_settings()
        if not settings.opsroom_http_listen:
            self.log.info("OPSROOM_HTTP_LISTEN is empty: no HTTP server")
            return
        server = HttpServer(
            settings.opsroom_http_listen,
            tls_cert=settings.opsroom_http_tls_cert,
            tls_key=settings.opsroom_http_tls_key,
        )
        server.add_check("chat", self._chat_problem)
        server.add_check("data directory", lambda: data_dir_problem(settings.opsroom_data_dir))
        data_dir = settings.opsroom_data_dir
        endpoint = OperatorEndpoint(self._bot, new_token(data_dir))
        server.mount("POST", PATH, endpoint.handle)
        server.start()  # an address that cannot be bound stops the bot (ConfigurationError)
        (data_dir / ADDRESS_FILE).write_text(server.url + "\n", encoding="utf-8")
        self.server = server

    def deactivate(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
            data_dir = get_settings().opsroom_data_dir
            for name in (TOKEN_FILE, ADDRESS_FILE):
                (data_dir / name).unlink(missing_ok=True)
        super().deactivate()

    def _chat_problem(self) -> str | None:
        if self._bot.mode != "mattermost":
            return None
        settings = get_settings()
        age = heartbeat_age(settings.opsroom_data_dir)
        limit = 3 * settings.opsroom_ws_ping_interval.total_seconds()
        if age is None:
            return "not connected to Mattermost yet"
        if age > limit:
            return f"Mattermost session down: last heartbeat {age:.0f}s ago"
        return None
