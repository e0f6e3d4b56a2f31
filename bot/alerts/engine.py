"""The alert engine: one thread turning stored alert states into posts and remediations.

Receivers store and wake it (:meth:`AlertEngine.stored`); it takes what is unprocessed in
the store in batches, in arrival order: routes each alert to a channel (first matching
route), records the alert's current state, posts or edits each touched group once, lets
rules with ``incident:`` declare or add to incidents (:mod:`bot.alerts.incidents`), lets
the remediator decide for the new firing states, then marks the batch processed. What a
crash leaves unprocessed is taken again at the next start; a rule never decides twice on
one state (the store's runs are unique per rule and state). Between batches it follows
open remediation runs (:meth:`Remediator.tick`) and fetches the alerts a truncated
notification left out (``truncatedAlerts`` > 0) from Alertmanager's ``GET /api/v2/alerts``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping

from bot.alerts.clients import Alertmanager, Prometheus
from bot.alerts.config import AlertsConfig
from bot.alerts.incidents import IncidentRules
from bot.alerts.matchers import Matcher, matches_all
from bot.alerts.model import Alert, Notification
from bot.alerts.posts import GroupId, GroupPosts
from bot.alerts.remediation import ActionRef, Remediator
from bot.alerts.store import AlertStore
from bot.errors import OpsroomError
from bot.runtime.runtime import Runtime
from bot.runtime.surface import Place

log = logging.getLogger(__name__)

BATCH = 1000
TICK_SECONDS = 0.25
PRUNE_SECONDS = 3600


class AlertEngine:
    def __init__(
        self,
        config: AlertsConfig,
        store: AlertStore,
        runtime: Runtime,
        actions: Callable[[], Mapping[str, ActionRef]],
        place_named: Callable[[str], Place],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.alertmanager = Alertmanager(config.alertmanager) if config.alertmanager else None
        prometheus = Prometheus(config.prometheus) if config.prometheus else None
        self.posts = GroupPosts(
            config, store, runtime.surface, place_named, clock, runtime.redactor.scrub
        )
        self.remediator = Remediator(
            config, store, runtime, actions, self.posts, clock, self.alertmanager, prometheus
        )
        self.incidents = IncidentRules(config, store, runtime, self.posts, clock)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._truncated: queue.SimpleQueue[Notification] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pruned = 0.0

    # --- fed by the receivers ---------------------------------------------------------------
    def stored(self, notifications: list[Notification]) -> None:
        for notification in notifications:
            if notification.truncated and self.alertmanager is not None:
                self._truncated.put(notification)
        self._wake.set()

    def route(self, alert: Alert) -> str:
        for route in self.config.routes:
            if matches_all(route.matchers, alert.labels):
                return route.channel
        return ""

    # --- the work ---------------------------------------------------------------------------
    def process(self) -> int:
        """Handle one batch of unprocessed alert states; returns how many."""
        events = self.store.pending(BATCH)
        if not events:
            return 0
        routed = [(event, self.route(event.alert)) for event in events]
        self.store.apply(routed, self.clock(), processed=False)
        groups: set[GroupId] = {(e.receiver, e.group_key, ch) for e, ch in routed if ch}
        try:
            self.posts.update(groups)
        except Exception:
            log.exception("could not post alert groups")
        decided = [(e, (e.receiver, e.group_key, ch) if ch else None) for e, ch in routed]
        self.incidents.consider(decided)
        self.remediator.consider(decided)
        self.store.mark_processed([e.id for e in events])
        return len(events)

    def fetch_truncated(self) -> None:
        """Store the alerts of truncated notifications, as Alertmanager has them now."""
        while True:
            try:
                notification = self._truncated.get_nowait()
            except queue.Empty:
                return
            assert self.alertmanager is not None
            matchers = [Matcher(k, "=", v) for k, v in sorted(notification.group_labels.items())]
            try:
                alerts = self.alertmanager.alerts(matchers)
            except OpsroomError as exc:
                log.warning("could not fetch a truncated group from Alertmanager: %s", exc)
                continue
            full = Notification(notification.receiver, notification.group_key, tuple(alerts))
            new = self.store.add([full], self.clock())
            log.info(
                "group %s was truncated by %d alerts: fetched %d, %d new",
                notification.group_key,
                notification.truncated,
                len(alerts),
                new,
            )

    def step(self) -> None:
        """Everything due now: truncated groups, all pending batches, open runs."""
        self.fetch_truncated()
        while self.process():
            pass
        self.incidents.tick()
        self.remediator.tick()
        now = self.clock()
        if now - self._pruned > PRUNE_SECONDS:
            self.store.prune(now)
            self._pruned = now

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.step()
            except Exception:
                log.exception("alert engine step failed; retrying")
            self._wake.wait(TICK_SECONDS)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="opsroom-alerts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        self.remediator.close()
