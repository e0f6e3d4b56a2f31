"""``!echo``, ``!ping`` and ``!version``: is the bot alive, how far behind, what runs here."""

from __future__ import annotations

import time
from importlib.metadata import version

from errbot import BotPlugin, botcmd


class Opsroom(BotPlugin):
    """Liveness and version of this Opsroom instance."""

    @botcmd
    def echo(self, msg, args):
        """Repeat the text given: a quick check of the round trip through the bot."""
        return args or "(nothing to echo)"

    @botcmd
    def ping(self, msg, args):
        """Answer pong, with how long the command took to reach the bot."""
        created_ms = (msg.extras or {}).get("create_at")
        if not created_ms:
            return "pong"
        lag_ms = max(0, int(time.time() * 1000 - created_ms))
        return f"pong (your command reached me after {lag_ms} ms)"

    def activate(self) -> None:
        super().activate()
        self._started = time.monotonic()

    @botcmd
    def version(self, msg, args):
        """Show the Opsroom version, the chat backend in use and the uptime."""
        minutes = int(time.monotonic() - self._started) // 60
        return (
            f"Opsroom {version('opsroom')} on the {self._bot.mode} backend, "
            f"up {minutes // 60}h {minutes % 60}m"
        )
