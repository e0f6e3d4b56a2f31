"""Errbot identifiers for Mattermost users, channels and people in channels.

Identity is the immutable user id (``aclattr``); the username is looked up for display and
may change. Identifiers pickle to their ids only (Errbot stores them in plugin storage) and
are rebuilt against the running backend's directory when loaded.
"""

from __future__ import annotations

from typing import Any

from errbot.backends.base import Person, Room, RoomError, RoomOccupant

from bot.mattermost.directory import Directory

_directory: Directory | None = None


def bind_directory(directory: Directory) -> None:
    """Identifiers loaded from storage resolve names through this directory."""
    global _directory
    _directory = directory


def _rebuild_person(user_id: str, username: str) -> MattermostPerson:
    return MattermostPerson(_directory, user_id, username)


def _rebuild_room(channel_id: str) -> MattermostRoom:
    return MattermostRoom(_directory, channel_id)


def _rebuild_occupant(user_id: str, username: str, channel_id: str) -> MattermostRoomOccupant:
    return MattermostRoomOccupant(
        _directory, user_id, MattermostRoom(_directory, channel_id), username
    )


class MattermostPerson(Person):
    """A Mattermost user. ``channel_id`` is the direct channel to answer in, when known."""

    def __init__(
        self,
        directory: Directory | None,
        user_id: str,
        username: str | None = None,
        channel_id: str | None = None,
    ) -> None:
        self._directory = directory
        self._user_id = user_id
        self._username = username
        self.channel_id = channel_id

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
    def person(self) -> str:
        return f"@{self.username}"

    @property
    def nick(self) -> str:
        return self.username

    @property
    def client(self) -> str:
        return self.channel_id or ""

    @property
    def aclattr(self) -> str:
        return self._user_id

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

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MattermostPerson) and other.userid == self.userid

    def __hash__(self) -> int:
        return hash(self._user_id)

    def __str__(self) -> str:
        return self.person

    def __repr__(self) -> str:
        return f"<MattermostPerson {self._user_id} {self._username or ''}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_person, (self._user_id, self._username or "")


class MattermostRoom(Room):
    """A channel (public, private or group message) the bot may be in."""

    def __init__(self, directory: Directory | None, channel_id: str) -> None:
        self._directory = directory
        self.channel_id = channel_id

    def _channel(self) -> dict[str, Any]:
        assert self._directory is not None, "identifier used before the backend started"
        return self._directory.channel(self.channel_id)

    @property
    def id(self) -> str:
        return self.channel_id

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
    def aclattr(self) -> str:
        return self.channel_id

    @property
    def exists(self) -> bool:
        try:
            self._channel()
        except ValueError:
            return False
        return True

    @property
    def joined(self) -> bool:
        assert self._directory is not None
        me = self._directory.rest.user_id
        return any(
            m["user_id"] == me for m in self._directory.rest.channel_members(self.channel_id)
        )

    def join(self, username: str | None = None, password: str | None = None) -> None:
        assert self._directory is not None
        self._directory.rest.join_channel(self.channel_id)

    def leave(self, reason: str | None = None) -> None:
        assert self._directory is not None
        self._directory.rest.leave_channel(self.channel_id)
        self._directory.forget_channel(self.channel_id)

    def create(self) -> None:
        raise RoomError("Opsroom does not create channels; ask a Mattermost admin")

    def destroy(self) -> None:
        raise RoomError("Opsroom does not delete channels")

    @property
    def topic(self) -> str:
        return self._channel().get("header", "")

    @property
    def occupants(self) -> list[MattermostRoomOccupant]:
        assert self._directory is not None
        return [
            MattermostRoomOccupant(self._directory, m["user_id"], self)
            for m in self._directory.rest.channel_members(self.channel_id)
        ]

    def invite(self, *args: Any) -> None:
        raise RoomError("Opsroom does not invite users to channels")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MattermostRoom) and other.channel_id == self.channel_id

    def __hash__(self) -> int:
        return hash(self.channel_id)

    def __str__(self) -> str:
        if self._directory is None:
            return self.channel_id
        channel = self._channel()
        if channel.get("type") == "G":
            return channel.get("display_name") or channel["name"]
        team = self._directory.team_name(channel.get("team_id", ""))
        return f"~{team}/{channel['name']}" if team else f"~{channel['name']}"

    def __repr__(self) -> str:
        return f"<MattermostRoom {self.channel_id}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_room, (self.channel_id,)


class MattermostRoomOccupant(MattermostPerson, RoomOccupant):
    """A user speaking in a channel."""

    def __init__(
        self,
        directory: Directory | None,
        user_id: str,
        room: MattermostRoom,
        username: str | None = None,
    ) -> None:
        super().__init__(directory, user_id, username)
        self._room = room

    @property
    def room(self) -> MattermostRoom:
        return self._room

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, MattermostRoomOccupant)
            and other.userid == self.userid
            and other.room == self.room
        )

    def __hash__(self) -> int:
        return hash((self.userid, self._room.channel_id))

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_occupant, (self.userid, self._username or "", self._room.channel_id)
