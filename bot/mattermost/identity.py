"""Who and where, in Mattermost's terms: users and channels known by their immutable ids.

Chat-framework-free. A :class:`User` or :class:`Channel` is its id; names, labels and other
details are looked up in the :class:`~bot.mattermost.directory.Directory` when asked for, since
a username or channel name can change at any time. :func:`resolve` and
:func:`resolve_channel` read the names people type: ``@user``, ``~channel`` (the first served
team that has it), ``team/channel``, ``~team/channel`` or a 26-character id.

An object made without a directory (``directory=None``, e.g. one rebuilt from storage) is
*detached*: it still knows its ids, and the username it was made with, and falls back to the
id where a name would be shown.
"""

from __future__ import annotations

from typing import Any

from bot.mattermost.directory import Directory, UnknownIdentifier, looks_like_id


class User:
    """A Mattermost user."""

    def __init__(self, directory: Directory | None, user_id: str, username: str | None = None):
        self._directory = directory
        self._user_id = user_id
        self._username = username

    def _user(self) -> dict[str, Any]:
        if self._directory is None:
            return {"id": self._user_id, "username": self._username or self._user_id}
        return self._directory.user(self._user_id)

    @property
    def userid(self) -> str:
        return self._user_id

    @property
    def username(self) -> str:
        if self._username is None:
            self._username = self._user()["username"]
        return self._username

    @property
    def fullname(self) -> str:
        user = self._user()
        full = f"{user.get('first_name', '')} {user.get('last_name', '')}".strip()
        return full or self.username

    @property
    def email(self) -> str:
        return self._user().get("email", "")

    @property
    def is_bot(self) -> bool:
        return bool(self._user().get("is_bot"))


class Channel:
    """A channel: public, private, direct or group message."""

    def __init__(self, directory: Directory | None, channel_id: str) -> None:
        self._directory = directory
        self.channel_id = channel_id

    def _channel(self) -> dict[str, Any]:
        if self._directory is None:
            return {"id": self.channel_id, "name": self.channel_id}
        return self._directory.channel(self.channel_id)

    @property
    def name(self) -> str:
        return self._channel().get("name", self.channel_id)

    @property
    def display_name(self) -> str:
        return self._channel().get("display_name") or self.name

    @property
    def team_id(self) -> str:
        return self._channel().get("team_id", "")

    @property
    def channel_type(self) -> str:
        return self._channel().get("type", "O")

    @property
    def header(self) -> str:
        return self._channel().get("header", "")

    @property
    def exists(self) -> bool:
        try:
            self._channel()
        except UnknownIdentifier:
            return False
        return True

    @property
    def label(self) -> str:
        """How people write it: ``~team/name``, or a group message's display name."""
        if self._directory is None:
            return self.channel_id
        channel = self._channel()
        if channel.get("type") == "G":
            return channel.get("display_name") or channel["name"]
        team = self._directory.team_name(channel.get("team_id", ""))
        return f"~{team}/{channel['name']}" if team else f"~{channel['name']}"


def resolve(directory: Directory, text: str) -> User | Channel:
    """The user or channel that ``text`` names; raises :class:`UnknownIdentifier`."""
    text = text.strip()
    if text.startswith("@"):
        user = directory.user_by_name(text)
        return User(directory, user["id"], user["username"])
    if text.startswith("~") or "/" in text:
        return Channel(directory, directory.channel_by_name(text)["id"])
    if looks_like_id(text):
        try:
            user = directory.user(text)
            return User(directory, user["id"], user["username"])
        except UnknownIdentifier:
            return Channel(directory, directory.channel(text)["id"])
    raise UnknownIdentifier(
        f"cannot tell who or what {text!r} is: use @user, ~channel, team/channel or an id"
    )


def resolve_channel(directory: Directory, text: str) -> Channel:
    """A channel by id, ``~name``, ``name``, ``team/name`` or ``~team/name``."""
    text = text.strip()
    if looks_like_id(text):
        return Channel(directory, directory.channel(text)["id"])
    return Channel(directory, directory.channel_by_name(text)["id"])
