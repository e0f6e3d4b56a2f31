"""The action runtime: authorize, confirm or approve, run as a job, record every step.

Chat-free: a :class:`Caller` says where a request came from and how to answer there (post a
message, edit it), so the same path serves chat commands, alert rules and tests. Every step
is an audit record first; what the channel is told is rendered from that record and carries
its id.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.errors import Refusal
from bot.outcomes import as_outcome
from bot.redaction import Redactor
from bot.rendering import MarkdownRenderer
from bot.runtime.actions import ActionSpec
from bot.runtime.approvals import ApprovalBook, ApprovalError, Kind
from bot.runtime.audit import AuditEvent, AuditRecord, AuditStore
from bot.runtime.jobs import Job, JobContext, JobExecutor, JobStatus, TargetBusy
from bot.runtime.policy import Policy, Principal, Risk

log = logging.getLogger(__name__)

FINAL_EVENTS = {
    JobStatus.SUCCEEDED: AuditEvent.SUCCEEDED,
    JobStatus.FAILED: AuditEvent.FAILED,
    JobStatus.CANCELLED: AuditEvent.CANCELLED,
    JobStatus.TIMED_OUT: AuditEvent.TIMED_OUT,
}
ICONS = {
    AuditEvent.SUCCEEDED: "✅",
    AuditEvent.FAILED: "❌",
    AuditEvent.CANCELLED: "🛑",
    AuditEvent.TIMED_OUT: "⌛",
    AuditEvent.INTERRUPTED: "⚠️",
}
MAX_RESULT_CHARS = 3000
ACK_WAIT_SECONDS = 10


@dataclass
class Caller:
    """Who asks, from where, and how to answer there.

    ``say(text)`` posts a new message and returns a handle (or None); ``edit(handle, text)``
    replaces that message (live progress). Without ``edit`` updates are posted anew.
    ``on_posted(handle, callback)`` calls back with the message's post id once it exists
    (for decisions by reaction on a request message).
    """

    principal: Principal
    trigger: str = "chat"
    channel_id: str = ""
    post_id: str = ""
    say: Callable[[str], Any] = lambda text: None
    edit: Callable[[Any, str], None] | None = None
    on_posted: Callable[[Any, Callable[[str], None]], None] | None = None
    attach: Callable[[str, bytes, str], Any] | None = None  # (filename, content, message)


class ActionContext:
    """What an action's function gets as ``ctx``: its job's context (progress, check, wait,
    on_cancel, cancelled) plus :meth:`attach` to hand long output to the conversation."""

    def __init__(self, job: JobContext, caller: Caller, scrub: Callable[[str], str]) -> None:
        self._job = job
        self._caller = caller
        self._scrub = scrub

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    def attach(self, filename: str, text: str, message: str = "") -> bool:
        """Attach ``text`` (secrets scrubbed) as a file where the request was made.
        False where files cannot be attached (the result then has to say it all)."""
        if self._caller.attach is None:
            return False
        self._caller.attach(filename, self._scrub(text).encode(), self._scrub(message))
        return True


@dataclass
class _Run:
    """One invocation, from request to final record."""

    spec: ActionSpec
    plugin: Any
    values: dict[str, Any]
    caller: Caller
    correlation_id: str
    handle: Any = None
    job: Job | None = None
    started: float = field(default_factory=time.monotonic)
    # Set once the first message about the run exists: updates wait for it, so a job that
    # ends at once cannot have its result overtaken by its own acknowledgement.
    acked: threading.Event = field(default_factory=threading.Event)

    @property
    def target(self) -> str:
        return self.spec.target_of(self.values)

    @property
    def environment(self) -> str:
        return self.spec.environment_of(self.plugin, self.values)

    def command(self, prefix: str) -> str:
        """The request as a command someone could type again."""
        words = " ".join(f"{key}={value}" for key, value in self.values.items())
        return f"{prefix}{self.spec.name.replace('.', ' ')} {words}".strip()


class Runtime:
    """Authorization, approvals, jobs and audit for every action. Thread-safe."""

    def __init__(
        self,
        *,
        policy: Policy,
        audit: AuditStore,
        executor: JobExecutor,
        redactor: Redactor,
        book: ApprovalBook | None = None,
        prefix: str = "!",
        audit_channel: Callable[[str], Any] | None = None,
    ) -> None:
        self.policy = policy
        self.audit = audit
        self.executor = executor
        self.redactor = redactor
        self.book = book or ApprovalBook()
        self.prefix = prefix
        self.audit_channel = audit_channel
        self._lock = threading.Lock()
        self._pending: dict[str, _Run] = {}  # approval/confirmation id -> the waiting run
        self._runs: dict[str, _Run] = {}  # job id -> run
        self._denials: dict[str, str] = {}  # user id -> explanation of their last denial

    # ================================================================== records =====
    def record(self, event: AuditEvent, run: _Run, outcome: str = "", **extra: Any) -> AuditRecord:
        caller = run.caller
        return self.audit.append(
            event,
            action=run.spec.name,
            target=run.target,
            actor_id=caller.principal.user_id,
            actor_name=caller.principal.username,
            trigger=caller.trigger,
            channel_id=caller.channel_id,
            post_id=caller.post_id,
            parameters=self.redactor.scrub_obj(run.values),
            outcome=self.redactor.scrub(outcome),
            correlation_id=run.correlation_id,
            **extra,
        )

    def _echo(self, text: str) -> str:
        """Scrub, then copy to the audit channel when one is configured."""
        text = self.redactor.scrub(text)
        if self.audit_channel:
            try:
                self.audit_channel(text)
            except Exception:
                log.exception("could not copy an echo to the audit channel")
        return text

    def last_denial(self, user_id: str) -> str | None:
        return self._denials.get(user_id)

    # ================================================================== request =====
    def request(
        self, spec: ActionSpec, plugin: Any, values: dict[str, Any], caller: Caller
    ) -> None:
        """Handle one validated request: it is answered through ``caller``."""
        run = _Run(spec, plugin, values, caller, correlation_id=f"C-{secrets.token_hex(4)}")
        self.record(AuditEvent.REQUESTED, run)
        who = caller.principal
        try:
            spec.precheck(plugin, values)
            environment = run.environment
        except Refusal as exc:  # the action's own checks (unknown host, bad parameter)
            denied = self.record(AuditEvent.DENIED, run, str(exc))
            self._denials[who.user_id] = f"`{run.command(self.prefix)}` was refused: {exc}"
            caller.say(self._echo(f"⛔ {exc} · nothing was run · audit {denied.id}"))
            return
        decision = self.policy.authorize(who, spec.name, spec.risk, environment, values)
        if not decision.allowed:
            denied = self.record(AuditEvent.DENIED, run, decision.reason)
            self._denials[who.user_id] = (
                f"`{run.command(self.prefix)}` was denied: {decision.reason} (audit {denied.id})"
            )
            caller.say(self._echo(f"⛔ denied: {decision.reason} · audit {denied.id}"))
            return
        kind = self._gate(spec, environment)
        if kind is None:
            self._start(run)
        else:
            self._ask(run, kind)

    def deny_command(self, command: str, caller: Caller, reason: str) -> AuditRecord:
        """Record a chat command (not an action) refused before it ran, e.g. admin-only."""
        record = self.audit.append(
            AuditEvent.DENIED,
            action=command,
            actor_id=caller.principal.user_id,
            actor_name=caller.principal.username,
            trigger=caller.trigger,
            channel_id=caller.channel_id,
            post_id=caller.post_id,
            outcome=reason,
            correlation_id=f"C-{secrets.token_hex(4)}",
        )
        self._denials[caller.principal.user_id] = (
            f"`{self.prefix}{command}` was denied: {reason} (audit {record.id})"
        )
        return record

    def invoke(self, spec: ActionSpec, plugin: Any, values: dict[str, Any], caller: Caller) -> None:
        """Run an action programmatically (alert rules): validate, then as from chat."""
        self.request(spec, plugin, spec.validate(values), caller)

    def refuse(self, spec: ActionSpec, plugin: Any, raw: str, caller: Caller, reason: str) -> None:
        """Record and answer a request whose arguments did not validate: nothing runs."""
        run = _Run(spec, plugin, {"arguments": raw}, caller, f"C-{secrets.token_hex(4)}")
        denied = self.record(AuditEvent.DENIED, run, f"invalid arguments: {reason}")
        caller.say(
            self._echo(
                f"⛔ {reason}\nusage: `{spec.usage(self.prefix)}` · nothing was run · "
                f"audit {denied.id}"
            )
        )

    def _gate(self, spec: ActionSpec, target: str) -> Kind | None:
        approval = spec.approval if spec.approval is not None else spec.risk is Risk.DANGEROUS
        if approval:
            return Kind.APPROVAL
        confirm = spec.confirm
        if confirm is None:
            confirm = spec.risk is Risk.CHANGE and self.policy.is_protected(target)
        return Kind.CONFIRMATION if confirm else None

    def _ask(self, run: _Run, kind: Kind) -> None:
        ttl = self.policy.document.approvals.expire_after.total_seconds()
        request = self.book.open(
            kind,
            run.spec.name,
            run.values,
            run.spec.digest(run.values),
            run.caller.principal,
            ttl,
            context={"correlation_id": run.correlation_id, "channel_id": run.caller.channel_id},
        )
        with self._lock:
            self._pending[request.id] = run
        event = (
            AuditEvent.APPROVAL_REQUESTED
            if kind is Kind.APPROVAL
            else AuditEvent.CONFIRMATION_REQUESTED
        )
        record = self.record(event, run, f"request {request.id}")
        minutes = max(1, round(ttl / 60))
        who = f"@{run.caller.principal.username}"
        if kind is Kind.APPROVAL:
            roles = ", ".join(self.policy.approvers(run.spec.name)) or "nobody (see the policy)"
            text = (
                f"🔐 {who} asks to run `{run.command(self.prefix)}`. It needs approval by "
                f"someone else with role {roles}: `{self.prefix}approve {request.id}` or 👍, "
                f"`{self.prefix}reject {request.id}` or 👎. Expires in {minutes} min · "
                f"audit {record.id}"
            )
        else:
            text = (
                f"❓ {who}, `{run.command(self.prefix)}` touches protected {run.environment}. "
                f"Confirm with `{self.prefix}confirm {request.id}` or 👍 within {minutes} min "
                f"(`{self.prefix}reject {request.id}` or 👎 to drop it) · audit {record.id}"
            )
        run.handle = run.caller.say(self._echo(text))
        if run.handle is not None and run.caller.on_posted is not None:
            run.caller.on_posted(run.handle, lambda post_id: setattr(request, "post_id", post_id))

    def decide(self, request_id: str, who: Principal, grant: bool) -> str:
        """Approve, confirm or reject a pending request; returns the answer to give."""
        try:
            request = self.book.decide(request_id, who, grant, self.policy.can_approve)
        except ApprovalError as exc:
            self.expire_pending()
            return f"⛔ {exc}"
        with self._lock:
            run = self._pending.pop(request.id, None)
        if run is None:
            return f"⛔ request {request.id} is no longer known (the bot restarted?)"
        verb = "granted" if grant else "rejected"
        event = AuditEvent.GRANTED if grant else AuditEvent.REJECTED
        record = self.record(event, run, f"{request.kind} {verb} by @{who.username}")
        if not grant:
            return self._echo(
                f"🚫 request {request.id} {verb} by @{who.username} · audit {record.id}"
            )
        try:
            self.book.check_binding(request, run.spec.digest(run.spec.validate(run.values)))
        except Refusal as exc:
            denied = self.record(AuditEvent.DENIED, run, str(exc))
            return f"⛔ {exc} · audit {denied.id}"
        self._start(run)
        return self._echo(f"👍 request {request.id} {verb} by @{who.username} · audit {record.id}")

    def decide_by_reaction(self, post_id: str, who: Principal, emoji: str) -> str | None:
        """👍 / 👎 on a request message; None when the post is not a pending request."""
        grant = {"+1": True, "thumbsup": True, "-1": False, "thumbsdown": False}.get(emoji)
        request = self.book.by_post(post_id)
        if grant is None or request is None:
            return None
        return self.decide(request.id, who, grant)

    def expire_pending(self) -> list[str]:
        """Record and announce requests whose time ran out; returns their ids."""
        expired = []
        for request in self.book.expire():
            with self._lock:
                run = self._pending.pop(request.id, None)
            if run is None:
                continue
            record = self.record(AuditEvent.EXPIRED, run, f"request {request.id} expired")
            run.caller.say(
                self._echo(f"⌛ request {request.id} expired; nothing was run · audit {record.id}")
            )
            expired.append(request.id)
        return expired

    # ===================================================================== jobs =====
    def _start(self, run: _Run) -> None:
        def body(ctx: JobContext) -> Any:
            started = self.record(AuditEvent.STARTED, run)
            self._update(
                run, f"⏳ `{run.command(self.prefix)}` running as {ctx.job.id} · audit {started.id}"
            )
            return run.spec.func(
                run.plugin, ActionContext(ctx, run.caller, self.redactor.scrub), **run.values
            )

        try:
            job = self.executor.submit(
                body,
                name=run.spec.name,
                target=run.target or None,
                timeout=run.spec.timeout,
                lock_policy="refuse" if run.spec.lock == "refuse" else "queue",
                on_progress=lambda job, text: self._update(
                    run, f"⏳ `{run.command(self.prefix)}` ({job.id}): {text}"
                ),
                on_done=lambda job: self._finish(run, job),
            )
        except TargetBusy as busy:
            denied = self.record(AuditEvent.DENIED, run, str(busy))
            run.caller.say(self._echo(f"⛔ {busy} · audit {denied.id}"))
            return
        run.job = job
        with self._lock:
            self._runs[job.id] = run
        try:
            if run.handle is None:
                run.handle = run.caller.say(
                    self._echo(f"⏳ `{run.command(self.prefix)}` accepted as job {job.id}")
                )
        finally:
            run.acked.set()

    def _update(self, run: _Run, text: str) -> None:
        text = self.redactor.scrub(text)
        run.acked.wait(ACK_WAIT_SECONDS)
        if run.handle is not None and run.caller.edit is not None:
            run.caller.edit(run.handle, text)

    def _finish(self, run: _Run, job: Job) -> None:
        event = FINAL_EVENTS[job.status]
        if job.status is JobStatus.SUCCEEDED:
            outcome = (
                "ok" if job.result is None else MarkdownRenderer().outcome(as_outcome(job.result))
            )
        elif job.status is JobStatus.CANCELLED:
            outcome = f"cancelled by {job.cancelled_by or 'someone'}"
        elif job.status is JobStatus.TIMED_OUT:
            outcome = f"timed out after {run.spec.timeout:g}s"
        else:
            outcome = job.error or "failed"
        duration = int((time.monotonic() - run.started) * 1000)
        if job.started_at and job.finished_at:
            duration = int((job.finished_at - job.started_at).total_seconds() * 1000)
        record = self.record(event, run, outcome[:MAX_RESULT_CHARS], duration_ms=duration)
        text = self._echo(render(record, self.prefix, run.command(self.prefix)))
        run.acked.wait(ACK_WAIT_SECONDS)
        if run.handle is not None and run.caller.edit is not None:
            run.caller.edit(run.handle, text)
        else:
            run.caller.say(text)

    def cancel(self, job_id: str, who: Principal) -> str:
        job = self.executor.get(job_id.strip().upper())
        if job is None:
            return f"⛔ no job {job_id}"
        run = self._runs.get(job.id)
        allowed = run is not None and (
            run.caller.principal.user_id == who.user_id
            or self.policy.authorize(
                who, run.spec.name, run.spec.risk, run.environment, run.values
            ).allowed
        )
        if not allowed:
            return f"⛔ only the requester or someone allowed to run {job.name} may cancel {job.id}"
        if not job.cancel(by=f"@{who.username}"):
            return f"job {job.id} already {job.status}"
        return f"🛑 cancelling {job.id}"

    def jobs(self) -> list[Job]:
        return self.executor.jobs(active_only=True)

    # =============================================================== start-up =====
    def recover(self) -> list[AuditRecord]:
        """Record as interrupted the actions a previous process left running."""
        interrupted = []
        for started in self.audit.unfinished():
            interrupted.append(
                self.audit.append(
                    AuditEvent.INTERRUPTED,
                    action=started.action,
                    target=started.target,
                    actor_id=started.actor_id,
                    actor_name=started.actor_name,
                    trigger="startup",
                    channel_id=started.channel_id,
                    post_id=started.post_id,
                    parameters=started.parameters,
                    outcome="the bot stopped while this action was running",
                    correlation_id=started.correlation_id,
                )
            )
        return interrupted


def render(record: AuditRecord, prefix: str, command: str = "") -> str:
    """The channel echo of a final record: what, who, outcome, how long, audit id."""
    icon = ICONS.get(record.event, "•")
    shown = command or f"{prefix}{record.action}"
    seconds = f" in {record.duration_ms / 1000:.1f}s" if record.duration_ms is not None else ""
    who = f" for @{record.actor_name}" if record.actor_name else ""
    outcome = record.outcome
    # A multi-line outcome is the action's own Markdown (tables, fenced output): as is.
    body = f"\n{outcome}\n" if "\n" in outcome else (f": {outcome}" if outcome else "")
    return f"{icon} `{shown}`{who} {record.event.value}{seconds}{body} · audit {record.id}"
