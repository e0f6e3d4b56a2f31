"""Posting, editing, reacting and uploading: what the bot says, delivered through the outbox.

Chat-free (no Errbot): the backend uses it for replies, and later layers use it directly for
echoes and live progress messages.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from bot.mattermost.outbox import Outbox
from bot.mattermost.rest import MattermostREST
from bot.mattermost.splitting import MATTERMOST_MAX_POST_LENGTH, split_message

# Attachment colours for Errbot's colour names; anything else passes through ("#ff8800").
COLOURS = {"red": "#d24b4e", "green": "#3db887", "yellow": "#ffbc1f", "blue": "#1c58d9"}


def attachment(
    *,
    title: str = "",
    text: str = "",
    color: str = "",
    link: str = "",
    image: str = "",
    thumbnail: str = "",
    fields: tuple[tuple[Any, Any], ...] | list[tuple[Any, Any]] = (),
    fallback: str = "",
) -> dict[str, Any]:
    """A Mattermost message attachment (``props.attachments`` item)."""
    return {
        "fallback": fallback or title or text[:200],
        "color": COLOURS.get(color, color),
        "title": title,
        "title_link": link,
        "text": text,
        "image_url": image,
        "thumb_url": thumbnail,
        "fields": [
            {"title": str(name), "value": str(value), "short": len(str(value)) < 40}
            for name, value in fields
        ],
    }


class Poster:
    """Everything the bot writes to Mattermost. Thread-safe; every call returns futures.

    Text is scrubbed of secrets before it leaves. Writes with the same ``order_key`` (by
    default: the channel) are delivered in the order they were made, as people reading the
    channel expect.
    """

    def __init__(
        self, rest: MattermostREST, outbox: Outbox, scrub: Callable[[str], str] = str
    ) -> None:
        self.rest = rest
        self.outbox = outbox
        # Every text the bot writes passes here: secrets are scrubbed from all of it.
        self.scrub = scrub

    def _pending_post_id(self) -> str:
        # Mattermost de-duplicates on this id, so a retried POST cannot post twice.
        return f"{self.rest.user_id}:{uuid.uuid4().hex}"

    def post(
        self,
        channel_id: str,
        text: str,
        *,
        root_id: str = "",
        props: dict[str, Any] | None = None,
        file_ids: list[str] | None = None,
        order_key: str = "",
    ) -> list[Future]:
        """Post ``text`` (split when longer than Mattermost allows); one future per part,
        each resolving to the created post. ``props`` and files go with the last part."""
        key = order_key or channel_id
        text = self.scrub(text)
        parts = split_message(text, MATTERMOST_MAX_POST_LENGTH) if text else [""]
        futures = []
        for index, part in enumerate(parts):
            body: dict[str, Any] = {
                "channel_id": channel_id,
                "message": part,
                "root_id": root_id,
                "pending_post_id": self._pending_post_id(),
            }
            if index == len(parts) - 1:
                if props:
                    body["props"] = props
                if file_ids:
                    body["file_ids"] = file_ids
            futures.append(self.outbox.submit(key, partial(self.rest.create_post, body), "post"))
        return futures

    def edit(self, post_id: str, text: str, order_key: str = "") -> Future:
        """Replace a post's text (live progress). Text beyond the limit is cut."""
        body = {"message": split_message(self.scrub(text), MATTERMOST_MAX_POST_LENGTH)[0]}
        return self.outbox.submit(
            order_key or post_id, lambda: self.rest.patch_post(post_id, body), "edit"
        )

    def react(self, post_id: str, emoji_name: str, order_key: str = "") -> Future:
        """Add a reaction (``white_check_mark`` or ``:white_check_mark:``) to a post."""
        name = emoji_name.strip(":")
        return self.outbox.submit(
            order_key or post_id, lambda: self.rest.add_reaction(post_id, name), "reaction"
        )

    def upload(
        self,
        channel_id: str,
        filename: str,
        content: bytes,
        *,
        message: str = "",
        root_id: str = "",
        order_key: str = "",
    ) -> Future:
        """Post a file (e.g. long command output) with an optional message."""

        def job() -> dict[str, Any]:
            info = self.rest.upload_file(channel_id, filename, content)
            body = {
                "channel_id": channel_id,
                "message": split_message(self.scrub(message), MATTERMOST_MAX_POST_LENGTH)[0],
                "root_id": root_id,
                "file_ids": [info["id"]],
                "pending_post_id": self._pending_post_id(),
            }
            return self.rest.create_post(body)

        return self.outbox.submit(order_key or channel_id, job, f"upload {filename}")
