"""Incident response, chat-free: declare, roles, checklists, updates, status, reminders.

:class:`IncidentService` holds the rules; it stores incidents in an
:class:`~bot.incidents.store.IncidentStore`, talks to chat only through an
:class:`~bot.incidents.chat.IncidentChat`, and reads time from an injected clock (tests
move it). Every method that changes an incident is called from a runtime action (the
incident commands of ``plugins/incidents``), so policy, audit and the echo apply; the
methods raise :class:`~bot.errors.Refusal` before changing anything when the request
cannot be honoured, and the action's job id is kept on the timeline event so that the
post-mortem can name the audit record of every change.

An alert rule declares an incident through :func:`bot.incidents.alerts.declare_incident`,
which submits the ``incident.declare`` action as the rule: the incident is linked to its
alert, starts at the alert's start, and is acknowledged by the first thing a person does.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from bot.errors import ChatError, InvalidArgument, Refusal, UnknownTarget
from bot.incidents.chat import (
    MAX_DISPLAY_NAME,
    MAX_HEADER,
    MAX_PURPOSE,
    Channel,
    ChannelSpec,
    ChatRefused,
    GroupsUnavailable,
    IncidentChat,
    NameTaken,
    PostInfo,
    check_channel_name,
    fit,
    slug,
)
from bot.incidents.config import IncidentsConfig
from bot.incidents.model import (
    Actor,
    AlertRef,
    ChecklistItem,
    Event,
    EventKind,
    Incident,
    Status,
    parse_ref,
    utcnow,
)
from bot.incidents.store import IncidentStore
from bot.outcomes import Outcome, Table, Text

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
NAME_ATTEMPTS = 3  # a taken channel name is retried with a random suffix this often


class IncidentRefusal(Refusal):
    """An incident command that cannot be honoured; nothing was changed."""


class NotAnIncidentChannel(IncidentRefusal):
    """A command about an incident given outside any incident's channel."""


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def minutes(delta: timedelta | None) -> str:
    if delta is None:
        return "—"
    total = max(0, int(delta.total_seconds()))
    hours, rest = divmod(total, 3600)
    return f"{hours}h {rest // 60:02d}m" if hours else f"{rest // 60}m {rest % 60:02d}s"


class IncidentService:
    """The incidents of one bot. Thread-safe (one lock around every change)."""

    def __init__(
        self,
        config: IncidentsConfig,
        store: IncidentStore,
        chat: IncidentChat | None,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.config = config
        self.store = store
        self._chat = chat
        self.clock = clock
        self._lock = threading.RLock()

    @property
    def chat(self) -> IncidentChat:
        if self._chat is None:
            raise IncidentRefusal(
                "incidents need the Mattermost backend (channels, pins, files); "
                "this bot runs on a backend without them"
            )
        return self._chat

    # ================================================================ look-ups =====
    def incident(self, ref: str | int) -> Incident:
        number = ref if isinstance(ref, int) else parse_ref(ref)
        incident = self.store.get(number) if number else None
        if incident is None:
            raise UnknownTarget(str(ref), f"no incident {ref} (!incident list shows the open ones)")
        return incident

    def in_channel(self, channel_id: str) -> Incident:
        incident = self.store.by_channel(channel_id)
        if incident is None:
            raise NotAnIncidentChannel(
                "this is not an incident channel: run incident commands in the incident's "
                "own channel (!incident list shows them)"
            )
        return incident

    def person(self, identifier: str) -> Actor:
        """A person named in a command (``@bob``); refused when the server knows nobody so."""
        name = identifier.strip()
        principal = self.chat.lookup(name if name.startswith("@") else f"@{name}")
        if principal is None:
            shown = name if name.startswith("@") else f"@{name}"
            raise UnknownTarget(shown, f"no user {shown}")
        return Actor(principal.user_id, principal.username)

    def check_declaration(self, service: str, commander: str, kind: str) -> None:
        """Refuse a declaration before anything exists: unknown service, user or type."""
        if service and self.config.services and service not in self.config.services:
            known = ", ".join(sorted(self.config.services))
            raise UnknownTarget(service, f"unknown service {service} (known: {known})")
        if kind and kind not in self.config.checklists:
            known = ", ".join(sorted(self.config.checklists))
            raise UnknownTarget(kind, f"unknown incident type {kind} (checklists: {known})")
        if commander:
            self.person(commander)

    def check_role(self, role: str) -> None:
        if role not in self.config.roles:
            raise InvalidArgument(f"unknown role {role} (roles: {', '.join(self.config.roles)})")

    # ================================================================ declare =====
    def declare(
        self,
        title: str,
        *,
        declared_by: Actor,
        severity: int | None = None,
        service: str = "",
        commander: Actor | None = None,
        kind: str = "",
        alert: AlertRef | None = None,
        job_id: str = "",
    ) -> tuple[Incident, list[str]]:
        """Open the war room: channel, header and purpose, responders, pinned summary,
        checklist, announcement. Returns the incident and the problems met on the way
        (people who could not be invited, a stakeholder channel the bot cannot post in)."""
        chat = self.chat
        self.check_declaration(service, "", kind)
        severity = severity or self.config.default_severity
        now = self.clock()
        kind = self.config.checklist_type(service, kind)
        with self._lock:
            incident = self.store.add(
                Incident(
                    id=0,
                    title=title.strip(),
                    severity=severity,
                    service=service,
                    kind=kind,
                    status=Status.ACTIVE,
                    declared_at=now,
                    declared_by=declared_by,
                    started_at=alert.started_at if alert and alert.started_at else now,
                    acknowledged_at=now if declared_by.human else None,
                    alert=alert,
                    checklist=[
                        ChecklistItem(item.title, item.action, item.args)
                        for item in self.config.checklists[kind]
                    ],
                )
            )
            commander = commander or (declared_by if declared_by.human else None)
            if commander is not None:
                incident.roles["commander"] = commander
            try:
                channel = self._create_channel(chat, incident)
            except BaseException:
                self.store.forget(incident.id)  # it never existed anywhere else
                raise
            incident.channel_id, incident.channel_name = channel.id, channel.name
            self.store.save(incident)
            problems = self._invite(incident, [*((commander,) if commander else ()), declared_by])
            incident.summary_post_id = chat.post_message(
                incident.channel_id, self.summary(incident)
            )
            chat.pin(incident.summary_post_id)
            incident.checklist_post_id = chat.post_message(
                incident.channel_id, self.checklist(incident)
            )
            self.store.save(incident)
            text = f"declared {self.config.severity_label(severity)}: {incident.title}"
            self._event(incident, EventKind.DECLARED, declared_by, text, job_id)
            if alert is not None:
                self._event(incident, EventKind.ALERT, declared_by, self._alert_text(alert))
            problems += self._announce(
                incident,
                f"🚨 {incident.ref} declared ({self.config.severity_label(severity)}): "
                f"{incident.title} · ~{incident.channel_name}",
            )
        for problem in problems:
            chat.post_message(incident.channel_id, f"⚠️ {problem}")
        return incident, problems

    def _channel_name(self, incident: Incident, attempt: int) -> str:
        pattern = self.config.channel.name_pattern
        suffix = f"-{incident.id}" if "{id}" not in pattern else ""
        if attempt:
            suffix += f"-{secrets.token_hex(2)}"
        fixed = (
            pattern.replace("{date}", incident.declared_at.strftime("%Y%m%d")).replace(
                "{id}", str(incident.id)
            )
            + suffix
        )
        room = 64 - len(fixed.replace("{slug}", ""))
        return check_channel_name(fixed.replace("{slug}", slug(incident.title, max(8, room))))

    def _create_channel(self, chat: IncidentChat, incident: Incident) -> Channel:
        for attempt in range(NAME_ATTEMPTS):
            spec = ChannelSpec(
                team=self.config.channel.team,
                name=self._channel_name(incident, attempt),
                display_name=fit(f"{incident.ref} {incident.title}", MAX_DISPLAY_NAME),
                private=self.config.channel.private,
                header=self.header(incident),
                purpose=fit(incident.title, MAX_PURPOSE),
            ).checked()
            try:
                return chat.create_channel(spec)
            except NameTaken:
                log.info("channel name %s is taken; trying another", spec.name)
        raise ChatRefused(f"could not find a free channel name for {incident.ref}")

    def _invite(self, incident: Incident, first: list[Actor]) -> list[str]:
        """Add the responders one by one (Mattermost has no "add a group to a channel")."""
        chat = self.chat
        people: dict[str, Actor] = {actor.id: actor for actor in first if actor.human}
        problems: list[str] = []
        for member in self.config.responders(incident.service, incident.severity):
            if member.startswith("group:"):
                group = member.removeprefix("group:")
                try:
                    for principal in chat.group_members(group):
                        people.setdefault(
                            principal.user_id, Actor(principal.user_id, principal.username)
                        )
                except (GroupsUnavailable, ChatRefused) as exc:
                    problems.append(f"responders of {member} were not invited: {exc}")
                continue
            found = chat.lookup(member)
            if found is None:
                problems.append(f"responder {member} was not invited: no such user")
                continue
            people.setdefault(found.user_id, Actor(found.user_id, found.username))
        for actor in people.values():
            try:
                chat.add_member(incident.channel_id, actor.id)
            except ChatRefused as exc:
                problems.append(f"@{actor.name} was not added: {exc}")
        return problems

    def _announce(self, incident: Incident, text: str) -> list[str]:
        """Tell the stakeholder channel; the problem, if it cannot be told."""
        name = self.config.stakeholder_channel
        if not name:
            return []
        try:
            channel = self.chat.channel_named(name)
            self.chat.post_message(channel.id, text)
        except ChatError as exc:
            return [f"could not post to the stakeholder channel {name}: {exc}"]
        return []

    # ================================================================ changes =====
    def _change(
        self,
        incident: Incident,
        actor: Actor,
        kind: EventKind,
        text: str,
        job_id: str = "",
        *,
        header: bool = False,
        post_id: str = "",
    ) -> None:
        """Save, record the event, refresh the pinned summary (and the header)."""
        if actor.human and incident.acknowledged_at is None:
            incident.acknowledged_at = self.clock()
        self.store.save(incident)
        self._event(incident, kind, actor, text, job_id, post_id)
        self.refresh(incident, header=header)

    def _event(
        self,
        incident: Incident,
        kind: EventKind,
        actor: Actor,
        text: str,
        job_id: str = "",
        post_id: str = "",
    ) -> bool:
        return self.store.add_event(
            Event(incident.id, self.clock(), kind, actor, text, job_id, post_id)
        )

    def refresh(self, incident: Incident, *, header: bool = False) -> None:
        """Edit the pinned summary in place (pinning it again if someone unpinned it)."""
        chat = self.chat
        if incident.summary_post_id:
            chat.edit_message(incident.summary_post_id, self.summary(incident))
            if not chat.is_pinned(incident.summary_post_id):
                chat.pin(incident.summary_post_id)
        if header:
            chat.patch_channel(incident.channel_id, header=self.header(incident))

    def _open(self, incident: Incident) -> None:
        if not incident.open:
            raise IncidentRefusal(f"{incident.ref} is resolved; !incident reopen first")

    def assign_role(
        self, incident: Incident, role: str, who: Actor, by: Actor, job_id: str = ""
    ) -> str:
        self.check_role(role)
        previous = incident.roles.get(role)
        if previous is not None and previous.id == who.id:
            raise IncidentRefusal(f"{who.shown} is already {role} of {incident.ref}")
        incident.roles[role] = who
        problems = []
        try:
            self.chat.add_member(incident.channel_id, who.id)
        except ChatRefused as exc:
            problems.append(f" (could not add {who.shown} to the channel: {exc})")
        verb = f"handed over from {previous.shown} to" if previous else "assigned to"
        text = f"{role} {verb} {who.shown}"
        self._change(incident, by, EventKind.ROLE, text, job_id, header=role == "commander")
        return text + "".join(problems)

    def set_severity(self, incident: Incident, severity: int, by: Actor, job_id: str = "") -> str:
        self._open(incident)
        if severity == incident.severity:
            raise IncidentRefusal(f"{incident.ref} is already {self._sev(severity)}")
        text = f"severity {self._sev(incident.severity)} → {self._sev(severity)}"
        incident.severity = severity
        self._change(incident, by, EventKind.SEVERITY, text, job_id, header=True)
        self._announce(incident, f"{incident.ref} {text}: {incident.title}")
        return text

    def _sev(self, severity: int) -> str:
        return self.config.severity_label(severity)

    def set_status(
        self, incident: Incident, status: Status, by: Actor, note: str = "", job_id: str = ""
    ) -> str:
        now = self.clock()
        if status is Status.ACTIVE:  # reopen
            if incident.open:
                raise IncidentRefusal(f"{incident.ref} is not resolved")
            incident.resolved_at = None
            word = "reopened"
        elif incident.status is status:
            raise IncidentRefusal(f"{incident.ref} is already {status}")
        elif status is Status.MITIGATED:
            self._open(incident)
            incident.mitigated_at = incident.mitigated_at or now
            word = "mitigated"
        else:
            incident.mitigated_at = incident.mitigated_at or now
            incident.resolved_at = now
            word = "resolved"
        incident.status = status
        text = word + (f": {note}" if note else "")
        self._change(incident, by, EventKind.STATUS, text, job_id, header=True)
        self._announce(incident, f"{incident.ref} {text} · {incident.title}")
        return f"{incident.ref} {text}"

    def status_update(self, incident: Incident, text: str, by: Actor, job_id: str = "") -> str:
        """A status update: on the timeline, broadcast to the stakeholder channel; it
        restarts the reminder clock."""
        incident.last_update_at = self.clock()
        incident.last_reminder_at = None
        self._change(incident, by, EventKind.UPDATE, text, job_id)
        problems = self._announce(
            incident,
            f"📣 {incident.ref} ({self._sev(incident.severity)}, {incident.status}) update "
            f"from {by.shown}: {text}",
        )
        if self.config.stakeholder_channel and not problems:
            return f"update posted to {self.config.stakeholder_channel}"
        return "update recorded" + (f"; {problems[0]}" if problems else "")

    def note(self, incident: Incident, text: str, by: Actor, job_id: str = "") -> str:
        self._change(incident, by, EventKind.NOTE, text, job_id)
        return "noted on the timeline"

    def follow_up(self, incident: Incident, text: str, by: Actor, job_id: str = "") -> str:
        incident.follow_ups.append(text)
        self._change(incident, by, EventKind.NOTE, f"follow-up: {text}", job_id)
        return f"follow-up {len(incident.follow_ups)} recorded for the post-mortem"

    def add_alert(self, incident: Incident, alert: AlertRef, by: Actor) -> None:
        """An alert routed to an open incident: on its timeline."""
        with self._lock:
            self._event(incident, EventKind.ALERT, by, self._alert_text(alert))

    @staticmethod
    def _alert_text(alert: AlertRef) -> str:
        text = f"alert {alert.name} ({alert.fingerprint})"
        return text + (f": {alert.summary}" if alert.summary else "")

    def pinned(self, incident: Incident, post: PostInfo, by: Actor) -> bool:
        """A post marked 📌 goes on the timeline once; the server's own ``system_*``
        posts and the bot's summary and checklist do not."""
        if post.is_system or post.id in (incident.summary_post_id, incident.checklist_post_id):
            return False
        author = self.chat.lookup(post.user_id)
        name = author.username if author else post.user_id
        text = f"📌 @{name}: {fit(post.message, 500)}"
        with self._lock:
            return self._event(incident, EventKind.PINNED, by, text, post_id=post.id)

    # ================================================================ checklist =====
    def _item(self, incident: Incident, number: int) -> ChecklistItem:
        if not 1 <= number <= len(incident.checklist):
            raise InvalidArgument(
                f"no checklist item {number} ({incident.ref} has {len(incident.checklist)})"
            )
        return incident.checklist[number - 1]

    def _checklist_changed(self, incident: Incident, by: Actor, text: str, job_id: str = "") -> str:
        self._change(incident, by, EventKind.CHECKLIST, text, job_id)
        if incident.checklist_post_id:
            self.chat.edit_message(incident.checklist_post_id, self.checklist(incident))
        return text

    def check_item(self, incident: Incident, number: int, done: bool, by: Actor, job_id="") -> str:
        item = self._item(incident, number)
        if item.done == done:
            raise IncidentRefusal(f"item {number} is already {'done' if done else 'open'}")
        item.done_by, item.done_at = (by.name, self.clock().isoformat()) if done else ("", "")
        word = "done" if done else "reopened"
        return self._checklist_changed(incident, by, f"item {number} {word}: {item.title}", job_id)

    def assign_item(self, incident: Incident, number: int, who: Actor, by: Actor, job_id="") -> str:
        item = self._item(incident, number)
        item.assignee = who.name
        text = f"item {number} assigned to {who.shown}: {item.title}"
        return self._checklist_changed(incident, by, text, job_id)

    def add_item(self, incident: Incident, title: str, by: Actor, job_id: str = "") -> str:
        incident.checklist.append(ChecklistItem(fit(title.strip(), 200)))
        text = f"item {len(incident.checklist)} added: {title.strip()}"
        return self._checklist_changed(incident, by, text, job_id)

    def item_to_run(self, incident: Incident, number: int) -> ChecklistItem:
        item = self._item(incident, number)
        if not item.action:
            raise IncidentRefusal(f"item {number} names no action to run")
        return item

    def item_ran(self, incident: Incident, number: int, by: Actor, job_id: str = "") -> str:
        item = self._item(incident, number)
        text = f"item {number} run by {by.shown}: {item.action} {item.args}".rstrip()
        return self._checklist_changed(incident, by, text, job_id)

    def item_finished(self, channel_id: str, action: str, actor_id: str, outcome: str) -> bool:
        """A runtime action ended in an incident channel: the checklist item that ran it
        (the oldest not done with that action) is marked with the outcome; done when it
        succeeded. False when no item was waiting for it."""
        with self._lock:
            incident = self.store.by_channel(channel_id)
            if incident is None:
                return False
            for number, item in enumerate(incident.checklist, 1):
                if item.action == action and not item.done and item.outcome.startswith("running"):
                    item.outcome = outcome
                    if outcome.startswith("succeeded"):
                        author = self.chat.lookup(actor_id)
                        item.done_by = author.username if author else actor_id
                        item.done_at = self.clock().isoformat()
                    self.store.save(incident)
                    if incident.checklist_post_id:
                        self.chat.edit_message(incident.checklist_post_id, self.checklist(incident))
                    log.info("%s checklist item %d: %s", incident.ref, number, outcome)
                    return True
        return False

    def mark_running(self, incident: Incident, number: int) -> None:
        with self._lock:
            item = self._item(incident, number)
            item.outcome = "running"
            self.store.save(incident)

    # ================================================================ reminders =====
    def due_reminders(self) -> list[Incident]:
        """Remind every open incident whose last update (or declaration) is older than its
        severity's cadence, once per cadence. Returns the incidents reminded."""
        reminded = []
        now = self.clock()
        with self._lock:
            for incident in self.store.open_incidents():
                cadence = self.config.severity(incident.severity).update_every
                last = max(
                    incident.last_update_at or incident.declared_at,
                    incident.last_reminder_at or incident.declared_at,
                )
                if now - last < cadence:
                    continue
                incident.last_reminder_at = now
                self.store.save(incident)
                commander = incident.roles.get("comms") or incident.roles.get("commander")
                who = f"{commander.shown}, " if commander else ""
                since = incident.last_update_at or incident.declared_at
                try:
                    self.chat.post_message(
                        incident.channel_id,
                        f"⏰ {who}no status update for {incident.ref} since {when(since)} "
                        f"({self._sev(incident.severity)} expects one every "
                        f"{minutes(cadence)}): !incident update <text>",
                    )
                except ChatError as exc:
                    log.warning("could not remind %s: %s", incident.ref, exc)
                reminded.append(incident)
        return reminded

    # ================================================================ views =====
    def header(self, incident: Incident) -> str:
        commander = incident.roles.get("commander")
        parts = [
            incident.ref,
            self._sev(incident.severity),
            str(incident.status),
            f"commander {commander.shown}" if commander else "no commander",
        ]
        if incident.service:
            parts.insert(2, f"service {incident.service}")
        return fit(" · ".join(parts), MAX_HEADER)

    def summary(self, incident: Incident) -> Outcome:
        rows: list[tuple[str, str]] = [
            ("severity", self._sev(incident.severity)),
            ("status", str(incident.status)),
        ]
        if incident.service:
            rows.append(("service", incident.service))
        for role in self.config.roles:
            actor = incident.roles.get(role)
            rows.append((role, actor.shown if actor else "unassigned"))
        rows += [
            ("started", when(incident.started_at)),
            ("declared", f"{when(incident.declared_at)} by {incident.declared_by.shown}"),
            ("last update", when(incident.last_update_at)),
        ]
        if incident.mitigated_at:
            rows.append(("mitigated", when(incident.mitigated_at)))
        if incident.resolved_at:
            rows.append(("resolved", when(incident.resolved_at)))
        if incident.alert:
            rows.append(("alert", f"{incident.alert.name} ({incident.alert.fingerprint})"))
        rows.append(("channel", f"~{incident.channel_name}"))
        done = sum(item.done for item in incident.checklist)
        return Outcome(
            f"🚨 {incident.ref}: {incident.title}",
            Table(("", ""), rows),
            Text(
                f"checklist {done}/{len(incident.checklist)} done · !incident update <text> · "
                "!incident note <text> · 📌 a post to put it on the timeline"
            ),
        )

    def checklist(self, incident: Incident) -> Outcome:
        rows = []
        for number, item in enumerate(incident.checklist, 1):
            state = f"✅ {item.done_by}" if item.done else "☐"
            if item.outcome and not item.done:
                state = f"☐ {item.outcome}"
            action = f"{item.action} {item.args}".strip()
            rows.append(
                (number, item.title, action, f"@{item.assignee}" if item.assignee else "", state)
            )
        done = sum(item.done for item in incident.checklist)
        return Outcome(
            f"Checklist of {incident.ref} ({incident.kind}): {done}/{len(incident.checklist)} done",
            Table(("#", "item", "action", "owner", "done"), rows),
        )

    def list_open(self) -> Table:
        return Table(
            ("incident", "severity", "status", "title", "channel", "commander"),
            [
                (
                    incident.ref,
                    self._sev(incident.severity),
                    str(incident.status),
                    incident.title,
                    f"~{incident.channel_name}",
                    incident.roles["commander"].shown if "commander" in incident.roles else "",
                )
                for incident in self.store.open_incidents()
            ],
            title="Open incidents",
        )
