"""The Mattermost intake: every post handled exactly once, whether live or caught up over REST.

Chat-framework-free: the intake decides what each post is and hands it to an
:class:`IntakeHandler` (the Errbot backend implements one)::

    websocket thread ──events, catch-up requests──> Dispatcher ──> its thread: Intake
                                                          │ ignore own, system, bot posts
                                                          │ claim the post in the ledger
                                                          │ too old? handler.stale_command
                                                          ▼
                                                 handler.post_received(post)

* **Exactly once.** A post is claimed in the :class:`~bot.mattermost.ledger.Ledger` before it is
  handed over; a post claimed before (replayed by the server, found again by a catch-up, seen
  again after a restart) is dropped.
* **Stale commands.** A command older than ``max_command_age`` is claimed and answered with
  :func:`~bot.mattermost.inbound.stale_notice` instead of being run.
* **Catch-up (backfill).** On a catch-up request (first connection, a new ``connection_id``, a
  gap in ``seq``) every served channel is read over REST from its watermark (newest post
  handled there) or, for a channel with nothing handled yet, from two beat intervals before the
  bot was last known connected and caught up; never further back than ``backfill_window``.
* **"Last seen" only moves while connected and caught up**: after the current connection's
  ``hello`` (which comes after its replay or catch-up) and before it drops. Otherwise a later
  catch-up of a quiet channel would start after posts it never saw.

Time comes from an injected :class:`Clock`, so all of this is testable without waiting.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bot.mattermost.directory import Directory, UnknownIdentifier
from bot.mattermost.inbound import (
    InboundPolicy,
    decode_json_field,
    ignore_reason,
    is_command,
    normalize_command,
    stale_notice,
)
from bot.mattermost.ledger import Ledger

log = logging.getLogger(__name__)

LAST_SEEN = "last_seen_ms"  # ledger state: when the bot was last connected and caught up


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (Mattermost's ``create_at`` is in ms of it)."""
        ...

    def monotonic(self) -> float:
        """Seconds for measuring intervals."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class PostHistory(Protocol):
    """Where a catch-up reads from (:class:`~bot.mattermost.rest.MattermostREST`)."""

    def posts_since(self, channel_id: str, since_ms: int) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class IntakeLimits:
    """Seconds: older commands are refused; a catch-up never reads further back than the
    window; "last seen" is written every beat interval (the websocket ping interval)."""

    max_command_age: float
    backfill_window: float
    beat_interval: float


@dataclass(frozen=True)
class IncomingPost:
    """A post to hand over: claimed, in a served channel, text normalised for commands."""

    post: dict[str, Any]
    channel: dict[str, Any]
    text: str  # ``@bot cmd`` rewritten to ``<prefix>cmd``
    source: str  # "live" or "backfill"
    age: float  # seconds since it was posted
    mentions: tuple[str, ...] = ()  # ids of other users it mentions (not the bot)

    @property
    def id(self) -> str:
        return self.post["id"]

    @property
    def user_id(self) -> str:
        return self.post["user_id"]

    @property
    def direct(self) -> bool:
        return self.channel.get("type") == "D"


class IntakeHandler(Protocol):
    """What the intake hands over to (the chat framework)."""

    def post_received(self, post: IncomingPost) -> None:
        """A new post: a command to run or a message to show plugins."""

    def stale_command(self, post: IncomingPost, notice: str) -> None:
        """A command found too late to run safely: answer ``notice`` in its place."""

    def reaction_added(self, reaction: dict[str, Any], channel_id: str) -> None:
        """Someone other than the bot reacted to a post."""

    def membership_changed(
        self, channel_id: str, user_id: str, joined: bool, remover_id: str
    ) -> None:
        """A user (maybe the bot itself) joined or left a channel."""


class Intake:
    """What each post is, and handing it over once. Not thread-safe by itself: its methods
    run on one thread (the :class:`Dispatcher`'s) in event order, except
    :meth:`set_live` and :meth:`beat`."""

    def __init__(
        self,
        *,
        directory: Directory,
        history: PostHistory,
        ledger: Ledger,
        policy: InboundPolicy,
        handler: IntakeHandler,
        limits: IntakeLimits,
        clock: Clock | None = None,
        on_beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.directory = directory
        self.history = history
        self.ledger = ledger
        self.policy = policy
        self.handler = handler
        self.limits = limits
        self.clock: Clock = clock or SystemClock()
        self._on_beat = on_beat
        self._beat_lock = threading.Lock()
        self.last_beat = float("-inf")  # clock.monotonic() of the last recorded beat
        # The open connection, set at once when it opens or drops (None while down), and, in
        # event order, the connection events come from and the one whose hello was handled.
        self._live: int | None = None
        self._receiving: int | None = None
        self._synced: int | None = None

    # --- connection state ------------------------------------------------------------------
    def set_live(self, connection: int | None) -> None:
        """The websocket connection ``connection`` just opened (None: it dropped)."""
        self._live = connection

    def opened(self, connection: int) -> None:
        """In event order: the events that follow come from ``connection``."""
        self._receiving = connection

    def closed(self) -> None:
        """In event order: the connection the events came from has dropped."""
        self._receiving = self._synced = None

    @property
    def in_sync(self) -> bool:
        """Connected, and caught up on this connection: "last seen" may move."""
        return self._synced is not None and self._synced == self._live

    def beat(self) -> None:
        """Record "last seen" (and call ``on_beat``) if connected and caught up."""
        with self._beat_lock:
            if not self.in_sync:
                return
            self.last_beat = self.clock.monotonic()
            self._on_beat()
            self.ledger.set_state(LAST_SEEN, str(int(self.clock.time() * 1000)))

    # --- events ----------------------------------------------------------------------------
    def handle_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        data = event.get("data") or {}
        broadcast = event.get("broadcast") or {}
        if kind == "hello":
            # Comes after the replay or the catch-up that this connection needed.
            self._synced = self._receiving
            self.beat()
        elif kind == "posted":
            post = decode_json_field(data.get("post"))
            if isinstance(post, dict):
                mentions = decode_json_field(data.get("mentions")) or []
                self.handle_post(post, source="live", mentions=mentions)
        elif kind == "reaction_added":
            reaction = decode_json_field(data.get("reaction"))
            if isinstance(reaction, dict) and reaction.get("user_id") != self.policy.bot_user_id:
                self.handler.reaction_added(reaction, broadcast.get("channel_id", ""))
        elif kind in ("user_added", "user_removed"):
            channel_id = data.get("channel_id") or broadcast.get("channel_id", "")
            user_id, remover_id = data.get("user_id", ""), data.get("remover_id", "")
            self._membership(channel_id, user_id, kind == "user_added", remover_id)
        elif kind in ("added_to_team", "leave_team"):
            if data.get("user_id") == self.policy.bot_user_id:
                self.directory.refresh_teams()
        elif kind == "post_edited":
            # Edited commands are never run again: the original was handled exactly once.
            log.debug("post edited: %s", str(data.get("post", ""))[:80])

    def _membership(self, channel_id: str, user_id: str, joined: bool, remover_id: str) -> None:
        if not channel_id:
            return
        if user_id == self.policy.bot_user_id:
            self.directory.forget_channel(channel_id)
        self.handler.membership_changed(channel_id, user_id, joined, remover_id)

    def handle_post(
        self, post: dict[str, Any], source: str, mentions: list[str] | tuple[str, ...] = ()
    ) -> bool:
        """Hand a post over unless it must be ignored or was handled before.

        Returns True when the post was new (claimed now).
        """
        reason = ignore_reason(post, self.policy)
        if reason:
            log.debug("ignoring post %s: %s", post.get("id"), reason)
            return False
        try:
            channel = self.directory.channel(post["channel_id"])
        except UnknownIdentifier:
            log.warning("post %s in a channel the bot cannot see", post.get("id"))
            return False
        if not self.directory.serves_team(channel.get("team_id", "")):
            return False
        create_at = post.get("create_at", 0)
        text = normalize_command(post.get("message", ""), self.policy)
        age = self.clock.time() - create_at / 1000
        command = is_command(text, self.policy, channel.get("type") == "D")
        stale = command and age > self.limits.max_command_age
        outcome = "stale" if stale else ("command" if command else "message")
        if not self.ledger.claim(post["id"], channel["id"], create_at, outcome):
            log.debug("post %s already handled; not running it again", post["id"])
            return False
        others = tuple(m for m in mentions if m != self.policy.bot_user_id)
        incoming = IncomingPost(post, channel, text, source, age, others)
        try:
            if stale:
                log.warning(
                    "refusing stale %s command from %s (%.0fs old)", source, post["user_id"], age
                )
                self.handler.stale_command(incoming, stale_notice(text, age))
            else:
                self.handler.post_received(incoming)
        except Exception:
            # Claimed, so it will not be retried: the safe failure is "not run".
            log.exception("post %s was claimed but could not be handled", post["id"])
        return True

    # --- catch-up --------------------------------------------------------------------------
    def backfill(self, reason: str) -> int:
        """Fetch over REST what the websocket did not deliver, and handle it once.

        Reading a little too much is harmless: the ledger claim drops what was handled. On the
        very first start there is nothing to catch up with; old history is left alone.
        Returns the number of posts handled now.
        """
        now_ms = int(self.clock.time() * 1000)
        floor = now_ms - int(self.limits.backfill_window * 1000)
        last_seen = self.ledger.get_state(LAST_SEEN)
        # Events received just before "last seen" may not have been handled yet; "last seen"
        # is written every beat interval, so two intervals cover them.
        margin_ms = 2 * int(self.limits.beat_interval * 1000)
        found = 0
        for channel in self.directory.my_channels():
            if not self.directory.serves_team(channel.get("team_id", "")):
                continue
            since = self.ledger.watermark(channel["id"])
            if since is None:
                if not last_seen:
                    continue
                since = int(last_seen) - margin_ms
            since = max(since, floor)
            if channel.get("last_post_at", now_ms) < since:
                continue
            page = self.history.posts_since(channel["id"], since)
            for post in sorted(page, key=lambda p: (p.get("create_at", 0), p.get("id", ""))):
                if post.get("create_at", 0) >= since:
                    found += self.handle_post(post, source="backfill")
        self.beat()
        log.info("caught up after %s: %d missed post(s) found over REST", reason, found)
        if not last_seen:
            self.ledger.set_state(LAST_SEEN, str(now_ms))
        return found


class Dispatcher:
    """The intake's thread: takes events, catch-up requests and connection changes from the
    websocket thread (its methods only queue) and runs them on the intake in order, beating
    every ``beat_interval`` meanwhile."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake
        self._inbox: queue.Queue[tuple[Callable[[Any], Any], Any] | None] = queue.Queue()
        self._connections = 0
        self._thread = threading.Thread(
            target=self._dispatch_forever, name="mattermost-dispatcher", daemon=True
        )

    # --- called from the websocket thread --------------------------------------------------
    def submit_event(self, event: dict[str, Any]) -> None:
        self._inbox.put((self.intake.handle_event, event))

    def request_backfill(self, reason: str) -> None:
        self._inbox.put((self.intake.backfill, reason))

    def connection_changed(self, up: bool) -> None:
        if up:
            self._connections += 1
            self.intake.set_live(self._connections)
            self._inbox.put((self.intake.opened, self._connections))
        else:
            self.intake.set_live(None)
            self._inbox.put((self._closed, None))

    def _closed(self, _: None) -> None:
        self.intake.closed()

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Handle what is queued, then end the thread."""
        if self._thread.is_alive():
            self._inbox.put(None)
            self._thread.join(timeout)

    def _dispatch_forever(self) -> None:
        interval = self.intake.limits.beat_interval
        while True:
            try:
                item = self._inbox.get(timeout=interval)
            except queue.Empty:
                self.intake.beat()
                continue
            if item is None:
                return
            handle, payload = item
            try:
                handle(payload)
            except Exception:
                log.exception("failed to handle %s", getattr(handle, "__name__", "an event"))
            if self.intake.clock.monotonic() - self.intake.last_beat >= interval:
                self.intake.beat()
