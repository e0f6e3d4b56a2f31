"""Errbot backend for Mattermost: lifecycle and Errbot adaptation over bot.mattermost.

Data path (see docs/architecture.md)::

    websocket thread ──events──> Dispatcher thread: Intake ──> this backend ──> Errbot
         (EventStream)           (claim, stale check, catch-up)  (IntakeHandler)   (worker pool)
                                                                                     │ replies
    Mattermost REST <── outbox workers (ordered per channel, retried) <──────────────┘

The intake (:mod:`bot.mattermost.intake`) decides what each post is and hands it over exactly
once; this module starts and stops the pieces, turns posts into Errbot messages and Errbot's
replies into posts.
"""

from __future__ import annotations

import logging
import ssl
import threading
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
from tenacity import Retrying, retry_if_exception

from bot.backends.dispatch import NonDrainingDispatch
from bot.backends.mattermost_identifiers import (
    MattermostPerson,
    MattermostRoom,
    MattermostRoomOccupant,
)
from bot.mattermost import heartbeat
from bot.mattermost.backoff import wait_jittered_exponential
from bot.mattermost.directory import Directory, looks_like_id
from bot.mattermost.events import EventStream
from bot.mattermost.identity import User, resolve, resolve_channel
from bot.mattermost.inbound import InboundPolicy
from bot.mattermost.intake import Dispatcher, IncomingPost, Intake, IntakeLimits
from bot.mattermost.ledger import Ledger
from bot.mattermost.outbox import Outbox
from bot.mattermost.poster import Poster, attachment
from bot.mattermost.rest import MattermostREST, status_of
from bot.redaction import Redactor
from bot.settings import Settings, get_settings

log = logging.getLogger(__name__)

EXIT_UNAUTHORIZED = 3


def _worth_retrying_login(exc: BaseException) -> bool:
    """Network trouble and server errors, not a rejected token."""
    return isinstance(exc, requests.RequestException) and status_of(exc) != 401


class MattermostBackend(NonDrainingDispatch, ErrBot):
    """The Errbot backend; configuration comes from :class:`bot.settings.Settings`."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.settings: Settings = getattr(config, "OPSROOM_SETTINGS", None) or get_settings()
        self.exit_code = 0
        self.data_dir = Path(self.settings.opsroom_data_dir)
        self.rest = MattermostREST(self.settings.driver_options())
        self.directory = Directory(self.rest, self.settings.mattermost_teams)
        self.ledger = Ledger(self.data_dir / "mattermost-ledger.sqlite3")
        self.outbox: Outbox | None = None
        self._poster: Poster | None = None
        self.stream: EventStream | None = None
        self.intake: Intake | None = None
        self.dispatcher: Dispatcher | None = None
        self.bot_identifier: MattermostPerson | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._auth_suspect = threading.Event()

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
            self.dispatcher = Dispatcher(self._make_intake())
            self.dispatcher.start()
            self.stream = self._make_stream(self.dispatcher)
            self.stream.start()
            self._wait_for_stop()
        except KeyboardInterrupt:
            log.info("interrupted; shutting down")
        finally:
            self._shutdown_cleanly()

    def _login(self) -> bool:
        """Check the token and learn who and where the bot is, retrying while the server is
        unreachable or failing. False: the token was rejected or a stop was requested."""
        retrying = Retrying(
            retry=retry_if_exception(_worth_retrying_login),
            wait=wait_jittered_exponential(
                1.0, self.settings.opsroom_reconnect_max_delay.total_seconds()
            ),
            stop=lambda _state: self._stop.is_set(),
            sleep=self._pause,
            before_sleep=lambda state: log.warning(
                "Mattermost not reachable (%s); retrying in %.1fs",
                state.outcome.exception() if state.outcome else "?",
                state.next_action.sleep if state.next_action else 0,
            ),
            reraise=True,
        )
        try:
            retrying(self._learn_identity)
        except requests.RequestException as exc:
            if status_of(exc) == 401:
                self._fatal_unauthorized()
            return False
        return not self._stop.is_set()

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _learn_identity(self) -> None:
        me = self.directory.remember_user(self.rest.login())
        log.info("logged in to Mattermost as @%s (%s)", me["username"], me["id"])
        self.bot_identifier = MattermostPerson(self.directory, me["id"], me["username"])
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

    def _make_intake(self) -> Intake:
        assert self.bot_identifier is not None
        policy = InboundPolicy(
            bot_user_id=self.bot_identifier.userid,
            bot_username=self.bot_identifier.username,
            prefix=self.bot_config.BOT_PREFIX,
            answer_bots=self.settings.opsroom_answer_bots,
            answer_webhooks=self.settings.opsroom_answer_webhooks,
        )
        limits = IntakeLimits(
            max_command_age=self.settings.opsroom_max_command_age.total_seconds(),
            backfill_window=self.settings.opsroom_backfill_window.total_seconds(),
            beat_interval=self.settings.opsroom_ws_ping_interval.total_seconds(),
        )
        return Intake(
            directory=self.directory,
            history=self.rest,
            ledger=self.ledger,
            policy=policy,
            handler=self,
            limits=limits,
            on_beat=lambda: heartbeat.beat(self.data_dir),
        )

    def _make_stream(self, dispatcher: Dispatcher) -> EventStream:
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
            on_event=dispatcher.submit_event,
            on_resync=dispatcher.request_backfill,
            on_unauthorized=self._suspect_token,
            on_connection_change=dispatcher.connection_changed,
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

    def _shutdown_cleanly(self) -> None:
        """Stop taking commands, let running ones finish and their replies go out."""
        if self.dispatcher:
            self.dispatcher.intake.beat()  # last seen connected and caught up: now
        if self.stream:
            self.stream.stop()
        if self.dispatcher:
            self.dispatcher.stop(timeout=10)
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

    # ============================================== the intake's handler (IntakeHandler) =====
    def post_received(self, post: IncomingPost) -> None:
        msg = self._message_from(post)
        self.callback_message(msg)
        if post.mentions:
            self.callback_mention(msg, [MattermostPerson(self.directory, m) for m in post.mentions])

    def stale_command(self, post: IncomingPost, notice: str) -> None:
        self.send_simple_reply(self._message_from(post), notice)

    def reaction_added(self, reaction: dict[str, Any], channel_id: str) -> None:
        self.callback_reaction(
            Reaction(
                reactor=MattermostPerson(self.directory, reaction["user_id"]),
                action="added",
                timestamp=str(reaction.get("create_at", "")),
                reaction_name=reaction.get("emoji_name", ""),
                reacted_to={"id": reaction.get("post_id", ""), "channel_id": channel_id},
            )
        )

    def membership_changed(
        self, channel_id: str, user_id: str, joined: bool, remover_id: str
    ) -> None:
        room = MattermostRoom(self.directory, channel_id)
        who = None if user_id == self.rest.user_id else MattermostPerson(self.directory, user_id)
        if joined:
            self.callback_room_joined(room, who)
        else:
            remover = MattermostPerson(self.directory, remover_id) if remover_id else None
            self.callback_room_left(room, who, remover)

    def _message_from(self, post: IncomingPost) -> Message:
        author = self.directory.user(post.user_id)
        channel = post.channel
        if post.direct:
            frm: Identifier = MattermostPerson(
                self.directory, author["id"], author["username"], channel_id=channel["id"]
            )
            to: Identifier = self.bot_identifier
        else:
            room = MattermostRoom(self.directory, channel["id"])
            frm = MattermostRoomOccupant(self.directory, author["id"], room, author["username"])
            to = room
        return Message(
            body=post.text,
            frm=frm,
            to=to,
            extras={
                "post_id": post.id,
                "root_id": post.post.get("root_id", ""),
                "channel_id": channel["id"],
                "team_id": channel.get("team_id", ""),
                "create_at": post.post.get("create_at", 0),
            },
        )

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
        found = resolve(self.directory, text)
        if isinstance(found, User):
            return MattermostPerson(self.directory, found.userid, found.username)
        return MattermostRoom(self.directory, found.channel_id)

    def query_room(self, room: str) -> MattermostRoom:
        """A channel by id, ``~name``, ``name``, ``team/name`` or ``~team/name``."""
        return MattermostRoom(self.directory, resolve_channel(self.directory, room).channel_id)

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
