"""Keep secret values out of log output."""

from __future__ import annotations

import logging
from collections.abc import Iterable

MASK = "[REDACTED]"


class RedactingFilter(logging.Filter):
    """Replace every configured secret value in a log record's final message.

    Filters run before formatting, so the record's message is rendered here once, scrubbed,
    and stored back with no arguments; exception text is scrubbed the same way.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        record.msg = self.scrub(record.getMessage())
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True


def install(
    secrets: Iterable[str],
    logger: logging.Logger | None = None,
    extra_handlers: Iterable[logging.Handler] = (),
) -> RedactingFilter:
    """Attach a redacting filter to every handler of ``logger`` (default: the root logger)
    and to ``extra_handlers`` (handlers not attached yet). Safe to call again: a handler
    that already redacts is left alone."""
    target = logger or logging.getLogger()
    flt = RedactingFilter(secrets)
    for handler in [*target.handlers, *extra_handlers]:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
