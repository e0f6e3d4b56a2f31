"""An in-memory IncidentChat for the domain's tests: what the service asked of chat."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from bot.incidents.chat import (
    Channel,
    ChannelSpec,
    ChatRefused,
    GroupsUnavailable,
    NameTaken,
    PostInfo,
)
from bot.messages import render
from bot.rendering import MarkdownRenderer
from bot.runtime.policy import Principal
from bot.runtime.surface import Message


@dataclass
class MemoryChat:
    users: dict[str, str] = field(default_factory=dict)  # username -> id
    groups: dict[str, list[str]] | None = field(default_factory=dict)  # None: 501
    taken: set[str] = field(default_factory=set)
    outside_team: set[str] = field(default_factory=set)
    may_create: bool = True
    channels: dict[str, ChannelSpec] = field(default_factory=dict)  # id -> spec
    headers: dict[str, str] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    posts: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (channel, text)
    pinned: set[str] = field(default_factory=set)
    files: list[tuple[str, str, bytes]] = field(default_factory=list)
    authors: dict[str, str] = field(default_factory=dict)  # post id -> user id
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids)}"

    def create_channel(self, spec: ChannelSpec) -> Channel:
        spec = spec.checked()
        if not self.may_create:
            raise ChatRefused("Mattermost does not let the bot create private channels (403)")
        if spec.name in self.taken:
            raise NameTaken(spec.name)
        self.taken.add(spec.name)
        channel_id = self._id("ch")
        self.channels[channel_id] = spec
        self.headers[channel_id] = spec.header
        self.members[channel_id] = []
        return Channel(channel_id, spec.name, "team")

    def patch_channel(self, channel_id, *, header=None, purpose=None):
        if header is not None:
            self.headers[channel_id] = header

    def add_member(self, channel_id, user_id):
        if user_id in self.outside_team:
            raise ChatRefused("Mattermost refused (HTTP 403): not on the team")
        if user_id not in self.members[channel_id]:
            self.members[channel_id].append(user_id)

    def group_members(self, group):
        if self.groups is None:
            raise GroupsUnavailable("this Mattermost server has no user groups (501)")
        if group not in self.groups:
            raise ChatRefused(f"no Mattermost group named {group}")
        return [Principal(self.users[name], name) for name in self.groups[group]]

    def lookup(self, identifier):
        name = identifier.lstrip("@")
        if name in self.users:
            return Principal(self.users[name], name)
        for username, user_id in self.users.items():
            if user_id == identifier:
                return Principal(user_id, username)
        return None

    def channel_named(self, name):
        for channel_id, spec in self.channels.items():
            if spec.name == name.lstrip("~"):
                return Channel(channel_id, spec.name, "team")
        raise ChatRefused(f"no channel {name}")

    def post_message(self, channel_id, message: Message) -> str:
        post_id = self._id("p")
        self.posts[post_id] = (channel_id, render(message, MarkdownRenderer()))
        return post_id

    def edit_message(self, post_id, message):
        channel, _ = self.posts[post_id]
        self.posts[post_id] = (channel, render(message, MarkdownRenderer()))

    def pin(self, post_id):
        self.pinned.add(post_id)

    def is_pinned(self, post_id):
        return post_id in self.pinned

    def get_post(self, post_id):
        channel, text = self.posts[post_id]
        return PostInfo(post_id, channel, self.authors.get(post_id, "u-bot"), text, "")

    def say(self, channel_id: str, text: str, user_id: str) -> str:
        """A person's post."""
        post_id = self.post_message(channel_id, text)
        self.authors[post_id] = user_id
        return post_id

    def upload(self, channel_id, filename, content, message):
        self.files.append((channel_id, filename, content))
        return self.post_message(channel_id, message)

    def texts(self, channel_id: str) -> list[str]:
        return [text for channel, text in self.posts.values() if channel == channel_id]

    def add_stakeholder_channel(self, name: str) -> str:
        channel_id = self._id("ch")
        self.channels[channel_id] = ChannelSpec("", name, name, False)
        return channel_id
