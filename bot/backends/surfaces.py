"""The chat surfaces the runtime talks to (:class:`bot.runtime.surface.ChatSurface`).

- :class:`MattermostSurface`: our Mattermost backend. Posts go through its retrying
  outbox, progress is one message edited in place, files are uploaded, reactions and
  groups are read from the server; Markdown rendering.
  It also implements :class:`bot.incidents.chat.IncidentChat` (channels, members, groups,
  pins, files checked for being kept) for the incidents plugin.
- :class:`ErrbotSurface`: any other Errbot backend (the terminal, Errbot's test backend).
  No edits (only the final version of a message is shown), no files, no reactions;
  aligned plain text.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any

import requests

from bot.errors import ChatError
from bot.incidents.chat import (
    MAX_HEADER,
    MAX_PURPOSE,
    Channel,
    ChannelSpec,
    ChatRefused,
    GroupsUnavailable,
    NameTaken,
    PostInfo,
    fit,
)
from bot.mattermost.rest import error_message, status_of
from bot.messages import render
from bot.rendering import MarkdownRenderer, Renderer, TextRenderer
from bot.runtime.policy import Principal
from bot.runtime.surface import Message, Place, Posted, Reaction

log = logging.getLogger(__name__)

EDIT_WAIT_SECONDS = 30
POST_WAIT_SECONDS = 30
NAME_EXISTS = "store.sql_channel.save_channel.exists.app_error"
REMEMBERED_PLACES = 1000


def _post_id(future: Future[Any]) -> Future[str]:
    """A future of the post's id from a future of the post."""
    result: Future[str] = Future()

    def done(posted: Future[Any]) -> None:
        error = posted.exception()
        if error is not None:
            result.set_exception(error)
        else:
            result.set_result(posted.result()["id"])

    future.add_done_callback(done)
    return result


def _reason(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if response is None:
        return str(exc)
    return f"HTTP {response.status_code}: {error_message(response)}"


def _error_id(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    try:
        body = response.json() if response is not None else {}
    except ValueError:
        return ""
    return str(body.get("id", "")) if isinstance(body, dict) else ""


class MattermostIncidentChat:
    """:class:`bot.incidents.chat.IncidentChat` on Mattermost's REST API (what mattermostdriver
    lacks: privacy at creation, pins, groups), posts through the outbox. Uses the
    backend's ``rest``, ``poster`` and ``directory`` only."""

    _backend: Any
    renderer: Renderer
    _joined_channels: set[str]

    def _joined(self) -> set[str]:
        joined: set[str] | None = getattr(self, "_joined_channels", None)
        if joined is None:
            joined = set()
            self._joined_channels = joined
        return joined

    def _team_id(self, team: str) -> str:
        teams = self._backend.directory.teams
        if not team:
            if not teams:
                raise ChatRefused("the bot is on no team, so it cannot create channels")
            return str(next(iter(teams)))
        for team_id, info in teams.items():
            if info["name"].lower() == team.lower():
                return str(team_id)
        raise ChatRefused(f"the bot does not serve team {team}; add it to the team first")

    def create_channel(self, spec: ChannelSpec) -> Channel:
        spec = spec.checked()
        body = {
            "team_id": self._team_id(spec.team),
            "name": spec.name,
            "display_name": spec.display_name,
            "type": "P" if spec.private else "O",
            "header": spec.header,
            "purpose": spec.purpose,
        }
        try:
            created = self._backend.rest.create_channel(body)
        except requests.HTTPError as exc:
            status = status_of(exc)
            if status == 400 and _error_id(exc) == NAME_EXISTS:
                raise NameTaken(f"channel name {spec.name} is taken") from None
            if status == 403:
                kind = "private" if spec.private else "public"
                raise ChatRefused(
                    f"Mattermost does not let the bot create {kind} channels (HTTP 403): a "
                    f"permission scheme removed create_{kind}_channel from team members; ask "
                    "a system admin to give it back, or to make the bot a team admin"
                ) from None
            raise ChatError(f"could not create channel {spec.name}: {_reason(exc)}") from None
        self._joined().add(created["id"])
        return Channel(created["id"], created["name"], created["team_id"])

    def patch_channel(
        self, channel_id: str, *, header: str | None = None, purpose: str | None = None
    ) -> None:
        body = {}
        if header is not None:
            body["header"] = fit(header, MAX_HEADER)
        if purpose is not None:
            body["purpose"] = fit(purpose, MAX_PURPOSE)
        try:
            self._backend.rest.patch_channel(channel_id, body)
        except requests.HTTPError as exc:
            raise ChatRefused(f"could not change the channel: {_reason(exc)}") from None

    def add_member(self, channel_id: str, user_id: str) -> None:
        try:
            self._backend.rest.add_channel_member(channel_id, user_id)
        except requests.HTTPError as exc:
            status = status_of(exc)
            if status == 403:
                raise ChatRefused(
                    "Mattermost refused (HTTP 403): they must be a member of the channel's team"
                ) from None
            if status == 404:
                raise ChatRefused(
                    "the channel is private and the bot is not in it (HTTP 404)"
                ) from None
            raise ChatRefused(_reason(exc)) from None

    def group_members(self, group: str) -> list[Principal]:
        rest = self._backend.rest
        try:
            found = [g for g in rest.groups_named(group) if g.get("name") == group]
            if not found:
                raise ChatRefused(f"no Mattermost group named {group}")
            members = rest.group_members(found[0]["id"])
        except requests.HTTPError as exc:
            status = status_of(exc)
            if status == 501:
                raise GroupsUnavailable(
                    "this Mattermost server has no user groups (Team Edition answers 501, and "
                    "@group mentions notify nobody there); list the responders as @users"
                ) from None
            if status == 403:
                raise GroupsUnavailable(
                    "the bot may not read Mattermost groups (HTTP 403); list the responders "
                    "as @users or let the bot read groups"
                ) from None
            raise ChatRefused(f"could not read group {group}: {_reason(exc)}") from None
        return [Principal(user["id"], user["username"]) for user in members]

    def channel_named(self, name: str) -> Channel:
        channel = self._backend.directory.channel_by_name(name)
        if channel["id"] not in self._joined():
            try:
                self._backend.rest.join_channel(channel["id"])
            except requests.HTTPError as exc:
                raise ChatRefused(
                    f"the bot is not a member of {name} and cannot join it ({_reason(exc)}); "
                    "add the bot to the channel"
                ) from None
            self._joined().add(channel["id"])
        return Channel(channel["id"], channel["name"], channel.get("team_id", ""))

    def _wait(self, future: Future[Any]) -> dict[str, Any]:
        try:
            result: dict[str, Any] = future.result(timeout=POST_WAIT_SECONDS)
        except requests.HTTPError as exc:
            raise ChatError(f"Mattermost refused the post: {_reason(exc)}") from None
        except Exception as exc:
            raise ChatError(f"the post was not delivered: {exc}") from None
        return result

    def post_message(self, channel_id: str, message: Message) -> str:
        futures = self._backend.poster.post(channel_id, render(message, self.renderer))
        return str(self._wait(futures[-1])["id"])

    def edit_message(self, post_id: str, message: Message) -> None:
        self._wait(self._backend.poster.edit(post_id, render(message, self.renderer)))

    def pin(self, post_id: str) -> None:
        try:
            self._backend.rest.pin_post(post_id)
        except requests.HTTPError as exc:
            raise ChatRefused(f"could not pin the post: {_reason(exc)}") from None

    def get_post(self, post_id: str) -> PostInfo | None:
        try:
            post = self._backend.rest.post(post_id)
        except requests.HTTPError:
            return None
        return PostInfo(
            post["id"], post["channel_id"], post["user_id"], post["message"], post.get("type", "")
        )

    def is_pinned(self, post_id: str) -> bool:
        try:
            return bool(self._backend.rest.post(post_id).get("is_pinned"))
        except requests.HTTPError:
            return False

    def upload(self, channel_id: str, filename: str, content: bytes, message: str) -> str:
        """Upload to the channel the post goes to; a post that comes back without the
        file (Mattermost drops files of another channel silently) is an error."""
        post = self._wait(
            self._backend.poster.upload(channel_id, filename, content, message=message)
        )
        if not post.get("file_ids"):
            raise ChatError(f"Mattermost dropped the file {filename} from the post")
        return str(post["id"])


class MattermostSurface(MattermostIncidentChat):
    """The runtime's view of our Mattermost backend (and the incidents')."""

    name = "mattermost"

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.renderer: Renderer = MarkdownRenderer()

    def place_for(self, msg: Any) -> Place:
        """Where to answer a message: its channel, in its thread (see thread_root)."""
        extras = msg.extras or {}
        channel = extras.get("channel_id") or self._backend.channel_id_for(
            msg.to if msg.is_group else msg.frm
        )
        return Place(channel, self._backend.thread_root(msg))

    def place_named(self, name: str) -> Place:
        return Place(self._backend.channel_id_for(name))

    def post(self, place: Place, message: Message) -> Posted:
        text = render(message, self.renderer)
        futures = self._backend.post(place.channel, text, root_id=place.thread)
        return Posted(_post_id(futures[-1]))

    def edit(self, posted: Posted, message: Message, *, final: bool) -> None:
        post_id = posted.post_id(EDIT_WAIT_SECONDS)
        if post_id is None:
            return
        self._backend.poster.edit(post_id, render(message, self.renderer))

    def attach(self, place: Place, filename: str, content: bytes, message: str) -> bool:
        self._backend.upload(
            place.channel, filename, content, message=message, root_id=place.thread
        )
        return True

    def reactions(self, post_id: str) -> list[Reaction]:
        own = self._backend.rest.user_id
        return [
            Reaction(r["user_id"], r["emoji_name"])
            for r in self._backend.rest.reactions(post_id)
            if r["user_id"] != own
        ]

    def lookup(self, identifier: str) -> Principal | None:
        try:
            person = self._backend.build_identifier(identifier)
        except ValueError:
            return None
        return principal_of(self, person)

    def groups_of(self, user_id: str) -> frozenset[str]:
        return self._backend.directory.groups_of(user_id)


class ErrbotSurface:
    """The runtime's view of an Errbot backend without edits, files or reactions."""

    def __init__(self, bot: Any, *, terminal: bool) -> None:
        self._bot = bot
        self.name = "terminal" if terminal else "test"
        # The terminal wraps tables to its width; the test backend keeps lines whole.
        self.renderer: Renderer = TextRenderer() if terminal else TextRenderer(width=None)
        self._identifiers: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def place_for(self, msg: Any) -> Place:
        identifier = msg.to if msg.is_group else msg.frm
        key = str(identifier)
        with self._lock:
            self._identifiers[key] = identifier
            self._identifiers.move_to_end(key)
            while len(self._identifiers) > REMEMBERED_PLACES:
                self._identifiers.popitem(last=False)
        return Place(key)

    def place_named(self, name: str) -> Place:
        return Place(name)

    def _send(self, place: Place, text: str) -> None:
        with self._lock:
            identifier = self._identifiers.get(place.channel)
        if identifier is None:
            identifier = self._bot.build_identifier(place.channel)
        self._bot.send(identifier, text)

    def post(self, place: Place, message: Message) -> Posted:
        self._send(place, render(message, self.renderer))
        return _ErrbotPosted(place)

    def edit(self, posted: Posted, message: Message, *, final: bool) -> None:
        if final and isinstance(posted, _ErrbotPosted):
            self._send(posted.place, render(message, self.renderer))

    def attach(self, place: Place, filename: str, content: bytes, message: str) -> bool:
        return False

    def reactions(self, post_id: str) -> list[Reaction]:
        return []

    def lookup(self, identifier: str) -> Principal | None:
        try:
            person = self._bot.build_identifier(identifier)
        except ValueError:
            return None
        return principal_of(self, person)

    def groups_of(self, user_id: str) -> frozenset[str]:
        return frozenset()


class _ErrbotPosted(Posted):
    """A message sent on a backend that cannot address it again: where it went."""

    def __init__(self, place: Place) -> None:
        super().__init__(None)
        self.place = place


def principal_of(surface: MattermostSurface | ErrbotSurface, person: Any) -> Principal:
    """Who an Errbot identifier is for the policy: the immutable id (``aclattr``), the
    username as a label, and their groups where the surface has them."""
    name = person.nick or str(person.person)
    user_id = str(person.aclattr)
    return Principal(user_id, name.lstrip("@"), surface.groups_of(user_id))
