"""Users and channels by id (chat-free), and their Errbot faces."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import pytest
from mattermostdriver.exceptions import ResourceNotFound

from bot.backends.mattermost_identifiers import (
    MattermostPerson,
    MattermostRoom,
    MattermostRoomOccupant,
)
from bot.mattermost.directory import Directory, UnknownIdentifier
from bot.mattermost.identity import Channel, User, resolve, resolve_channel

BOT, ALICE = "b" * 26, "a" * 26
ALPHA = "t" * 26
OPS, GROUP = "c" * 26, "g" * 26


class FakeREST:
    user_id = BOT

    def __init__(self) -> None:
        self.users = {
            ALICE: {"id": ALICE, "username": "alice", "first_name": "Alice", "last_name": "L"},
            BOT: {"id": BOT, "username": "opsbot", "is_bot": True},
        }
        self.channels = {
            OPS: {"id": OPS, "name": "ops", "team_id": ALPHA, "type": "O", "header": "on call"},
            GROUP: {"id": GROUP, "name": "x__y", "display_name": "alice, bob", "type": "G"},
        }

    def my_teams(self) -> list[dict[str, Any]]:
        return [{"id": ALPHA, "name": "alpha"}]

    def user(self, user_id: str) -> dict[str, Any]:
        if user_id not in self.users:
            raise ResourceNotFound("404")
        return self.users[user_id]

    def user_by_username(self, name: str) -> dict[str, Any]:
        for user in self.users.values():
            if user["username"] == name:
                return user
        raise ResourceNotFound("404")

    def channel(self, channel_id: str) -> dict[str, Any]:
        if channel_id not in self.channels:
            raise ResourceNotFound("404")
        return self.channels[channel_id]

    def channel_by_name(self, team: str, name: str) -> dict[str, Any]:
        for channel in self.channels.values():
            if team == "alpha" and channel["name"] == name:
                return channel
        raise ResourceNotFound("404")


@pytest.fixture
def directory() -> Directory:
    found = Directory(FakeREST(), [])
    found.refresh_teams()
    return found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@alice", ("user", ALICE)),
        (ALICE, ("user", ALICE)),
        ("~ops", ("channel", OPS)),
        ("alpha/ops", ("channel", OPS)),
        (" ~alpha/ops ", ("channel", OPS)),
        (OPS, ("channel", OPS)),
    ],
)
def test_names_people_type_resolve_to_ids(directory: Directory, text: str, expected: Any) -> None:
    found = resolve(directory, text)
    kind = "user" if isinstance(found, User) else "channel"
    assert (kind, found.userid if isinstance(found, User) else found.channel_id) == expected


@pytest.mark.parametrize("text", ["@nobody", "~nowhere", "alpha/nowhere", "z" * 26, "what?"])
def test_unknown_names_are_refused_with_a_reason(directory: Directory, text: str) -> None:
    with pytest.raises(UnknownIdentifier):
        resolve(directory, text)


def test_a_room_by_plain_name_and_labels(directory: Directory) -> None:
    assert resolve_channel(directory, "ops").label == "~alpha/ops"
    assert Channel(directory, GROUP).label == "alice, bob"
    user = User(directory, ALICE)
    assert (user.username, user.fullname, user.is_bot) == ("alice", "Alice L", False)


def test_errbot_identifiers_pickle_to_ids_without_a_directory(directory: Directory) -> None:
    person = MattermostPerson(directory, ALICE, "alice", channel_id="d" * 26)
    room = MattermostRoom(directory, OPS)
    occupant = MattermostRoomOccupant(directory, ALICE, room, "alice")
    assert (str(person), str(room), room.topic) == ("@alice", "~alpha/ops", "on call")
    for identifier in (person, room, occupant):
        loaded = pickle.loads(pickle.dumps(identifier))
        assert loaded == identifier and loaded.aclattr == identifier.aclattr
    loaded_person = pickle.loads(pickle.dumps(person))
    assert (loaded_person.person, loaded_person.channel_id) == ("@alice", "d" * 26)
    assert str(pickle.loads(pickle.dumps(room))) == OPS  # detached: its id, not a name
    assert pickle.loads(pickle.dumps(occupant)).room.channel_id == OPS


def test_the_mattermost_package_does_not_import_errbot() -> None:
    code = (
        "import pkgutil, importlib, sys, bot.mattermost as p\n"
        "for m in pkgutil.iter_modules(p.__path__):\n"
        "    importlib.import_module(f'bot.mattermost.{m.name}')\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'errbot'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
