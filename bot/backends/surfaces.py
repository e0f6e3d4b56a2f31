"""The chat surfaces the runtime talks to (:class:`bot.runtime.surface.ChatSurface`).

- :class:`MattermostSurface`: our Mattermost backend. Posts go through its retrying
  outbox, progress is one message edited in place, files are uploaded, reactions and
  groups are read from the server; Markdown rendering.
- :class:`ErrbotSurface`: any other Errbot backend (the terminal, Errbot's test backend).
  No edits (only the final version of a message is shown), no files, no reactions;
  aligned plain text.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any

from bot.messages import render
from bot.rendering import MarkdownRenderer, Renderer, TextRenderer
from bot.runtime.policy import Principal
from bot.runtime.surface import Message, Place, Posted, Reaction

EDIT_WAIT_SECONDS = 30
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


class MattermostSurface:
    """The runtime's view of our Mattermost backend."""

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
