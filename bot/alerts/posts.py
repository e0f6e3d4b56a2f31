"""One post per alert group and channel, edited in place; storm control per channel.

A group is (receiver, group key, channel): Alertmanager's group, split by the channel each
of its alerts is routed to. Its post shows every alert of the group with its current
status and is edited as alerts fire and resolve (edits are coalesced: one per group per
batch the engine processes). Follow-ups (remediation runs, escalations) go in its thread.

Storm control: at most ``posts_per_minute`` new group posts per channel and minute; past
that, the first group left out posts one summary ("alert storm: N more groups..."), which
later ones edit, and the follow-ups of left-out groups (remediation runs) go in the
summary's thread. Left-out groups are posted when they next change in a calmer minute;
``!alerts list`` shows every alert meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from bot.alerts.config import AlertsConfig
from bot.alerts.model import Status
from bot.alerts.store import AlertStore, Current
from bot.outcomes import Outcome, Table
from bot.runtime.surface import ChatSurface, Place, Posted

log = logging.getLogger(__name__)

GroupId = tuple[str, str, str]  # receiver, group key, channel
MAX_ROWS = 20
POST_ID_WAIT_SECONDS = 10


def posted_as(post_id: str) -> Posted:
    """A handle on a post known by id (e.g. from the store, after a restart)."""
    future: Future[str] = Future()
    future.set_result(post_id)
    return Posted(future)


def labels_text(current: Current, leave_out: tuple[str, ...] = ("alertname",)) -> str:
    labels = current.alert.labels
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in leave_out)


def group_message(alerts: list[Current], mentions: list[str]) -> Outcome:
    """The group post: a headline (names, counts, mentions) and a table of its alerts."""
    firing = [c for c in alerts if c.alert.status is Status.FIRING]
    names = sorted({c.alert.name for c in alerts})
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    icon = "🔥" if firing else "✅"
    state = f"{len(firing)} firing, {len(alerts) - len(firing)} resolved"
    if not firing:
        state = f"all {len(alerts)} resolved"
    mention = f" · {' '.join(mentions)}" if mentions and firing else ""
    rows = [
        (
            c.alert.name,
            c.alert.status.value,
            labels_text(c),
            c.alert.annotations.get("summary", ""),
            c.alert.starts_at[:19].replace("T", " "),
        )
        for c in alerts
    ]
    table = Table(("alert", "status", "labels", "summary", "since"), rows, limit=MAX_ROWS)
    return Outcome(f"{icon} {shown}: {state}{mention}", table)


@dataclass
class _Storm:
    minute: int
    posts: int = 0
    left_out: int = 0
    summary: Posted | None = None


class GroupPosts:
    """Posts and edits the group posts; remembers them in the store."""

    def __init__(
        self,
        config: AlertsConfig,
        store: AlertStore,
        surface: ChatSurface,
        place_named: Callable[[str], Place],
        clock: Callable[[], float],
        scrub: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.config = config
        self.store = store
        self.surface = surface
        self.place_named = place_named
        self.clock = clock
        self.scrub = scrub
        self._posted: dict[GroupId, Posted] = {}
        self._storms: dict[str, _Storm] = {}
        self._places: dict[str, Place] = {}
        self._lock = threading.Lock()

    def place(self, channel: str) -> Place:
        with self._lock:
            place = self._places.get(channel)
        if place is None:
            place = self.place_named(channel)
            with self._lock:
                self._places[channel] = place
        return place

    def mentions(self, channel: str, labels: dict[str, str] | None = None) -> list[str]:
        for route in self.config.routes:
            if route.channel == channel:
                return list(route.mention)
        return []

    def _handle(self, group: GroupId) -> Posted | None:
        posted = self._posted.get(group)
        if posted is None:
            post_id = self.store.group_post(*group)
            if post_id:
                posted = self._posted[group] = posted_as(post_id)
        return posted

    def update(self, groups: set[GroupId]) -> None:
        """Post or edit the post of each group (once each), then the storm summaries."""
        stormy: set[str] = set()
        for group in sorted(groups):
            receiver, group_key, channel = group
            alerts = self.store.group(receiver, group_key, channel)
            if not alerts:
                continue
            message = group_message(alerts, self.mentions(channel)).map_text(self.scrub)
            posted = self._handle(group)
            if posted is not None:
                self.surface.edit(posted, message, final=True)
                continue
            if not any(c.alert.status is Status.FIRING for c in alerts):
                continue  # resolved before it was ever shown (e.g. left out by a storm)
            if not self._may_post(channel):
                stormy.add(channel)
                continue
            posted = self.surface.post(self.place(channel), message)
            self._posted[group] = posted
            posted.when_posted(self._remember(group))
        for channel in sorted(stormy):
            self._summarize(channel)

    def _remember(self, group: GroupId) -> Callable[[str], None]:
        def remember(post_id: str) -> None:
            self.store.set_group_post(group[0], group[1], group[2], post_id)

        return remember

    def _may_post(self, channel: str) -> bool:
        """Count a new post for the channel's minute; past the cap, tell the summary."""
        minute = int(self.clock() // 60)
        storm = self._storms.get(channel)
        if storm is None or storm.minute != minute:
            storm = self._storms[channel] = _Storm(minute)
        if storm.posts < self.config.storm.posts_per_minute:
            storm.posts += 1
            return True
        storm.left_out += 1
        return False

    def _summarize(self, channel: str) -> None:
        storm = self._storms[channel]
        text = (
            f"🌩️ alert storm: {storm.left_out} more alert group(s) this minute were not posted "
            f"here (at most {self.config.storm.posts_per_minute} a minute); they are stored, "
            "and `!alerts list` shows every firing alert"
        )
        if storm.summary is None:
            storm.summary = self.surface.post(self.place(channel), text)
        else:
            self.surface.edit(storm.summary, text, final=True)

    def thread(self, group: GroupId) -> Place:
        """Where follow-ups of the group go: its post's thread; for a group a storm kept
        out of the channel, the storm summary's thread (the channel stays readable)."""
        place = self.place(group[2])
        posted = self._handle(group)
        if posted is None:
            storm = self._storms.get(group[2])
            posted = storm.summary if storm is not None else None
        post_id = posted.post_id(POST_ID_WAIT_SECONDS) if posted is not None else None
        return Place(place.channel, post_id) if post_id else place
