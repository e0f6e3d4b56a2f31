"""Cached look-ups of users, channels and teams, shared by every thread of the backend.

Users are identified by their immutable id; usernames are only a way to find that id and a
label for display, since a username can change at any time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import requests
from mattermostdriver.exceptions import ResourceNotFound

from bot.errors import Refusal
from bot.mattermost.rest import MattermostREST

log = logging.getLogger(__name__)

MM_ID_LENGTH = 26
GROUPS_TTL_SECONDS = 300  # group membership changes are picked up within five minutes


def looks_like_id(text: str) -> bool:
    return len(text) == MM_ID_LENGTH and text.isalnum() and text.islower()


class UnknownIdentifier(Refusal, ValueError):
    """A user, channel or team name that the server does not know (or hides from the bot)."""


class Directory:
    """Users, channels and teams as the bot sees them."""

    def __init__(self, rest: MattermostREST, team_names: list[str]) -> None:
        self.rest = rest
        self._wanted_teams = [name.lower() for name in team_names]
        self._lock = threading.Lock()
        self._users: dict[str, dict[str, Any]] = {}
        self._user_ids_by_name: dict[str, str] = {}
        self._channels: dict[str, dict[str, Any]] = {}
        self._direct_by_user: dict[str, str] = {}
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._groups_unavailable = False
        self.teams: dict[str, dict[str, Any]] = {}

    # --- teams -----------------------------------------------------------------------------
    def refresh_teams(self) -> list[str]:
        """Reload the teams to serve. Returns configured team names the bot is not in."""
        teams = {team["id"]: team for team in self.rest.my_teams()}
        if self._wanted_teams:
            teams = {i: t for i, t in teams.items() if t["name"].lower() in self._wanted_teams}
        missing = sorted(set(self._wanted_teams) - {t["name"].lower() for t in teams.values()})
        with self._lock:
            self.teams = teams
        return missing

    def serves_team(self, team_id: str) -> bool:
        """Direct and group messages (no team) are always served."""
        return not team_id or team_id in self.teams

    def team_name(self, team_id: str) -> str:
        team = self.teams.get(team_id)
        return team["name"] if team else ""

    # --- users -----------------------------------------------------------------------------
    def remember_user(self, user: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._users[user["id"]] = user
            self._user_ids_by_name[user["username"].lower()] = user["id"]
        return user

    def user(self, user_id: str) -> dict[str, Any]:
        cached = self._users.get(user_id)
        if cached is not None:
            return cached
        try:
            return self.remember_user(self.rest.user(user_id))
        except ResourceNotFound:
            raise UnknownIdentifier(f"no user with id {user_id}") from None

    def user_by_name(self, username: str) -> dict[str, Any]:
        name = username.lstrip("@").lower()
        user_id = self._user_ids_by_name.get(name)
        if user_id:
            return self._users[user_id]
        try:
            return self.remember_user(self.rest.user_by_username(name))
        except ResourceNotFound:
            raise UnknownIdentifier(f"no user named @{name}") from None

    def resolve_users(self, names_or_ids: list[str]) -> tuple[list[str], list[str]]:
        """User ids for a list of ``@usernames`` or ids; returns (ids, unknown entries)."""
        ids, unknown = [], []
        for entry in names_or_ids:
            try:
                if looks_like_id(entry):
                    ids.append(self.user(entry)["id"])
                else:
                    ids.append(self.user_by_name(entry)["id"])
            except UnknownIdentifier:
                unknown.append(entry)
        return ids, unknown

    def groups_of(self, user_id: str) -> frozenset[str]:
        """Names of the user's Mattermost groups, cached for a few minutes. Empty when the
        server has no groups (unlicensed) or does not answer: roles given to groups then
        simply do not apply, which denies rather than grants."""
        if self._groups_unavailable:
            return frozenset()
        cached = self._groups.get(user_id)
        if cached and time.monotonic() - cached[0] < GROUPS_TTL_SECONDS:
            return cached[1]
        try:
            names = frozenset(g["name"] for g in self.rest.user_groups(user_id))
        except requests.HTTPError as exc:
            status = getattr(exc.response, "status_code", None)
            if status in (403, 404, 501):
                log.warning("Mattermost groups unavailable (%s); group: roles do not apply", status)
                self._groups_unavailable = True
            else:
                log.warning("could not read the groups of %s: %s", user_id, exc)
            return frozenset()
        except requests.RequestException as exc:
            log.warning("could not read the groups of %s: %s", user_id, exc)
            return frozenset()
        with self._lock:
            self._groups[user_id] = (time.monotonic(), names)
        return names

    # --- channels --------------------------------------------------------------------------
    def remember_channel(self, channel: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._channels[channel["id"]] = channel
            if channel.get("type") == "D":
                other = self._other_direct_member(channel)
                if other:
                    self._direct_by_user[other] = channel["id"]
        return channel

    def _other_direct_member(self, channel: dict[str, Any]) -> str | None:
        ids = channel.get("name", "").split("__")
        others = [i for i in ids if i != self.rest.user_id]
        return others[0] if others else (ids[0] if ids and ids[0] else None)

    def channel(self, channel_id: str) -> dict[str, Any]:
        cached = self._channels.get(channel_id)
        if cached is not None:
            return cached
        try:
            return self.remember_channel(self.rest.channel(channel_id))
        except ResourceNotFound:
            raise UnknownIdentifier(f"no channel with id {channel_id}") from None

    def channel_by_name(self, name: str) -> dict[str, Any]:
        """Find ``~channel``, ``team/channel`` or ``~team/channel`` in the served teams."""
        name = name.lstrip("~")
        team_part, _, channel_part = name.rpartition("/")
        candidates = [team_part] if team_part else [team["name"] for team in self.teams.values()]
        for team_name in candidates:
            try:
                return self.remember_channel(self.rest.channel_by_name(team_name, channel_part))
            except ResourceNotFound:
                continue
        where = f"team {team_part}" if team_part else "any served team"
        raise UnknownIdentifier(f"no channel ~{channel_part} in {where}")

    def direct_channel_id(self, user_id: str) -> str:
        """The direct-message channel between the bot and a user, created on first use."""
        channel_id = self._direct_by_user.get(user_id)
        if channel_id:
            return channel_id
        return self.remember_channel(self.rest.direct_channel(user_id))["id"]

    def my_channels(self) -> list[dict[str, Any]]:
        """Every channel the bot is in across the served teams, DMs and group DMs included."""
        seen: dict[str, dict[str, Any]] = {}
        for team_id in list(self.teams):
            for channel in self.rest.my_channels(team_id):
                seen[channel["id"]] = self.remember_channel(channel)
        return list(seen.values())

    def forget_channel(self, channel_id: str) -> None:
        with self._lock:
            self._channels.pop(channel_id, None)
