"""Connectors: thin, typed, chat-free clients for the systems actions act on.

Every error a connector raises on purpose is a :class:`ConnectorError`, itself a
:class:`bot.errors.ActionFailed`: an action that lets one escape fails with that one line
as its outcome (no traceback), because the message already says what went wrong and where.
"""

from bot.errors import ActionFailed


class ConnectorError(ActionFailed):
    """A connector could not do what was asked; ``host`` names the system it talked to."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(message)
        self.host = host


__all__ = ["ConnectorError"]
