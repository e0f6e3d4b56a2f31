"""The one alert model: every receiver normalises what it gets into these."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum


class Status(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    """One alert as one notification reported it."""

    fingerprint: str
    status: Status
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: str = ""  # RFC 3339, as the sender wrote it (part of the identity)
    ends_at: str = ""
    generator_url: str = ""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "") or self.fingerprint


@dataclass(frozen=True)
class Notification:
    """What one webhook request carried: a group of alerts (one alert when ungrouped)."""

    receiver: str  # the name of our receiver (its configuration), not the sender's
    group_key: str
    alerts: tuple[Alert, ...]
    truncated: int = 0  # alerts the sender left out (Alertmanager's max_alerts)
    group_labels: Mapping[str, str] = field(default_factory=dict)


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def canonical_time(text: str) -> str:
    """An RFC 3339 time in one spelling (UTC, ``Z``, microseconds only when there are
    any), since it is part of an alert's identity and Alertmanager writes the same instant
    as ``...00Z`` in webhooks and ``...00.000Z`` in its API. Left as is when unparseable."""
    try:
        when = datetime.fromisoformat(_FRACTION.sub(r"\1", text.strip()).replace("Z", "+00:00"))
    except ValueError:
        return text
    if when.tzinfo is None:
        return text
    spelled = when.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return spelled.replace(".000000Z", "Z")


def fingerprint_of(labels: Mapping[str, str]) -> str:
    """A stable fingerprint from the labels, for senders that give none."""
    canonical = json.dumps(dict(sorted(labels.items())), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
