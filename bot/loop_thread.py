"""An asyncio server on an event loop of its own, in a daemon thread.

The bot's HTTP server and the fake servers tests run (Mattermost, Kubernetes, Jenkins) are
aiohttp applications that the rest of the process, which is threaded, starts and stops.
:class:`ThreadedServer` holds that lifecycle once: a subclass defines ``_serve()`` (bind and
start serving; may raise, and the loop is then torn down again), ``_shutdown()`` (close
what ``_serve`` opened) and ``url``.
"""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import Any, Self, TypeVar

T = TypeVar("T")
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0


class ThreadedServer(ABC):
    """Start, stop (and start again) a server whose work runs on its own event loop."""

    thread_name = "server"
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @property
    @abstractmethod
    def url(self) -> str:
        """Where the server answers, once started."""

    @abstractmethod
    async def _serve(self) -> None:
        """Bind and start serving (on the loop); raise if that cannot be done."""

    @abstractmethod
    async def _shutdown(self) -> None:
        """Close what ``_serve`` opened (on the loop)."""

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> str:
        """Serve in a background thread (again after :meth:`stop`); returns the URL."""
        if self._thread is not None:
            return self.url
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=self.thread_name, daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._serve(), loop).result(START_TIMEOUT_SECONDS)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_TIMEOUT_SECONDS)
            loop.close()
            raise
        self._loop, self._thread = loop, thread
        return self.url

    def stop(self) -> None:
        """Run ``_shutdown`` on the loop, then end the loop and its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(STOP_TIMEOUT_SECONDS)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_TIMEOUT_SECONDS)
            loop.close()
            self._loop = self._thread = None

    def on_loop(self, coro: Coroutine[Any, Any, T], timeout: float = STOP_TIMEOUT_SECONDS) -> T:
        """Run ``coro`` on the server's loop from another thread and return its result."""
        if self._loop is None:
            raise RuntimeError(f"{self.thread_name} is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
