"""What incidents need from a chat system beyond the runtime's ``ChatSurface``.

:class:`IncidentChat` is implemented for Mattermost by
``bot.backends.surfaces.MattermostSurface``; the domain (``bot.incidents``) only ever talks
to this protocol. The limits and rules below are Mattermost's, checked before calling it:

- channel names start with a lowercase letter or digit and hold lowercase letters, digits,
  ``-`` and ``_``; at most 64 characters (a longer one passes the server's validation and
  then fails with a 500);
- a display name holds at most 64 characters, a header 1024, a purpose 250.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Protocol

from bot.errors import ChatError, InvalidArgument
from bot.runtime.policy import Principal
from bot.runtime.surface import Message

MAX_CHANNEL_NAME = 64
MAX_DISPLAY_NAME = 64
MAX_HEADER = 1024
MAX_PURPOSE = 250
CHANNEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class ChatRefused(ChatError):
    """The chat server refused an operation for a reason people can act on (403, 404);
    the message says what to do."""


class NameTaken(ChatError):
    """A channel of that name exists (or existed: archived channels keep their names)."""


class GroupsUnavailable(ChatError):
    """The server cannot tell a group's members (Team Edition: 501; no permission: 403)."""


def check_channel_name(name: str) -> str:
    """``name`` if Mattermost accepts it as a channel name; InvalidArgument otherwise."""
    if not CHANNEL_NAME.match(name):
        raise InvalidArgument(
            f"channel name {name!r}: must start with a lowercase letter or digit and hold "
            "only lowercase letters, digits, '-' and '_'"
        )
    if len(name) > MAX_CHANNEL_NAME:
        raise InvalidArgument(
            f"channel name {name!r}: {len(name)} characters, at most {MAX_CHANNEL_NAME}"
        )
    return name


def fit(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def slug(text: str, limit: int = 40) -> str:
    """A channel-name fragment of ``text``: ASCII lowercase words joined by ``-``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return words[:limit].strip("-") or "incident"


@dataclass(frozen=True)
class ChannelSpec:
    """A channel to create, already within Mattermost's limits (see :meth:`checked`)."""

    team: str  # team name; "" for the first team the bot serves
    name: str
    display_name: str
    private: bool
    header: str = ""
    purpose: str = ""

    def checked(self) -> ChannelSpec:
        check_channel_name(self.name)
        for what, value, limit in (
            ("display name", self.display_name, MAX_DISPLAY_NAME),
            ("header", self.header, MAX_HEADER),
            ("purpose", self.purpose, MAX_PURPOSE),
        ):
            if len(value) > limit:
                raise InvalidArgument(f"channel {what}: {len(value)} characters, at most {limit}")
        return self


@dataclass(frozen=True)
class Channel:
    id: str
    name: str
    team_id: str


@dataclass(frozen=True)
class PostInfo:
    """A post as the timeline needs it. ``type`` is empty for people's posts and
    ``system_*`` for what the server writes (joins, header changes...)."""

    id: str
    channel_id: str
    user_id: str
    message: str
    type: str

    @property
    def is_system(self) -> bool:
        return self.type.startswith("system_")


class IncidentChat(Protocol):
    """Channel and post operations incidents need. Every method is thread-safe and
    blocking (it returns once the server answered)."""

    def create_channel(self, spec: ChannelSpec) -> Channel:
        """Create a channel (private from the start when ``spec.private``): NameTaken if
        the name is or was in use, ChatRefused when the bot may not create channels."""
        ...

    def patch_channel(
        self, channel_id: str, *, header: str | None = None, purpose: str | None = None
    ) -> None:
        """Change the header and/or purpose (cut to Mattermost's limits)."""
        ...

    def add_member(self, channel_id: str, user_id: str) -> None:
        """Add one person; ChatRefused (with the reason) when the server refuses."""
        ...

    def group_members(self, group: str) -> list[Principal]:
        """The members of a Mattermost group; GroupsUnavailable when the server cannot
        say, ChatRefused when there is no such group."""
        ...

    def lookup(self, identifier: str) -> Principal | None:
        """A person by ``@username`` or user id."""
        ...

    def channel_named(self, name: str) -> Channel:
        """A channel by ``~name``, ``team/name``; the bot joins it if it is public and the
        bot is not a member; ChatRefused if it cannot post there."""
        ...

    def post_message(self, channel_id: str, message: Message) -> str:
        """Post and return the new post's id."""
        ...

    def edit_message(self, post_id: str, message: Message) -> None:
        """Replace the text of one of the bot's posts."""
        ...

    def pin(self, post_id: str) -> None:
        """Pin a post to its channel (it stays pinned if it already is)."""
        ...

    def is_pinned(self, post_id: str) -> bool: ...

    def get_post(self, post_id: str) -> PostInfo | None: ...

    def upload(self, channel_id: str, filename: str, content: bytes, message: str) -> str:
        """Post a file with a message in the channel; returns the post id. ChatError if
        the server dropped the file (it then posts the message alone)."""
        ...
