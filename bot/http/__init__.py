"""The bot's one HTTP server: alert receivers, ``/healthz`` and ``/readyz``."""

from bot.http.server import Check, Handler, HttpServer, parse_listen

__all__ = ["Check", "Handler", "HttpServer", "parse_listen"]
