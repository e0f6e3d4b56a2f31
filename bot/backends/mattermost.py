"""Errbot backend for Mattermost: every team, every command exactly once, nothing dropped.

Data path (see docs/architecture.md)::

    websocket thread ──events──> inbox queue ──> dispatcher thread ──> Errbot (worker pool)
         (EventStream)                         (ledger claim, backfill)        │
                                                                              replies
    Mattermost REST <── outbox workers (ordered per channel, retried) <────────┘

The websocket thread only parses and sequences frames; the single dispatcher thread decides
what each post is (own post, bot, stale, command) and claims it in the ledger before Errbot
sees it, so replayed and backfilled posts are never run twice. Replies go through the outbox.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import requests
from errbot.backends.base import (
    ONLINE,
    Card,
    Identifier,
    Message,
    Reaction,
    RoomOccupant,
    Stream,
)
from errbot.core import ErrBot

from bot.backends.dispatch import NonDrainingDispatch
from bot.mattermost import heartbeat
from bot.mattermost.directory import Directory, UnknownIdentifier, looks_like_id
from bot.mattermost.events import Backoff, EventStream
from bot.mattermost.identifiers import (
    MattermostPerson,
    MattermostRoom,
    MattermostRoomOccupant,
    bind_directory,
)
from bot.mattermost.inbound import (
    InboundPolicy,
    decode_json_field,
    ignore_reason,
    is_command,
    normalize_command,
    stale_notice,
)
from bot.mattermost.ledger import Ledger
from bot.mattermost.outbox import Outbox
from bot.mattermost.poster import Poster, attachment
from bot.mattermost.rest import MattermostREST, status_of
from bot.redaction import Redactor
from bot.settings import Settings, get_settings

log = logging.getLogger(__name__)

EXIT_UNAUTHORIZED = 3
_STOP = object()


class MattermostBackend(NonDrainingDispatch, ErrBot):
    """The Errbot backend; configuration comes from :class:`bot.settings.Settings`."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.settings: Settings = getattr(config, "OPSROOM_SETTINGS", None) or get_settings()
        self.exit_code = 0
        self.data_dir = Path(self.settings.opsroom_data_dir)
        self.rest = MattermostREST(self.settings.driver_options())
        self.directory = Directory(self.rest, self.settings.mattermost_teams)
        bind_directory(self.directory)
        self.ledger = Ledger(self.data_dir / "mattermost-ledger.sqlite3")
        self.outbox: Outbox | None = None
        self._poster: Poster | None = None
        self.stream: EventStream | None = None
        self.policy: InboundPolicy | None = None
        self.bot_identifier: MattermostPerson | None = None
        self._inbox: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._auth_suspect = threading.Event()
        # True while connected and caught up: only then may "last seen" move forward, or a
        # later catch-up would start after posts it never saw.
        self._in_sync = False
        self._last_beat = 0.0
        self._dispatcher = threading.Thread(
            target=self._dispatch_forever, name="mattermost-dispatcher", daemon=True
        )

    # ===================================================================== lifecycle =====
    @property
    def mode(self) -> str:
        return "mattermost"

    def serve_forever(self) -> None:
        try:
            if not self._login():
                return
            self.outbox = Outbox(
                workers=self.settings.opsroom_post_workers, on_unauthorized=self._suspect_token
            )
            self._poster = Poster(
                self.rest, self.outbox, scrub=Redactor(self.settings.secrets).scrub
            )
            self.connect_callback()
            self._dispatcher.start()
            self.stream = self._make_stream()
            self.stream.start()
            self._wait_for_stop()
        except KeyboardInterrupt:
            log.info("interrupted; shutting down")
        finally:
            self._shutdown_cleanly()

    def _login(self) -> bool:
        """Check the token and learn who and where the bot is, retrying while the server is
        unreachable or failing. False: the token was rejected or a stop was requested."""
        backoff = Backoff(base=1.0, cap=self.settings.opsroom_reconnect_max_delay.total_seconds())
        while not self._stop.is_set():
            try:
                self._learn_identity()
                return True
            except requests.RequestException as exc:
                if status_of(exc) == 401:
                    self._fatal_unauthorized()
                    return False
                delay = backoff.next_delay()
                log.warning("Mattermost not reachable (%s); retrying in %.1fs", exc, delay)
                self._stop.wait(delay)
        return False

    def _learn_identity(self) -> None:
        me = self.directory.remember_user(self.rest.login())
        log.info("logged in to Mattermost as @%s (%s)", me["username"], me["id"])
        self.bot_identifier = MattermostPerson(self.directory, me["id"], me["username"])
        self.policy = InboundPolicy(
            bot_user_id=me["id"],
            bot_username=me["username"],
            prefix=self.bot_config.BOT_PREFIX,
            answer_bots=self.settings.opsroom_answer_bots,
            answer_webhooks=self.settings.opsroom_answer_webhooks,
        )
        missing = self.directory.refresh_teams()
        if missing:
            log.error("MATTERMOST_TEAMS: the bot is not a member of %s", ", ".join(missing))
        names = ", ".join(t["name"] for t in self.directory.teams.values()) or "none"
        log.info("serving teams: %s (plus direct and group messages)", names)
        admins, unknown = self.directory.resolve_users(self.settings.opsroom_admins)
        if unknown:
            log.error("OPSROOM_ADMINS: unknown users %s", ", ".join(unknown))
        # Errbot compares BOT_ADMINS with ``aclattr``: the immutable user id.
        self.bot_config.BOT_ADMINS = tuple(admins)

    def _make_stream(self) -> EventStream:
        options = self.settings.driver_options()
        scheme = "wss" if options["scheme"] == "https" else "ws"
        url = f"{scheme}://{options['url']}:{options['port']}{options['basepath']}/websocket"
        context = None
        if scheme == "wss":
            context = ssl.create_default_context(cafile=self.settings.mattermost_ca_file)
            if not self.settings.mattermost_verify_tls:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return EventStream(
            url,
            self.settings.token,
            on_event=lambda event: self._inbox.put(("event", event)),
            on_resync=lambda reason: self._inbox.put(("resync", reason)),
            on_unauthorized=self._suspect_token,
            on_connection_change=self._connection_changed,
            ping_interval=self.settings.opsroom_ws_ping_interval.total_seconds(),
            max_delay=self.settings.opsroom_reconnect_max_delay.total_seconds(),
            ssl_context=context,
        )

    def _wait_for_stop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._auth_suspect.is_set():
                self._auth_suspect.clear()
                self._check_token()

    def _suspect_token(self) -> None:
        """A 401 was seen somewhere: let the main thread check the token once."""
        self._auth_suspect.set()
        self._wake.set()

    def _check_token(self) -> None:
        try:
            self.rest.login()
        except requests.RequestException as exc:
            if status_of(exc) == 401:
                self._fatal_unauthorized()
            else:
                log.warning("could not verify the token (%s); carrying on", exc)

    def _fatal_unauthorized(self) -> None:
        log.critical(
            "Mattermost rejected the token (401): it is invalid or was revoked. "
            "Create a new personal access token for the bot account and restart."
        )
        self.exit_code = EXIT_UNAUTHORIZED
        self.stop_serving()

    def stop_serving(self) -> None:
        """Ask :meth:`serve_forever` to return (thread-safe)."""
        self._stop.set()
        self._wake.set()

    def _connection_changed(self, up: bool) -> None:
        if not up:
            self._in_sync = False

    def _shutdown_cleanly(self) -> None:
        """Stop taking commands, let running ones finish and their replies go out."""
        self._beat()
        if self.stream:
            self.stream.stop()
        if self._dispatcher.is_alive():
            self._inbox.put((_STOP, None))
            self._dispatcher.join(timeout=10)
        self._finish_running_commands(timeout=15)
        if self.plugin_manager:
            self.disconnect_callback()
        if self.outbox:
            self.outbox.close(timeout=15)
        self.ledger.close()
        heartbeat.clear(self.data_dir)
        if self.plugin_manager:
            self.shutdown()

    def _finish_running_commands(self, timeout: float) -> None:
        if not self.thread_pool.shutdown(timeout):
            log.warning("commands still running after %.0fs; shutting down anyway", timeout)

    # ==================================================================== dispatcher =====
    def _dispatch_forever(self) -> None:
        interval = self.settings.opsroom_ws_ping_interval.total_seconds()
        while True:
            try:
                kind, payload = self._inbox.get(timeout=interval)
            except queue.Empty:
                self._beat()
                continue
            if kind is _STOP:
                return
            try:
                if kind == "resync":
                    self._backfill(payload)
                else:
                    self._handle_event(payload)
            except Exception:
                log.exception("failed to handle %s", kind)
            self._beat_if_due(interval)

    def _beat_if_due(self, interval: float) -> None:
        if time.monotonic() - self._last_beat >= interval:
            self._beat()

    def _beat(self) -> None:
        if not self._in_sync:
            return
        self._last_beat = time.monotonic()
        heartbeat.beat(self.data_dir)
        self.ledger.set_state("last_seen_ms", str(int(time.time() * 1000)))

    def _handle_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        data = event.get("data") or {}
        broadcast = event.get("broadcast") or {}
        if kind == "hello":
            # Comes after the replay or the catch-up that this connection needed.
            self._in_sync = True
            self._beat()
        elif kind == "posted":
            post = decode_json_field(data.get("post"))
            if isinstance(post, dict):
                mentions = decode_json_field(data.get("mentions")) or []
                self._handle_post(post, source="live", mentions=mentions)
        elif kind == "reaction_added":
            reaction = decode_json_field(data.get("reaction"))
            self._handle_reaction(reaction, broadcast.get("channel_id", ""))
        elif kind == "user_added":
            self._member_changed(broadcast.get("channel_id", ""), data.get("user_id", ""), True)
        elif kind == "user_removed":
            channel_id = data.get("channel_id") or broadcast.get("channel_id", "")
            remover = data.get("remover_id", "")
            self._member_changed(channel_id, data.get("user_id", ""), False, remover)
        elif kind in ("added_to_team", "leave_team") and data.get("user_id") == self.rest.user_id:
            self.directory.refresh_teams()
        elif kind == "post_edited":
            # Edited commands are never run again: the original was handled exactly once.
            log.debug("post edited: %s", data.get("post", "")[:80])

    def _handle_post(
        self, post: dict[str, Any], source: str, mentions: list[str] | None = None
    ) -> bool:
        """Hand a post to Errbot unless it must be ignored or was handled before.

        Returns True when the post was new (claimed now).
        """
        assert self.policy is not None
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
        direct = channel.get("type") == "D"
        text = normalize_command(post.get("message", ""), self.policy)
        age = time.time() - post.get("create_at", 0) / 1000
        command = is_command(text, self.policy, direct)
        stale = command and age > self.settings.opsroom_max_command_age.total_seconds()
        outcome = "stale" if stale else ("command" if command else "message")
        if not self.ledger.claim(post["id"], channel["id"], post.get("create_at", 0), outcome):
            log.debug("post %s already handled; not running it again", post["id"])
            return False
        msg = self._message_from_post(post, channel, text)
        if stale:
            log.warning("refusing stale %s command from %s (%.0fs old)", source, msg.frm, age)
            self.send_simple_reply(msg, stale_notice(text, age))
            return True
        self.callback_message(msg)
        others = [m for m in mentions or [] if m != self.rest.user_id]
        if others:
            self.callback_mention(msg, [MattermostPerson(self.directory, m) for m in others])
        return True

    def _message_from_post(
        self, post: dict[str, Any], channel: dict[str, Any], text: str
    ) -> Message:
        author = self.directory.user(post["user_id"])
        if channel.get("type") == "D":
            frm: Identifier = MattermostPerson(
                self.directory, author["id"], author["username"], channel_id=channel["id"]
            )
            to: Identifier = self.bot_identifier
        else:
            room = MattermostRoom(self.directory, channel["id"])
            frm = MattermostRoomOccupant(self.directory, author["id"], room, author["username"])
            to = room
        return Message(
            body=text,
            frm=frm,
            to=to,
            extras={
                "post_id": post["id"],
                "root_id": post.get("root_id", ""),
                "channel_id": channel["id"],
                "team_id": channel.get("team_id", ""),
                "create_at": post.get("create_at", 0),
            },
        )

    def _handle_reaction(self, reaction: Any, channel_id: str) -> None:
        if not isinstance(reaction, dict) or reaction.get("user_id") == self.rest.user_id:
            return
        self.callback_reaction(
            Reaction(
                reactor=MattermostPerson(self.directory, reaction["user_id"]),
                action="added",
                timestamp=str(reaction.get("create_at", "")),
                reaction_name=reaction.get("emoji_name", ""),
                reacted_to={"id": reaction.get("post_id", ""), "channel_id": channel_id},
            )
        )

    def _member_changed(
        self, channel_id: str, user_id: str, joined: bool, remover_id: str = ""
    ) -> None:
        if not channel_id:
            return
        if user_id == self.rest.user_id:
            self.directory.forget_channel(channel_id)
        room = MattermostRoom(self.directory, channel_id)
        who = None if user_id == self.rest.user_id else MattermostPerson(self.directory, user_id)
        if joined:
            self.callback_room_joined(room, who)
        else:
            remover = MattermostPerson(self.directory, remover_id) if remover_id else None
            self.callback_room_left(room, who, remover)

    def _backfill(self, reason: str) -> None:
        """Fetch over REST what the websocket did not deliver, and handle it once.

        Each channel is read from its own watermark (newest post handled there) or, for a
        channel with no handled post yet, from shortly before the bot was last known
        connected and caught up, never further back than ``OPSROOM_BACKFILL_WINDOW``.
        Reading a little too much is harmless: the ledger claim drops what was handled.
        On the very first start there is nothing to catch up with; old history is left alone.
        """
        now_ms = int(time.time() * 1000)
        floor = now_ms - int(self.settings.opsroom_backfill_window.total_seconds() * 1000)
        last_seen = self.ledger.get_state("last_seen_ms")
        ping_ms = self.settings.opsroom_ws_ping_interval.total_seconds() * 1000
        found = 0
        for channel in self.directory.my_channels():
            if not self.directory.serves_team(channel.get("team_id", "")):
                continue
            mark = self.ledger.watermark(channel["id"])
            if mark is not None:
                since = mark
            elif last_seen:
                # Events received just before "last seen" may not have been handled yet;
                # "last seen" is written every ping interval, so two intervals cover them.
                since = int(last_seen) - 2 * int(ping_ms)
            else:
                continue
            since = max(since, floor)
            if channel.get("last_post_at", now_ms) < since:
                continue
            for post in self.rest.posts_since(channel["id"], since):
                if post.get("create_at", 0) >= since:
                    found += self._handle_post(post, source="backfill")
        self._beat()
        log.info("caught up after %s: %d missed post(s) found over REST", reason, found)
        if not last_seen:
            self.ledger.set_state("last_seen_ms", str(now_ms))

    # ====================================================================== sending =====
    def build_reply(
        self, msg: Message, text: str | None = None, private: bool = False, threaded: bool = False
    ) -> Message:
        reply = self.build_message(text or "")
        reply.frm = self.bot_identifier
        reply.parent = msg
        if private:
            person = msg.frm
            reply.to = MattermostPerson(self.directory, person.userid, person.username)
            return reply
        reply.to = msg.frm.room if isinstance(msg.frm, RoomOccupant) else msg.frm
        reply.extras["root_id"] = self.thread_root(msg, threaded)
        return reply

    def thread_root(self, msg: Message, threaded: bool = False) -> str:
        """The thread to answer in: the command's thread root, or the command itself when a
        thread is wanted; Mattermost rejects a reply's id as ``root_id``."""
        extras = msg.extras or {}
        if extras.get("root_id"):
            return extras["root_id"]
        if threaded or self.settings.opsroom_reply_in_thread:
            return extras.get("post_id", "")
        return ""

    def split_and_send_message(self, msg: Message) -> None:
        # Splitting happens in send_message, where code fences are kept balanced.
        self.send_message(msg)

    def send_message(self, msg: Message) -> None:
        super().send_message(msg)
        channel_id = self.channel_id_for(msg.to)
        self.post(channel_id, msg.body, root_id=self._reply_root(msg, channel_id))

    def _reply_root(self, msg: Message, channel_id: str) -> str:
        """Thread root for a message Errbot sends: its own, or, when it answers a message in
        the same channel, that message's thread."""
        root = (msg.extras or {}).get("root_id")
        parent = msg.parent
        if root is None and parent is not None and parent.extras:
            same_channel = parent.extras.get("channel_id") == channel_id
            root = self.thread_root(parent) if same_channel else ""
        return root or ""

    @property
    def poster(self) -> Poster:
        """The posting API (posts, edits, reactions, uploads); exists once connected."""
        if self._poster is None:
            raise RuntimeError("the Mattermost backend is not connected yet")
        return self._poster

    def post(self, to: Identifier | str, text: str, **options: Any) -> list[Future]:
        """Post to a room, a person (their direct channel) or a channel id; see
        :meth:`Poster.post` for the options."""
        return self.poster.post(self.channel_id_for(to), text, **options)

    def upload(self, to: Identifier | str, filename: str, content: bytes, **options: Any) -> Future:
        """Post a file to a room, a person or a channel id; see :meth:`Poster.upload`."""
        return self.poster.upload(self.channel_id_for(to), filename, content, **options)

    def send_stream_request(
        self,
        user: Identifier,
        fsource: Any,
        name: str | None = None,
        size: int | None = None,
        stream_type: str | None = None,
    ) -> Stream:
        """Errbot's file API: upload ``fsource`` to the user's or room's channel."""
        stream = Stream(user, fsource, name, size, stream_type)
        stream.accept()
        future = self.upload(user, name or "file", fsource.read())

        def finished(done: Future) -> None:
            error = done.exception()
            if error is None:
                stream.success()
            else:
                stream.error(str(error))

        future.add_done_callback(finished)
        return stream

    def send_card(self, card: Card) -> None:
        """Errbot cards as Mattermost message attachments (colour, title, fields, image)."""
        channel_id = self.channel_id_for(card.to)
        card_attachment = attachment(
            title=card.title or "",
            text=card.body or "",
            color=card.color or "",
            link=card.link or "",
            image=card.image or "",
            thumbnail=card.thumbnail or "",
            fields=card.fields or (),
            fallback=card.summary or "",
        )
        self.post(
            channel_id,
            card.summary or "",
            props={"attachments": [card_attachment]},
            root_id=self._reply_root(card, channel_id),
        )

    def channel_id_for(self, to: Identifier | str) -> str:
        """Channel id for a room, a person (their direct channel) or a channel id string."""
        if isinstance(to, str):
            return to if looks_like_id(to) else self.channel_id_for(self.build_identifier(to))
        if isinstance(to, MattermostRoom):
            return to.channel_id
        if isinstance(to, MattermostRoomOccupant):
            return to.room.channel_id
        if isinstance(to, MattermostPerson):
            return to.channel_id or self.directory.direct_channel_id(to.userid)
        raise ValueError(f"cannot send to {to!r}")

    # ================================================================== identifiers =====
    def build_identifier(self, text: str) -> Identifier:
        """``@user``, ``~channel``, ``team/channel``, ``~team/channel`` or a 26-char id."""
        text = text.strip()
        if text.startswith("@"):
            user = self.directory.user_by_name(text)
            return MattermostPerson(self.directory, user["id"], user["username"])
        if text.startswith("~") or "/" in text:
            return MattermostRoom(self.directory, self.directory.channel_by_name(text)["id"])
        if looks_like_id(text):
            try:
                user = self.directory.user(text)
                return MattermostPerson(self.directory, user["id"], user["username"])
            except UnknownIdentifier:
                return MattermostRoom(self.directory, self.directory.channel(text)["id"])
        raise UnknownIdentifier(
            f"cannot tell who or what {text!r} is: use @user, ~channel, team/channel or an id"
        )

    def query_room(self, room: str) -> MattermostRoom:
        """A channel by id, ``~name``, ``name``, ``team/name`` or ``~team/name``."""
        room = room.strip()
        if looks_like_id(room):
            return MattermostRoom(self.directory, self.directory.channel(room)["id"])
        return MattermostRoom(self.directory, self.directory.channel_by_name(room)["id"])

    def rooms(self) -> list[MattermostRoom]:
        return [
            MattermostRoom(self.directory, c["id"])
            for c in self.directory.my_channels()
            if c.get("type") in ("O", "P", "G")
        ]

    def prefix_groupchat_reply(self, message: Message, identifier: Identifier) -> None:
        super().prefix_groupchat_reply(message, identifier)
        message.body = f"{identifier.person} {message.body}"

    def change_presence(self, status: str = ONLINE, message: str = "") -> None:
        log.debug("presence changes are not supported on Mattermost bots")

    def is_from_self(self, msg: Message) -> bool:
        frm = msg.frm
        return isinstance(frm, MattermostPerson) and frm.userid == self.rest.user_id
