"""Decisions about incoming posts, kept free of I/O so they are easy to test."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

STALE_NOTICE = "missed while disconnected; re-issue if still needed"


@dataclass(frozen=True)
class InboundPolicy:
    """What the bot answers: its own identity and the operator's choices."""

    bot_user_id: str
    bot_username: str
    prefix: str
    answer_bots: bool = False
    answer_webhooks: bool = False


def decode_json_field(value: Any) -> Any:
    """Mattermost sends nested objects in events as JSON strings."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def ignore_reason(post: dict[str, Any], policy: InboundPolicy) -> str | None:
    """Why a post must not reach Errbot at all, or None to handle it."""
    if post.get("user_id") == policy.bot_user_id:
        return "own post"
    if post.get("type"):
        return f"system post {post['type']}"
    if post.get("delete_at"):
        return "deleted"
    props = post.get("props") or {}
    if str(props.get("from_webhook", "")).lower() == "true" and not policy.answer_webhooks:
        return "from a webhook"
    if str(props.get("from_bot", "")).lower() == "true" and not policy.answer_bots:
        return "from a bot"
    return None


def _mention_pattern(username: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*@{re.escape(username)}\b[:,]?\s*", re.IGNORECASE)


def normalize_command(text: str, policy: InboundPolicy) -> str:
    """Turn ``@bot cmd args`` into ``<prefix>cmd args``; other text is returned unchanged."""
    match = _mention_pattern(policy.bot_username).match(text)
    if not match or not text[match.end() :].strip():
        return text
    rest = text[match.end() :]
    return rest if rest.startswith(policy.prefix) else policy.prefix + rest


def is_command(text: str, policy: InboundPolicy, direct: bool) -> bool:
    """Would Errbot treat this text as a command? (In DMs the prefix is optional.)"""
    stripped = text.strip()
    if not stripped:
        return False
    return direct or stripped.startswith(policy.prefix)


def stale_notice(text: str, age_seconds: float) -> str:
    """The answer to a command found too late to run safely."""
    command = text.strip().splitlines()[0][:200]
    minutes = max(1, round(age_seconds / 60))
    return f":hourglass: `{command}` (sent {minutes} min ago) was {STALE_NOTICE}."
