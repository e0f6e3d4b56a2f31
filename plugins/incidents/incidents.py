"""``!incident ...``: war rooms, roles, checklists, status updates, post-mortems, metrics.

The chat face of ``bot.incidents``. Every incident command is a runtime action (policy,
audit, echo); the commands about one incident are taken in that incident's channel, which
names the incident (``target``: the runtime locks and audits per incident).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Annotated, Any

from errbot import BotPlugin, botcmd
from pydantic import Field, StringConstraints

from bot.backends.actions import person_of, place_of, post_id_of, runtime_for, surface_for, whois
from bot.backends.surfaces import MattermostIncidentChat
from bot.durations import parse_duration
from bot.errors import ChatError
from bot.incidents import alerts
from bot.incidents.config import load_incidents_config
from bot.incidents.metrics import chart_png, metrics_table, trend
from bot.incidents.model import Actor, AlertRef, Status, utcnow
from bot.incidents.postmortem import PostMortem
from bot.incidents.service import IncidentRefusal, IncidentService, when
from bot.incidents.store import FILENAME, IncidentStore
from bot.incidents.timeline import FINAL, timeline
from bot.plugin import (
    ActionContext,
    ActionFailed,
    Arg,
    Caller,
    Outcome,
    Person,
    Refusal,
    Risk,
    Rule,
    Table,
    Text,
)
from bot.runtime.actions import ACTION_ATTRIBUTE, ActionSpec, declare
from bot.runtime.audit import AuditRecord
from bot.runtime.surface import Place
from bot.settings import get_settings

IncidentId = Annotated[str, StringConstraints(pattern=r"^INC-[0-9]{1,9}$")]
SEVERITY_HELP = "a severity from 1 (critical) to 4 (low)"
Severity = Annotated[int, Field(ge=1, le=4), Arg(help=SEVERITY_HELP)]
MaybeSeverity = Annotated[int | None, Field(ge=1, le=4), Arg(help=SEVERITY_HELP)]
Title = Annotated[str, StringConstraints(min_length=3, max_length=200), Arg(help="a title")]
Words = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,39}$")]
User = Annotated[str, StringConstraints(pattern=r"^@?[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Item = Annotated[int, Field(ge=1, le=500), Arg(help="a checklist item number")]

PUSHPIN = "pushpin"  # 📌


def actor_of(caller: Caller) -> Actor:
    if isinstance(caller, Person):
        return Actor(caller.principal.user_id, caller.principal.username)
    return Actor(caller.principal.user_id, caller.describe(), human=False)


def bind(spec: ActionSpec, args: str, text: str | None) -> dict[str, Any]:
    """Chat words to values: ``name=value`` for the action's parameters, the other words
    either the free text (``text``) or, in order, the remaining parameters."""
    names = {param.name for param in spec.params} - {"incident", text or ""}
    values: dict[str, Any] = {}
    words: list[str] = []
    for word in args.split():
        key, eq, value = word.partition("=")
        if eq and key in names:
            if key in values:
                raise Refusal(f"{key} given twice")
            values[key] = value
        else:
            words.append(word)
    if text is not None:
        if words:
            values[text] = " ".join(words)
        return values
    free = [p.name for p in spec.params if p.name in names and p.name not in values]
    if len(words) > len(free):
        raise Refusal(f"unexpected argument {words[len(free)]!r}; usage: {spec.usage()}")
    values.update(zip(free, words, strict=False))
    return values


def incident_command(
    name: str,
    *,
    risk: Risk = Risk.CHANGE,
    in_incident: bool = True,
    text: str | None = None,
    check: Callable[[Any, Mapping[str, Any]], None] | None = None,
) -> Callable[[Callable[..., Any]], Any]:
    """An incident action and its chat command. ``in_incident``: taken only in an incident's
    channel, which gives the ``incident`` parameter (and is the action's target)."""
    declaration = declare(
        name,
        risk=risk,
        target="incident" if in_incident else None,
        check=check,
        timeout=120,
    )

    def decorate(func: Callable[..., Any]) -> Any:
        spec: ActionSpec = getattr(declaration(func), ACTION_ATTRIBUTE)

        def command(self: Incidents, msg: Any, args: str) -> None:
            self.submit(spec, msg, args or "", in_incident, text)

        command.__name__ = func.__name__
        command.__doc__ = spec.help()
        setattr(command, ACTION_ATTRIBUTE, spec)
        return botcmd(name=spec.name.replace(".", "_"))(command)

    return decorate


def _incident(plugin: Incidents, values: Mapping[str, Any]) -> None:
    plugin.service.incident(values["incident"])


def _open(plugin: Incidents, values: Mapping[str, Any]) -> None:
    if not plugin.service.incident(values["incident"]).open:
        raise IncidentRefusal(f"{values['incident']} is resolved; !incident reopen first")


def _declaration(plugin: Incidents, values: Mapping[str, Any]) -> None:
    plugin.service.chat  # noqa: B018  (refuses on a backend without channels)
    plugin.service.check_declaration(values["service"], values["commander"], values["type"])
    if values["started"]:
        _started(values["started"])


def _started(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise IncidentRefusal(f"started: not an ISO time ({text!r})") from None


def _role(plugin: Incidents, values: Mapping[str, Any]) -> None:
    plugin.service.incident(values["incident"])
    plugin.service.check_role(values["role"])
    plugin.service.person(values["user"])


def _assignee(plugin: Incidents, values: Mapping[str, Any]) -> None:
    plugin.service.incident(values["incident"])
    plugin.service.person(values["user"])


def _runnable(plugin: Incidents, values: Mapping[str, Any]) -> None:
    incident = plugin.service.incident(values["incident"])
    item = plugin.service.item_to_run(incident, values["item"])
    plugin.action_named(item.action)


def _status(target: Status) -> Callable[[Incidents, Mapping[str, Any]], None]:
    def check(plugin: Incidents, values: Mapping[str, Any]) -> None:
        incident = plugin.service.incident(values["incident"])
        if target is Status.ACTIVE and incident.open:
            raise IncidentRefusal(f"{incident.ref} is not resolved")
        if target is not Status.ACTIVE and incident.status is target:
            raise IncidentRefusal(f"{incident.ref} is already {target}")
        if target is Status.MITIGATED and not incident.open:
            raise IncidentRefusal(f"{incident.ref} is resolved; !incident reopen first")

    return check


class Incidents(BotPlugin):  # type: ignore[misc]
    """Incident response: !incident declare, roles, checklists, updates, post-mortems."""

    def activate(self) -> None:
        super().activate()
        settings = get_settings()
        config = load_incidents_config(settings.opsroom_incidents)
        surface = surface_for(self._bot)
        chat = surface if isinstance(surface, MattermostIncidentChat) else None
        self.store = IncidentStore(settings.opsroom_data_dir / FILENAME)
        self.service = IncidentService(config, self.store, chat)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="incidents")
        runtime = runtime_for(self._bot)
        runtime.add_listener(self._on_record)
        declare_spec = getattr(Incidents.declare, ACTION_ATTRIBUTE)
        alerts.register(
            runtime,
            lambda values, caller, place: (
                runtime.submit(declare_spec, self, values, caller, place).job_id or None
            ),
            self.service,
        )
        interval = settings.opsroom_incident_reminder_check.total_seconds()
        self.start_poller(interval, self._remind)

    def deactivate(self) -> None:
        runtime = runtime_for(self._bot)
        runtime.remove_listener(self._on_record)
        alerts.unregister(runtime)
        self._worker.shutdown(wait=True)
        self.store.close()
        super().deactivate()

    # --- glue ------------------------------------------------------------------------------
    def submit(
        self, spec: ActionSpec, msg: Any, args: str, in_incident: bool, text: str | None
    ) -> None:
        bot = self._bot
        runtime = runtime_for(bot)
        place, person, post_id = place_of(bot, msg), person_of(bot, msg.frm), post_id_of(msg)
        try:
            values = bind(spec, args, text)
            if in_incident:
                values["incident"] = self.service.in_channel(place.channel).ref
        except Refusal as exc:
            command = spec.name.replace(".", " ")
            notice = runtime.deny_command(command, person, str(exc), place, post_id)
            surface_for(bot).post(place, notice)
            return
        runtime.submit(spec, self, values, person, place, post_id)

    def action_named(self, name: str) -> tuple[ActionSpec, Any]:
        for command in self._bot.all_commands.values():
            spec = getattr(command, ACTION_ATTRIBUTE, None)
            if spec is not None and spec.name == name:
                return spec, command.__self__
        raise IncidentRefusal(f"no action {name} is loaded (the checklist names it)")

    def _on_record(self, record: AuditRecord) -> None:
        """A run ended in some channel: a checklist item waiting for it takes its outcome."""
        if record.event not in FINAL or not record.channel_id:
            return
        if record.action.startswith("incident."):
            return
        outcome = f"{record.event.value} · audit {record.id}"
        self._worker.submit(
            self.service.item_finished, record.channel_id, record.action, record.actor_id, outcome
        )

    def _remind(self) -> None:
        with contextlib.suppress(Refusal):  # no chat to remind in (terminal backend)
            self.service.due_reminders()

    def callback_reaction(self, reaction: Any) -> None:
        """📌 on a post in an incident channel puts the post on the timeline."""
        if reaction.reaction_name != PUSHPIN or getattr(reaction, "action", "added") != "added":
            return
        target = reaction.reacted_to or {}
        incident = self.store.by_channel(target.get("channel_id", ""))
        if incident is None:
            return
        who = whois(self._bot, reaction.reactor)
        post = self.service.chat.get_post(target.get("id", ""))
        if post is not None and self.service.pinned(
            incident, post, Actor(who.user_id, who.username)
        ):
            self.log.info("%s: post %s pinned to the timeline", incident.ref, post.id)

    @staticmethod
    def _failing(call: Callable[[], Any]) -> Any:
        """Run a change; a refusal met inside the job (the state changed since the check)
        is its failure, explained."""
        try:
            return call()
        except Refusal as exc:
            raise ActionFailed(str(exc)) from None
        except ChatError as exc:
            raise ActionFailed(f"Mattermost: {exc}") from None

    # --- declare ---------------------------------------------------------------------------
    @incident_command("incident.declare", in_incident=False, text="title", check=_declaration)
    def declare(
        self,
        ctx: ActionContext,
        title: Title,
        sev: MaybeSeverity = None,
        service: Name | None = "",
        commander: User = "",
        type: Name | None = "",
        started: str = "",
    ) -> Outcome:
        """Declare an incident: a war room with responders, a pinned summary and a checklist."""
        svc = self.service
        alert = None
        caller = ctx.caller
        if isinstance(caller, Rule) and caller.alert:
            start = _started(started) if started else None
            alert = AlertRef(caller.alert, caller.alert_name or caller.alert, start)
        chosen = svc.person(commander) if commander else None
        incident, problems = self._failing(
            lambda: svc.declare(
                title,
                declared_by=actor_of(caller),
                severity=sev,
                service=service or "",
                commander=chosen,
                kind=type or "",
                alert=alert,
                job_id=ctx.job_id,
            )
        )
        return Outcome(
            f"{incident.ref} declared ({svc.config.severity_label(incident.severity)}): "
            f"~{incident.channel_name}",
            *(Text(f"⚠️ {problem}") for problem in problems),
        )

    # --- roles -----------------------------------------------------------------------------
    @incident_command("incident.role", check=_role)
    def role(self, ctx: ActionContext, incident: IncidentId, role: Name, user: User) -> str:
        """Assign a role or hand it over: !incident role comms @bob."""
        svc = self.service
        return self._failing(
            lambda: svc.assign_role(
                svc.incident(incident), role, svc.person(user), actor_of(ctx.caller), ctx.job_id
            )
        )

    # --- status ----------------------------------------------------------------------------
    @incident_command("incident.update", text="text", check=_incident)
    def update(self, ctx: ActionContext, incident: IncidentId, text: Words) -> str:
        """Post a status update (broadcast to the stakeholder channel)."""
        svc = self.service
        return self._failing(
            lambda: svc.status_update(
                svc.incident(incident), text, actor_of(ctx.caller), ctx.job_id
            )
        )

    @incident_command("incident.severity", check=_open)
    def severity(self, ctx: ActionContext, incident: IncidentId, sev: Severity) -> str:
        """Change the severity: !incident severity 1."""
        svc = self.service
        return self._failing(
            lambda: svc.set_severity(svc.incident(incident), sev, actor_of(ctx.caller), ctx.job_id)
        )

    def _set_status(self, ctx: ActionContext, incident: str, status: Status, text: str) -> str:
        svc = self.service
        return self._failing(
            lambda: svc.set_status(
                svc.incident(incident), status, actor_of(ctx.caller), text, ctx.job_id
            )
        )

    @incident_command("incident.mitigated", text="text", check=_status(Status.MITIGATED))
    def mitigated(self, ctx: ActionContext, incident: IncidentId, text: str = "") -> str:
        """Mark the incident mitigated (the impact has stopped)."""
        return self._set_status(ctx, incident, Status.MITIGATED, text)

    @incident_command("incident.resolved", text="text", check=_status(Status.RESOLVED))
    def resolved(self, ctx: ActionContext, incident: IncidentId, text: str = "") -> str:
        """Mark the incident resolved."""
        return self._set_status(ctx, incident, Status.RESOLVED, text)

    @incident_command("incident.reopen", text="text", check=_status(Status.ACTIVE))
    def reopen(self, ctx: ActionContext, incident: IncidentId, text: str = "") -> str:
        """Reopen a resolved incident."""
        return self._set_status(ctx, incident, Status.ACTIVE, text)

    @incident_command("incident.note", text="text", check=_incident)
    def note(self, ctx: ActionContext, incident: IncidentId, text: Words) -> str:
        """Add a note to the timeline."""
        svc = self.service
        return self._failing(
            lambda: svc.note(svc.incident(incident), text, actor_of(ctx.caller), ctx.job_id)
        )

    @incident_command("incident.followup", text="text", check=_incident)
    def followup(self, ctx: ActionContext, incident: IncidentId, text: Words) -> str:
        """Record a follow-up for the post-mortem."""
        svc = self.service
        return self._failing(
            lambda: svc.follow_up(svc.incident(incident), text, actor_of(ctx.caller), ctx.job_id)
        )

    # --- checklist -------------------------------------------------------------------------
    @incident_command("incident.checklist", risk=Risk.READ, check=_incident)
    def checklist(self, ctx: ActionContext, incident: IncidentId) -> Outcome:
        """Show the checklist."""
        return self.service.checklist(self.service.incident(incident))

    @incident_command("incident.checklist.done", check=_incident)
    def checklist_done(self, ctx: ActionContext, incident: IncidentId, item: Item) -> str:
        """Tick a checklist item: !incident checklist done 2."""
        svc = self.service
        return self._failing(
            lambda: svc.check_item(
                svc.incident(incident), item, True, actor_of(ctx.caller), ctx.job_id
            )
        )

    @incident_command("incident.checklist.assign", check=_assignee)
    def checklist_assign(
        self, ctx: ActionContext, incident: IncidentId, item: Item, user: User
    ) -> str:
        """Give a checklist item an owner: !incident checklist assign 2 @bob."""
        svc = self.service
        return self._failing(
            lambda: svc.assign_item(
                svc.incident(incident), item, svc.person(user), actor_of(ctx.caller), ctx.job_id
            )
        )

    @incident_command("incident.checklist.add", text="text", check=_incident)
    def checklist_add(self, ctx: ActionContext, incident: IncidentId, text: Words) -> str:
        """Add a checklist item."""
        svc = self.service
        return self._failing(
            lambda: svc.add_item(svc.incident(incident), text, actor_of(ctx.caller), ctx.job_id)
        )

    @incident_command("incident.checklist.run", check=_runnable)
    def checklist_run(self, ctx: ActionContext, incident: IncidentId, item: Item) -> str:
        """Run the action a checklist item names (authorized and audited as usual)."""
        svc = self.service
        found = svc.incident(incident)
        step = svc.item_to_run(found, item)
        spec, plugin = self.action_named(step.action)
        svc.mark_running(found, item)
        text = self._failing(lambda: svc.item_ran(found, item, actor_of(ctx.caller), ctx.job_id))
        runtime_for(self._bot).submit(spec, plugin, step.args, ctx.caller, Place(found.channel_id))
        return f"{text} (its own request follows)"

    # --- reading ---------------------------------------------------------------------------
    @incident_command("incident.list", risk=Risk.READ, in_incident=False)
    def list_incidents(self, ctx: ActionContext) -> Table:
        """List the open incidents."""
        return self.service.list_open()

    @incident_command("incident.timeline", risk=Risk.READ, check=_incident)
    def show_timeline(self, ctx: ActionContext, incident: IncidentId) -> Table:
        """The timeline so far, with audit ids."""
        found = self.service.incident(incident)
        entries = timeline(found, self.store, runtime_for(self._bot).audit)
        return Table(
            ("time (UTC)", "who", "what", "audit"),
            [(e.at.strftime("%H:%M:%S"), e.who, e.what, e.audit_id) for e in entries],
            title=f"Timeline of {found.ref}",
        )

    @incident_command("incident.postmortem", risk=Risk.READ, check=_incident)
    def postmortem(self, ctx: ActionContext, incident: IncidentId) -> str:
        """Write the post-mortem and post it as a Markdown file."""
        found = self.service.incident(incident)
        document = PostMortem(found, self.service.config, self.store, runtime_for(self._bot).audit)
        filename = f"postmortem-{found.ref}.md"
        self._failing(
            lambda: self.service.chat.upload(
                found.channel_id,
                filename,
                document.markdown().encode(),
                f"Post-mortem of {found.ref}: {found.title}",
            )
        )
        return (
            f"post-mortem posted as {filename}: {len(document.entries)} timeline entries, "
            f"{len(document.actions)} actions"
        )

    @incident_command("incident.metrics", risk=Risk.READ, in_incident=False)
    def metrics(self, ctx: ActionContext, period: str = "30d") -> Outcome:
        """MTTA, MTTM and MTTR by severity and service over a period, with a trend chart."""
        try:
            length = parse_duration(period)
        except ValueError as exc:
            raise ActionFailed(f"period: {exc}") from None
        until = utcnow()
        since = until - length
        incidents = self.store.declared_between(since, until)
        table = metrics_table(incidents, self.service.config, since, until)
        points = trend(incidents, since, until)
        place = ctx.place
        note = "no chart (nowhere to upload it)"
        if place is not None and self.service._chat is not None:
            png = chart_png(points, f"MTTA / MTTM / MTTR, last {period}")
            self._failing(
                lambda: self.service.chat.upload(
                    place.channel, f"incident-trend-{period}.png", png, f"Trend, last {period}"
                )
            )
            note = f"trend chart uploaded ({len(points)} points)"
        return Outcome(f"{len(incidents)} incident(s) since {when(since)}; {note}", table)
