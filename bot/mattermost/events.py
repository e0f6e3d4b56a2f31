"""Mattermost's event websocket, kept alive and in sequence.

:class:`EventStream` runs its own asyncio loop on a dedicated thread (so it works whatever
thread starts it, unlike ``mattermostdriver``'s websocket) and implements Mattermost's
*reliable websocket*, as the Mattermost webapp does:

* every event carries a per-connection ``seq``; the stream remembers the server's
  ``connection_id`` (from ``hello``) and the next ``seq`` it expects;
* on reconnect it sends both back (``?connection_id=…&sequence_number=…``); a server that
  still holds the missed events replays them and answers ``hello`` with the same
  ``connection_id``;
* a ``hello`` with a new ``connection_id`` (server restarted, buffer overflowed, resume
  window passed), or a jump in ``seq``, means events were lost: ``on_resync`` is called so the
  owner can backfill over REST. The first ``hello`` after start-up is reported the same way.

Dead connections are found with websocket pings; reconnects back off exponentially with
jitter (:mod:`bot.mattermost.backoff`). A refused handshake with HTTP 401 calls
``on_unauthorized`` and stops the stream. Handlers run on the stream's thread and must be
quick (hand work to another thread).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bot.mattermost.backoff import Backoff

log = logging.getLogger(__name__)

# Close codes after which reconnecting with the same token is pointless.
POLICY_VIOLATION = 1008


@dataclass
class StreamPosition:
    """Where the stream is in the server's event sequence."""

    connection_id: str = ""
    next_seq: int = 0


class EventStream:
    """Receive Mattermost events forever, reporting gaps; see the module docstring."""

    def __init__(
        self,
        ws_url: str,
        token: str,
        on_event: Callable[[dict[str, Any]], None],
        on_resync: Callable[[str], None],
        on_unauthorized: Callable[[], None],
        on_connection_change: Callable[[bool], None] = lambda up: None,
        ping_interval: float = 20.0,
        max_delay: float = 60.0,
        base_delay: float = 1.0,
        stable_after: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._ws_url = ws_url
        self._token = token
        self._on_event = on_event
        self._on_resync = on_resync
        self._on_unauthorized = on_unauthorized
        self._on_connection_change = on_connection_change
        self._ping_interval = ping_interval
        self._stable_after = stable_after
        self._ssl = ssl_context
        self.backoff = Backoff(base=base_delay, cap=max_delay)
        self.position = StreamPosition()
        self.connects = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="mattermost-websocket", daemon=True)
        self._started = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def stop(self, timeout: float = 5.0) -> None:
        loop, task = self._loop, self._task
        if loop and task and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._task = self._loop.create_task(self._serve())
            self._started.set()
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self._loop.close()

    # --- connection loop -------------------------------------------------------------------
    def _url(self) -> str:
        query = urlencode(
            {
                "connection_id": self.position.connection_id,
                "sequence_number": self.position.next_seq,
            }
        )
        return f"{self._ws_url}?{query}"

    async def _serve(self) -> None:
        while True:
            connected_at = None
            try:
                async with connect(
                    self._url(),
                    additional_headers={"Authorization": f"Bearer {self._token}"},
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_interval,
                    open_timeout=max(10.0, self._ping_interval),
                    close_timeout=2,
                    max_size=64 * 1024 * 1024,
                    ssl=self._ssl,
                ) as ws:
                    connected_at = time.monotonic()
                    self.connects += 1
                    self._on_connection_change(True)
                    async for raw in ws:
                        self._receive(raw)
                    log.warning("websocket closed by server: %s", ws.close_code)
                    if ws.close_code == POLICY_VIOLATION:
                        self._on_unauthorized()
            except InvalidStatus as exc:
                if exc.response.status_code == 401:
                    log.error("websocket refused: 401 (token invalid or revoked)")
                    self._on_unauthorized()
                else:
                    log.warning("websocket handshake refused: HTTP %s", exc.response.status_code)
            except (TimeoutError, OSError, websockets.WebSocketException) as exc:
                log.warning("websocket connection lost: %s", exc or type(exc).__name__)
            finally:
                if connected_at is not None:
                    self._on_connection_change(False)
            if connected_at is not None and time.monotonic() - connected_at >= self._stable_after:
                self.backoff.reset()
            delay = self.backoff.next_delay()
            log.info("reconnecting in %.1fs", delay)
            await asyncio.sleep(delay)

    # --- event sequencing ------------------------------------------------------------------
    def _receive(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            log.warning("ignoring a websocket frame that is not JSON")
            return
        if "seq_reply" in message:
            if message.get("status") != "OK":
                log.warning("websocket request %s failed: %s", message["seq_reply"], message)
            return
        event = message.get("event")
        seq = message.get("seq")
        if not event or not isinstance(seq, int):
            return
        if event == "hello":
            self._hello(message, seq)
            return
        if seq < self.position.next_seq:
            log.debug("duplicate event seq %s ignored", seq)
            return
        if seq > self.position.next_seq:
            log.warning("missed websocket events %s..%s", self.position.next_seq, seq - 1)
            self._on_resync("gap")
        self.position.next_seq = seq + 1
        self._on_event(message)

    def _hello(self, message: dict[str, Any], seq: int) -> None:
        connection_id = (message.get("data") or {}).get("connection_id", "")
        previous = self.position.connection_id
        self.position.next_seq = seq + 1
        self.position.connection_id = connection_id
        if not previous:
            self._on_resync("start")
        elif previous != connection_id:
            log.warning("websocket session could not be resumed; catching up over REST")
            self._on_resync("reconnect")
        else:
            log.info("websocket session resumed")
        self._on_event(message)
