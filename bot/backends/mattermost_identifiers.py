"""Errbot identifiers for Mattermost users, channels and people in channels.

Thin Errbot faces of :mod:`bot.mattermost.identity`: identity is the immutable user id
(``aclattr``), names are looked up for display. Identifiers pickle to their ids (and the
username they were made with) only; one loaded from storage is detached from the directory
(see :mod:`bot.mattermost.identity`) until rebuilt with ``build_identifier``/``query_room``.
Sending to one works all the same, since sending needs only the ids.
"""

from __future__ import annotations

from typing import Any

from errbot.backends.base import Person, Room, RoomError, RoomOccupant

from bot.mattermost.directory import Directory
from bot.mattermost.identity import Channel, User


class MattermostPerson(User, Person):
    """A Mattermost user. ``channel_id`` is the direct channel to answer in, when known."""

    def __init__(
        self,
        directory: Directory | None,
        user_id: str,
        username: str | None = None,
        channel_id: str | None = None,
    ) -> None:
        super().__init__(directory, user_id, username)
        self.channel_id = channel_id

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
        return self.userid

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MattermostPerson) and other.userid == self.userid

    def __hash__(self) -> int:
        return hash(self.userid)

    def __str__(self) -> str:
        return self.person

    def __repr__(self) -> str:
        return f"<MattermostPerson {self.userid} {self._username or ''}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return MattermostPerson, (None, self.userid, self._username, self.channel_id)


class MattermostRoom(Channel, Room):
    """A channel (public, private or group message) the bot may be in."""

    @property
    def id(self) -> str:
        return self.channel_id

    @property
    def aclattr(self) -> str:
        return self.channel_id

    @property
    def topic(self) -> str:
        return self.header

    def _attached(self) -> Directory:
        if self._directory is None:
            raise RoomError(f"room {self.channel_id} is not bound to a running backend")
        return self._directory

    @property
    def joined(self) -> bool:
        rest = self._attached().rest
        return any(m["user_id"] == rest.user_id for m in rest.channel_members(self.channel_id))

    def join(self, username: str | None = None, password: str | None = None) -> None:
        self._attached().rest.join_channel(self.channel_id)

    def leave(self, reason: str | None = None) -> None:
        directory = self._attached()
        directory.rest.leave_channel(self.channel_id)
        directory.forget_channel(self.channel_id)

    def create(self) -> None:
        raise RoomError("Opsroom does not create channels; ask a Mattermost admin")

    def destroy(self) -> None:
        raise RoomError("Opsroom does not delete channels")

    @property
    def occupants(self) -> list[MattermostRoomOccupant]:
        directory = self._attached()
        return [
            MattermostRoomOccupant(directory, m["user_id"], self)
            for m in directory.rest.channel_members(self.channel_id)
        ]

    def invite(self, *args: Any) -> None:
        raise RoomError("Opsroom does not invite users to channels")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MattermostRoom) and other.channel_id == self.channel_id

    def __hash__(self) -> int:
        return hash(self.channel_id)

    def __str__(self) -> str:
        return self.label

    def __repr__(self) -> str:
        return f"<MattermostRoom {self.channel_id}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return MattermostRoom, (None, self.channel_id)


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
        return MattermostRoomOccupant, (None, self.userid, self._room, self._username)
