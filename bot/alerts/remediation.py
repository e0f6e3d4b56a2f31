"""Remediation rules: a firing alert that matches a rule runs a registered action through
the runtime, as the rule's policy role, inside guardrails.

For each new firing alert state (never for a repeated notification: the store keeps each
state once) and each matching rule, in this order:

1. the rule is paused (``!remediation pause``) or its circuit breaker is open: skipped;
2. cooldown: the rule acted on this fingerprint less than ``cooldown`` ago: skipped;
3. ``max_targets``: the alerts of one batch would make the rule touch more distinct targets
   than this at once: none of them runs, and the channel is told (looks like an outage);
4. a freeze window is on: nothing runs; the thread says what would have run;
5. dry run (the rule's or the file's ``dry_run``): nothing runs; the thread says what would;
6. ``max_runs`` per ``window`` reached: skipped, and the channel told once per window;
7. otherwise the action is submitted to the runtime (``Rule`` caller: ``rule:<name>``
   holding ``as_role``, the alert fingerprint as trigger). ``require_approval`` makes it
   the runtime's two-person approval request instead. With ``silence: true`` an
   Alertmanager silence covers the alert while the run lasts, expired afterwards.

Then :meth:`Remediator.tick` follows each run through the audit log: a failure (failed,
timed out, denied, rejected, expired) counts towards ``breaker_after`` failures in a row,
which opens the breaker and says so in the channel until ``!remediation resume``. A success
with ``verify`` checks the real state ``verify_within`` later (a Prometheus query, or a read
action), not the alert's "resolved" (Alertmanager sends "resolved" when Prometheus itself
died): still unhealthy escalates with a mention and counts as a failure.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.alerts import templates
from bot.alerts.clients import Alertmanager, Prometheus
from bot.alerts.config import AlertsConfig, Rule
from bot.alerts.matchers import Matcher, matches_all
from bot.alerts.model import Status
from bot.alerts.posts import GroupId, GroupPosts
from bot.alerts.store import AlertStore, Event, RuleState, Run
from bot.errors import OpsroomError
from bot.runtime.actions import ActionSpec
from bot.runtime.audit import AuditEvent
from bot.runtime.callers import Rule as RuleCaller
from bot.runtime.runtime import Runtime
from bot.runtime.surface import Place

log = logging.getLogger(__name__)

ActionRef = tuple[ActionSpec, Any]  # the action and the plugin instance it belongs to
FAILED = {
    AuditEvent.FAILED: "failed",
    AuditEvent.TIMED_OUT: "timed out",
    AuditEvent.CANCELLED: "cancelled",
    AuditEvent.DENIED: "denied",
    AuditEvent.REJECTED: "rejected",
    AuditEvent.EXPIRED: "approval expired",
    AuditEvent.ABANDONED: "approval abandoned by a restart",
}
VERIFY_JOB_WAIT_SECONDS = 300


def command_of(spec: ActionSpec, values: Mapping[str, Any], prefix: str) -> str:
    """The run as a command someone could type (parameters in the action's order)."""
    words = " ".join(
        f"{p.name}={values[p.name]}" for p in spec.params if values.get(p.name) not in ("", None)
    )
    return f"{prefix}{spec.name.replace('.', ' ')} {words}".strip()


class Remediator:
    def __init__(
        self,
        config: AlertsConfig,
        store: AlertStore,
        runtime: Runtime,
        actions: Callable[[], Mapping[str, ActionRef]],
        posts: GroupPosts,
        clock: Callable[[], float],
        alertmanager: Alertmanager | None = None,
        prometheus: Prometheus | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.runtime = runtime
        self.actions = actions
        self.posts = posts
        self.clock = clock
        self.alertmanager = alertmanager
        self.prometheus = prometheus
        self._verifiers = ThreadPoolExecutor(2, thread_name_prefix="opsroom-verify")
        self._checking: set[int] = set()

    def close(self) -> None:
        self._verifiers.shutdown(wait=False, cancel_futures=True)

    def _say(self, place: Place | None, text: str) -> None:
        if place is not None:
            self.runtime.surface.post(place, self.runtime.redactor.scrub(text))

    # --- deciding -------------------------------------------------------------------------
    def consider(self, events: list[tuple[Event, GroupId | None]]) -> None:
        """Decide, for every new firing alert state and every matching rule."""
        firing = [(e, g) for e, g in events if e.alert.status is Status.FIRING]
        for rule in self.config.rules:
            if not rule.action:
                continue  # a rule that only declares incidents (bot.alerts.incidents)
            matched = [(e, g) for e, g in firing if matches_all(rule.matchers, e.alert.labels)]
            if matched:
                self._rule(rule, matched)

    def _rule(self, rule: Rule, matched: list[tuple[Event, GroupId | None]]) -> None:
        ref = self.actions().get(rule.action)
        now = self.clock()
        state = self.store.rule_state(rule.name)
        planned = []
        for event, group in matched:
            if state.paused or state.tripped:
                why = "paused" if state.paused else "circuit breaker open"
                self.store.claim_run(rule.name, event, "skipped", why, now)
                continue
            last = self.store.last_run(
                rule.name, event.alert.fingerprint, ("run", "dry-run", "frozen")
            )
            if last is not None and now - last.started_at < rule.cooldown.total_seconds():
                self.store.claim_run(rule.name, event, "skipped", "cooldown", now)
                continue
            if ref is None:
                self.store.claim_run(rule.name, event, "skipped", "action not loaded", now)
                log.error("rule %s: action %s is not loaded", rule.name, rule.action)
                continue
            try:
                raw = {k: templates.render(v, event.alert) for k, v in rule.arguments.items()}
            except templates.MissingLabel as exc:
                if self.store.claim_run(
                    rule.name, event, "skipped", "no such label", now, str(exc)
                ):
                    self._say(
                        self._place(group),
                        f"⚠️ rule {rule.name} cannot act on {event.alert.name}: {exc}",
                    )
                continue
            planned.append((event, group, raw))
        if not planned or ref is None:
            return
        spec, plugin = ref
        targets = {
            raw.get(spec.target, "") if spec.target else e.alert.fingerprint
            for e, _, raw in planned
        }
        if len(targets) > rule.max_targets:
            claimed = [
                self.store.claim_run(
                    rule.name, e, "skipped", "too many targets", now, f"{len(targets)} targets"
                )
                for e, _, _ in planned
            ]
            if any(claimed):
                mention = " ".join(
                    rule.mention or self.posts.mentions(self._channel(planned[0][1]))
                )
                self._say(
                    self._channel_place(planned[0][1]),
                    f"🚧 rule {rule.name} would touch {len(targets)} targets at once "
                    f"(max_targets {rule.max_targets}): nothing was run; this looks wider than "
                    f"one failure and needs a person {mention}".rstrip(),
                )
            return
        for event, group, raw in planned:
            self._act(rule, spec, plugin, event, group, raw, now)

    def _channel(self, group: GroupId | None) -> str:
        return group[2] if group else ""

    def _place(self, group: GroupId | None) -> Place | None:
        return self.posts.thread(group) if group else None

    def _channel_place(self, group: GroupId | None) -> Place | None:
        return self.posts.place(group[2]) if group else None

    def _freeze(self, now: float) -> str | None:
        when = datetime.fromtimestamp(now, UTC)
        for window in self.config.freeze:
            if window.covers(when):
                until = window.end.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
                return f"freeze until {until}" + (f" ({window.reason})" if window.reason else "")
        return None

    def _act(
        self,
        rule: Rule,
        spec: ActionSpec,
        plugin: Any,
        event: Event,
        group: GroupId | None,
        raw: dict[str, str],
        now: float,
    ) -> None:
        alert = event.alert
        command = command_of(spec, raw, self.runtime.prefix)
        frozen = self._freeze(now)
        if frozen:
            if self.store.claim_run(rule.name, event, "frozen", "frozen", now, frozen):
                self._say(
                    self._place(group),
                    f"🧊 {frozen}: rule {rule.name} would have run `{command}` for alert "
                    f"{alert.name}; nothing was run",
                )
            return
        if rule.dry_run or self.config.dry_run:
            if self.store.claim_run(rule.name, event, "dry-run", "dry run", now, command):
                self._say(
                    self._place(group),
                    f"🧪 dry run: rule {rule.name} would run `{command}` as role {rule.as_role} "
                    f"for alert {alert.name} ({alert.fingerprint}); nothing was run",
                )
            return
        window_start = now - rule.window.total_seconds()
        if self.store.runs_since(rule.name, window_start) >= rule.max_runs:
            told = self.store.runs_since(rule.name, window_start, mode="capped")
            if (
                self.store.claim_run(rule.name, event, "capped", "max runs", now, command)
                and not told
            ):
                self._say(
                    self._channel_place(group),
                    f"🚧 rule {rule.name} has run {rule.max_runs} times in the last "
                    f"{_human(rule.window)}: not running `{command}` for alert {alert.name}; "
                    "further matches in this window are skipped quietly",
                )
            return
        run_id = self.store.claim_run(rule.name, event, "run", "started", now)
        if run_id is None:
            return  # decided before (the event is being processed again after a restart)
        place = self._place(group)
        silence_id = self._silence(rule, alert.labels, spec) if rule.silence else ""
        effective = dataclasses.replace(spec, approval=True) if rule.require_approval else spec
        caller = RuleCaller(rule.name, rule.as_role, alert=alert.fingerprint, alert_name=alert.name)
        job_id = self.runtime.submit(effective, plugin, raw, caller, place=place).job_id
        state = "awaiting approval" if rule.require_approval else "started"
        self.store.update_run(
            run_id,
            state=state if job_id else "failed",
            detail="" if job_id else "refused or denied before it ran (see the audit log)",
            command=command,
            job_id=job_id,
            route=self._channel(group),
            channel=place.channel if place else "",
            thread=place.thread if place else "",
            silence_id=silence_id,
        )
        if not job_id:
            run = self.store.run(run_id)
            assert run is not None
            self._finished(rule, run, "refused or denied before it ran", success=False)

    def _silence(self, rule: Rule, labels: Mapping[str, str], spec: ActionSpec) -> str:
        if self.alertmanager is None:
            return ""
        duration = timedelta(seconds=spec.timeout) + (rule.verify_within or timedelta())
        try:
            return self.alertmanager.silence(
                [Matcher(k, "=", v) for k, v in sorted(labels.items())],
                duration,
                f"opsroom: rule {rule.name} is remediating this alert",
                f"opsroom rule {rule.name}",
            )
        except OpsroomError as exc:
            log.warning("rule %s: could not create a silence: %s", rule.name, exc)
            return ""

    # --- following runs -------------------------------------------------------------------
    def tick(self) -> None:
        """Follow open runs: job outcomes (from the audit log), then due verifications."""
        now = self.clock()
        for run in self.store.open_runs():
            rule = self.config.rule(run.rule)
            if rule is None:
                self.store.update_run(run.id, state="orphaned", detail="rule no longer configured")
                continue
            if run.state == "verifying":
                if (
                    run.verify_at is not None
                    and now >= run.verify_at
                    and run.id not in self._checking
                ):
                    self._checking.add(run.id)
                    self._verifiers.submit(self._verify, rule, run)
                continue
            self._follow(rule, run, now)

    def _follow(self, rule: Rule, run: Run, now: float) -> None:
        job = self.runtime.executor.get(run.job_id)
        if job is not None and not job.status.finished:
            if run.state == "awaiting approval":
                self.store.update_run(run.id, state="started")
            return  # still queued or running: nothing in the audit log to read yet
        records = self.runtime.audit.by_job(run.job_id)
        events = [r.event for r in records]
        if AuditEvent.STARTED in events and run.state == "awaiting approval":
            self.store.update_run(run.id, state="started")
        last = events[-1] if events else None
        if last == AuditEvent.SUCCEEDED:
            if rule.verify is not None and rule.verify_within is not None:
                self.store.update_run(
                    run.id, state="verifying", verify_at=now + rule.verify_within.total_seconds()
                )
            else:
                self._finished(rule, run, "succeeded", success=True)
        elif last == AuditEvent.INTERRUPTED:
            self.store.update_run(run.id, state="interrupted", detail="the bot restarted")
            self._expire_silence(run)
        elif last in FAILED:
            self._finished(rule, run, FAILED[last], success=False)

    def _verify(self, rule: Rule, run: Run) -> None:
        try:
            healthy, detail = self._check(rule, run)
        except Exception as exc:
            healthy, detail = False, f"the check failed: {exc}"
        finally:
            self._checking.discard(run.id)
        if healthy:
            self._finished(rule, run, f"recovered: {detail}", success=True, state="recovered")
            self._say(
                self._run_place(run), f"✅ rule {rule.name}: {run.alert_name} recovered ({detail})"
            )
            return
        self._finished(rule, run, f"not recovered: {detail}", success=False, state="not recovered")
        mentions = " ".join(rule.mention or self.posts.mentions(run.route))
        assert rule.verify_within is not None
        within = _human(rule.verify_within)
        self._say(
            self._run_place(run),
            f"🚨 rule {rule.name} ran `{run.command}` but {run.alert_name} has not recovered "
            f"after {within} ({detail}): a person is needed {mentions}".rstrip(),
        )

    def _check(self, rule: Rule, run: Run) -> tuple[bool, str]:
        verify = rule.verify
        assert verify is not None
        current = self.store.current(run.fingerprint)
        if current is None:
            return False, "the alert is no longer known"
        if verify.prometheus is not None:
            assert self.prometheus is not None
            return self.prometheus.healthy(templates.render(verify.prometheus, current.alert))
        assert verify.action is not None
        ref = self.actions().get(verify.action)
        if ref is None:
            return False, f"{verify.action} is not loaded"
        spec, plugin = ref
        values = {k: templates.render(v, current.alert) for k, v in verify.arguments.items()}
        caller = RuleCaller(
            rule.name, rule.as_role, alert=run.fingerprint, alert_name=run.alert_name
        )
        job_id = self.runtime.submit(
            spec, plugin, values, caller, place=self._run_place(run)
        ).job_id
        job = self.runtime.executor.get(job_id) if job_id else None
        if job is None:
            return False, f"{verify.action} was refused"
        status = job.wait(VERIFY_JOB_WAIT_SECONDS)
        return status.value == "succeeded", f"{verify.action} {status.value}"

    def _run_place(self, run: Run) -> Place | None:
        return Place(run.channel, run.thread) if run.channel else None

    def _finished(
        self, rule: Rule, run: Run, detail: str, *, success: bool, state: str = ""
    ) -> None:
        self.store.update_run(
            run.id, state=state or ("succeeded" if success else "failed"), detail=detail
        )
        self._expire_silence(run)
        current = self.store.rule_state(rule.name)
        if success:
            if current.failures:
                self.store.set_rule_state(rule.name, dataclasses.replace(current, failures=0))
            return
        failures = current.failures + 1
        trip = failures >= rule.breaker_after and not current.tripped
        self.store.set_rule_state(
            rule.name,
            RuleState(
                failures, current.tripped or trip, current.paused, detail if trip else current.note
            ),
        )
        if trip:
            place = Place(run.channel) if run.channel else None
            mentions = " ".join(rule.mention or self.posts.mentions(run.route))
            self._say(
                place,
                f"⛔ circuit breaker: rule {rule.name} stopped after {failures} failures in a row "
                f"(last: {run.alert_name}, {detail}). Nothing more runs automatically until "
                f"`{self.runtime.prefix}remediation resume {rule.name}` {mentions}".rstrip(),
            )

    def _expire_silence(self, run: Run) -> None:
        if run.silence_id and self.alertmanager is not None:
            try:
                self.alertmanager.expire(run.silence_id)
            except OpsroomError as exc:
                log.warning("could not expire silence %s: %s", run.silence_id, exc)
            self.store.update_run(run.id, silence_id="")

    # --- commands ---------------------------------------------------------------------------
    def pause(self, name: str, note: str) -> RuleState:
        state = dataclasses.replace(self.store.rule_state(name), paused=True, note=note)
        self.store.set_rule_state(name, state)
        return state

    def resume(self, name: str) -> RuleState:
        state = RuleState()
        self.store.set_rule_state(name, state)
        return state


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
