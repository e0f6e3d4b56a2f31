"""A rule's ``incident:`` option: declare an incident for an alert group, and keep the
group's further alerts on that incident's timeline.

For each new alert state (the store keeps each state once, so a repeated notification
does nothing) and each rule with ``incident:`` whose matchers match:

1. the group (receiver, group key) has an open incident this rule declared, or its
   declaration is still running: the state is put on that incident's timeline through
   :func:`bot.incidents.alerts.route_alert` (firing again, another alert of the group,
   resolved), by :meth:`IncidentRules.tick`, once the incident exists;
2. otherwise a resolved state is ignored, and a firing one declares an incident, unless
   the rule is paused (``!remediation pause``): dry run (the rule's or the file's) only
   says in the group's thread what would be declared; otherwise ``incident.declare`` is
   submitted through the runtime as the rule (caller ``rule:<name>`` holding ``as_role``,
   the alert's fingerprint as the trigger), echoed in the group's thread.

A freeze window does not stop a declaration (it changes no system); cooldown, the rate
and target caps, approval, silences and verify are for remediation and do not apply; the
circuit breaker counts remediation failures and does not stop declarations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from bot.alerts import templates
from bot.alerts.config import AlertsConfig, Rule
from bot.alerts.matchers import matches_all
from bot.alerts.model import Alert, Status, canonical_time
from bot.alerts.posts import GroupId, GroupPosts
from bot.alerts.store import AlertStore, Event, Link
from bot.errors import OpsroomError
from bot.incidents.alerts import declare_incident, open_incident, route_alert
from bot.incidents.model import AlertRef
from bot.runtime.callers import Rule as RuleCaller
from bot.runtime.runtime import Runtime
from bot.runtime.surface import Place

log = logging.getLogger(__name__)


def started_at(alert: Alert) -> datetime | None:
    try:
        return datetime.fromisoformat(canonical_time(alert.starts_at).replace("Z", "+00:00"))
    except ValueError:
        return None


class IncidentRules:
    def __init__(
        self,
        config: AlertsConfig,
        store: AlertStore,
        runtime: Runtime,
        posts: GroupPosts,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.store = store
        self.runtime = runtime
        self.posts = posts
        self.clock = clock

    def consider(self, events: list[tuple[Event, GroupId | None]]) -> None:
        for rule in self.config.rules:
            if rule.incident is None:
                continue
            for event, group in events:
                if matches_all(rule.matchers, event.alert.labels):
                    self._decide(rule, event, group)

    def _decide(self, rule: Rule, event: Event, group: GroupId | None) -> None:
        option = rule.incident
        assert option is not None
        alert, now = event.alert, self.clock()
        declared = self.store.declaration(rule.name, event.receiver, event.group_key)
        if declared is not None and self._open(declared):
            self.store.claim_link(rule.name, event, "pending", now)
            return
        if alert.status is Status.RESOLVED:
            self.store.claim_link(rule.name, event, "skipped", now, "no open incident")
            return
        if self.store.rule_state(rule.name).paused:
            self.store.claim_link(rule.name, event, "skipped", now, "paused")
            return
        place = self.posts.thread(group) if group else None
        try:
            title, service, kind = (
                templates.render(value, alert) for value in option.templated().values()
            )
        except templates.MissingLabel as exc:
            if self.store.claim_link(rule.name, event, "skipped", now, str(exc)) and place:
                self._say(place, f"⚠️ rule {rule.name} cannot declare an incident: {exc}")
            return
        shown = f'"{title}"' + "".join(
            f", {key} {value}"
            for key, value in (("sev", option.severity), ("service", service), ("type", kind))
            if value
        )
        if rule.dry_run or self.config.dry_run:
            if self.store.claim_link(rule.name, event, "dry-run", now, shown) and place:
                self._say(
                    place,
                    f"🧪 dry run: rule {rule.name} would declare an incident {shown} as role "
                    f"{rule.as_role} for alert {alert.name} ({alert.fingerprint}); "
                    "nothing was declared",
                )
            return
        link_id = self.store.claim_link(rule.name, event, "declared", now, shown)
        if link_id is None:
            return  # decided before (the event is being processed again after a restart)
        caller = RuleCaller(rule.name, rule.as_role, alert=alert.fingerprint, alert_name=alert.name)
        try:
            job_id = declare_incident(
                self.runtime,
                title,
                rule=caller,
                started_at=started_at(alert),
                severity=option.severity,
                service=service,
                kind=kind,
                place=place,
            )
        except OpsroomError as exc:
            log.error("rule %s: cannot declare an incident: %s", rule.name, exc)
            self.store.update_link(link_id, state="failed", detail=str(exc))
            return
        if job_id:
            self.store.update_link(link_id, job_id=job_id)
        else:
            self.store.update_link(link_id, state="refused", detail="refused or denied")

    def _open(self, declared: Link) -> bool:
        """The declared incident is open, or its declaration has not finished yet."""
        if open_incident(self.runtime, declared.fingerprint) is not None:
            return True
        job = self.runtime.executor.get(declared.job_id)
        return job is not None and not job.status.finished

    def tick(self) -> None:
        """Put the pending alert states on their group's incident once it exists."""
        for link in self.store.pending_links():
            declared = self.store.declaration(link.rule, link.receiver, link.group_key)
            event = self.store.event(link.event_id)
            try:
                ref = open_incident(self.runtime, declared.fingerprint) if declared else None
                if ref is None:
                    if declared is not None and self._open(declared):
                        continue  # still being declared
                    self.store.update_link(link.id, state="skipped", detail="no open incident")
                    continue
                if event is not None:
                    route_alert(self.runtime, ref, self._ref(event.alert), link.rule)
            except OpsroomError as exc:
                log.warning("rule %s: cannot add an alert to its incident: %s", link.rule, exc)
                self.store.update_link(link.id, state="skipped", detail=str(exc))
                continue
            self.store.update_link(link.id, state="routed", detail=ref)

    @staticmethod
    def _ref(alert: Alert) -> AlertRef:
        summary = alert.annotations.get("summary", "")
        status = alert.status.value + (f" · {summary}" if summary else "")
        return AlertRef(alert.fingerprint, alert.name, started_at(alert), status)

    def _say(self, place: Place, text: str) -> None:
        self.runtime.surface.post(place, self.runtime.redactor.scrub(text))
