"""Errbot's command pool, without the drain before admin-only commands.

Errbot runs commands on a ``multiprocessing`` ThreadPool and, before every admin-only
command, closes it, waits on the receiving thread for every running command to finish and
builds a new one (errbot#1187): one slow command then freezes the whole bot. Our backends
keep a :class:`CommandPool` instead, whose ``close``/``join`` do not wait, so intake never
stops. Long work does not belong on this pool at all: actions run as jobs on the runtime's
own executor, so commands here only parse, check and acknowledge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)


class _Result:
    """What Errbot gets back from ``apply_async``; it waits on it after admin commands."""

    def __init__(self, future: Future) -> None:
        self._future = future

    def wait(self, timeout: float | None = None) -> None:
        # Errbot waits here, on the receiving thread, for an admin command to end. Not
        # waiting keeps the bot answering while it runs.
        return None


class CommandPool:
    """A thread pool with the interface Errbot uses, minus the drain."""

    def __init__(self, workers: int) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="errbot-command")

    def apply_async(
        self, func: Callable[..., Any], args: Any = (), kwds: dict[str, Any] | None = None
    ) -> _Result:
        future = self._executor.submit(func, *args, **(kwds or {}))
        future.add_done_callback(_log_crash)
        return _Result(future)

    def close(self) -> None:
        """Errbot calls this before admin commands; the pool stays open."""

    def join(self) -> None:
        """Errbot calls this before admin commands; nothing is waited for."""

    def shutdown(self, timeout: float) -> bool:
        """Stop taking commands and wait up to ``timeout`` s for running ones; True if done."""
        self._executor.shutdown(wait=False, cancel_futures=False)
        threads = list(getattr(self._executor, "_threads", ()))
        deadline = time.monotonic() + timeout  # one deadline for all, not one per thread
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)


def _log_crash(future: Future) -> None:
    error = future.exception()
    if error is not None:
        log.error("command crashed", exc_info=error)


class NonDrainingDispatch:
    """Mixin for ErrBot subclasses: Errbot's ``thread_pool`` becomes a :class:`CommandPool`.

    ``ErrBot.__init__`` (and the drain) assign a fresh ``multiprocessing`` pool to
    ``self.thread_pool``; the setter closes that pool and keeps ours.
    """

    bot_config: Any  # set by ErrBot.__init__

    _command_pool: CommandPool | None = None

    @property
    def thread_pool(self) -> CommandPool:
        assert self._command_pool is not None
        return self._command_pool

    @thread_pool.setter
    def thread_pool(self, pool: Any) -> None:
        if self._command_pool is None:
            self._command_pool = CommandPool(self.bot_config.BOT_ASYNC_POOLSIZE)
        if pool is not self._command_pool:
            pool.close()
