"""The one declared contract between the runtime and a chat system.

The runtime never imports chat code: it talks to a :class:`ChatSurface`, which the
Mattermost backend and the Errbot text/test backends implement (``bot/backends/surfaces.py``).
What the runtime hands a surface is data (:mod:`bot.runtime.notices` and
:mod:`bot.outcomes`); the surface renders it for its medium.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from bot.outcomes import Outcome, Table
from bot.runtime.notices import Notice
from bot.runtime.policy import Principal

Message: TypeAlias = Notice | Outcome | Table | str


@dataclass(frozen=True)
class Place:
    """Where a conversation happens: a channel (or DM), and the thread to answer in."""

    channel: str
    thread: str = ""  # root post id; "" answers in the channel itself


class Posted:
    """A message a surface posted. Its id may come later (posts are delivered by a
    retrying outbox); surfaces that cannot address a message again give no future."""

    def __init__(self, future: Future[str] | None = None) -> None:
        self._future = future

    def post_id(self, timeout: float) -> str | None:
        """The posted message's id, waiting up to ``timeout``; None if it never came."""
        if self._future is None:
            return None
        try:
            return self._future.result(timeout=timeout)
        except Exception:  # delivery failed: the outbox has logged it
            return None

    def when_posted(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(post_id)`` once the message exists (at once if it does)."""
        if self._future is None:
            return
        future = self._future
        future.add_done_callback(
            lambda done: None if done.exception() else callback(future.result())
        )


@dataclass(frozen=True)
class Reaction:
    user_id: str
    emoji: str


class ChatSurface(Protocol):
    """What the runtime needs from a chat system. Every method is thread-safe."""

    @property
    def name(self) -> str:
        """``mattermost``, ``terminal`` or ``test``: for logs and the audit record."""
        ...

    def post(self, place: Place, message: Message) -> Posted:
        """Render and post a new message."""
        ...

    def edit(self, posted: Posted, message: Message, *, final: bool) -> None:
        """Replace a message posted before (live progress). Surfaces that cannot edit
        post the ``final`` version anew and skip intermediate ones."""
        ...

    def attach(self, place: Place, filename: str, content: bytes, message: str) -> bool:
        """Upload a file with a message; False where files cannot be attached."""
        ...

    def reactions(self, post_id: str) -> list[Reaction]:
        """The reactions on a post, as the server has them now (for decisions)."""
        ...

    def lookup(self, identifier: str) -> Principal | None:
        """A person by ``@username`` or user id; None if the server knows nobody so."""
        ...

    def groups_of(self, user_id: str) -> frozenset[str]:
        """The person's groups (empty where the server has none)."""
        ...


class NoSurface:
    """A surface that shows nothing: for runs with nowhere to answer (tests, the CLI's
    dry checks). Everything is still audited."""

    name = "none"

    def post(self, place: Place, message: Message) -> Posted:
        return Posted()

    def edit(self, posted: Posted, message: Message, *, final: bool) -> None:
        return None

    def attach(self, place: Place, filename: str, content: bytes, message: str) -> bool:
        return False

    def reactions(self, post_id: str) -> list[Reaction]:
        return []

    def lookup(self, identifier: str) -> Principal | None:
        return None

    def groups_of(self, user_id: str) -> frozenset[str]:
        return frozenset()
