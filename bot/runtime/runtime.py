"""The action runtime: authorize, confirm or approve, run as a job, record every step.

Chat-free. One entry point, :meth:`Runtime.submit`, serves every trigger: a chat message
(a :class:`~bot.runtime.callers.Person`), an alert rule acting as a policy role
(:class:`~bot.runtime.callers.Rule`) and an operator at the bot's host
(:class:`~bot.runtime.callers.Operator`). Every step is an audit record first; what the
conversation is told is a notice (data) built from that record, carrying its id and hash
prefix, and rendered by the chat surface.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.errors import ActionFailed, Refusal
from bot.outcomes import Outcome, Table, as_outcome
from bot.redaction import Redactor
from bot.runtime import notices
from bot.runtime.actions import ActionSpec
from bot.runtime.approvals import ApprovalBook, Kind, Request
from bot.runtime.audit import AuditEvent, AuditRecord, AuditStore
from bot.runtime.callers import Caller, Person
from bot.runtime.jobs import Job, JobContext, JobExecutor, JobStatus
from bot.runtime.policy import Policy, Principal, Risk
from bot.runtime.surface import ChatSurface, Message, NoSurface, Place, Posted

log = logging.getLogger(__name__)

FINAL_EVENTS = {
    JobStatus.SUCCEEDED: AuditEvent.SUCCEEDED,
    JobStatus.FAILED: AuditEvent.FAILED,
    JobStatus.CANCELLED: AuditEvent.CANCELLED,
    JobStatus.TIMED_OUT: AuditEvent.TIMED_OUT,
}
MAX_RESULT_CHARS = 3000  # a change's outcome as stored in the audit log (after scrubbing)
MAX_READ_SUMMARY_CHARS = 200  # a read's outcome as stored: a summary, not the data
ACK_WAIT_SECONDS = 10
MAX_REMEMBERED_DENIALS = 10_000  # people whose last denial !why-denied can explain


class ActionContext:
    """What an action's function gets as ``ctx``.

    ``progress(text)`` updates the live message; ``check()`` and ``wait(seconds)`` raise
    :class:`~bot.errors.JobCancelled` once the job is cancelled or timed out;
    ``on_cancel(fn)`` registers a callback that stops remote work; ``attach()`` hands long
    output to the conversation as a file; ``caller`` says who asked (a person, a rule, an
    operator) and ``job_id`` names the job.
    """

    def __init__(self, job: JobContext, run: _Run, runtime: Runtime) -> None:
        self._job = job
        self._run = run
        self._runtime = runtime

    @property
    def job_id(self) -> str:
        return self._job.job.id

    @property
    def caller(self) -> Caller:
        return self._run.caller

    @property
    def cancelled(self) -> bool:
        return self._job.cancelled

    @property
    def place(self) -> Place | None:
        """Where the request was made (where answers go); None for runs without one."""
        return self._run.place

    def progress(self, text: str) -> None:
        self._job.progress(text)

    def check(self) -> None:
        self._job.check()

    def wait(self, seconds: float) -> None:
        self._job.wait(seconds)

    def on_cancel(self, callback: Callable[[], Any]) -> None:
        self._job.on_cancel(callback)

    def attach(self, filename: str, text: str, message: str = "") -> bool:
        """Attach ``text`` (secrets scrubbed) as a file where the request was made.
        False where files cannot be attached (the result then has to say it all)."""
        place = self._run.place
        if place is None:
            return False
        scrub = self._runtime.redactor.scrub
        return self._runtime.surface.attach(place, filename, scrub(text).encode(), scrub(message))


@dataclass
class _Run:
    """One invocation, from request to final record."""

    spec: ActionSpec
    plugin: Any
    values: dict[str, Any]
    caller: Caller
    place: Place | None
    post_id: str
    correlation_id: str
    job_id: str = ""  # given out once the request is authorized: on every later record
    posted: Posted | None = None
    redactor: Redactor | None = None  # the runtime's, plus secrets found in this request
    job: Job | None = None
    failure: ActionFailed | None = None
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

    @property
    def reads(self) -> bool:
        return self.spec.risk is Risk.READ

    def command(self, prefix: str) -> str:
        """The request as a command someone could type again (empty values left out)."""
        words = []
        for key, value in self.values.items():
            if value in ("", None, {}, []):
                continue
            if isinstance(value, dict):
                words += [f"{k}={_printable(v)}" for k, v in value.items()]
            else:
                words.append(f"{key}={_printable(value)}")
        return f"{prefix}{self.spec.name.replace('.', ' ')} {' '.join(words)}".strip()

    @property
    def who(self) -> str:
        """For the echo: "for @alice", or "by rule x for alert y"."""
        if isinstance(self.caller, Person):
            return f"for {self.caller.describe()}"
        return f"by {self.caller.describe()}"


def _printable(value: object) -> str:
    """A value as shown in a command: escaped when it holds anything unprintable (a lone
    surrogate, a control character), cut when long."""
    text = str(value)
    if not text.isprintable():
        text = ascii(text)[1:-1]
    return text if len(text) <= 80 else f"{text[:77]}..."


@dataclass(frozen=True)
class Submission:
    """What became of a request at once. ``status``: ``accepted`` (a job runs or waits
    for its target), ``asked`` (waiting for a confirmation or an approval), ``refused``
    (arguments, the action's checks or a busy target said no: nothing ran) or ``denied``
    (the policy said no). ``job_id`` is given out once the request is authorized (the
    run's records carry it: ``audit.by_job``); ``reason`` and ``audit_id`` say why not."""

    status: Literal["accepted", "asked", "refused", "denied"]
    job_id: str = ""
    reason: str = ""
    audit_id: str = ""


def _ref(record: AuditRecord) -> notices.AuditRef:
    return notices.AuditRef(record.id, record.hash)


class Runtime:
    """Authorization, approvals, jobs and audit for every action. Thread-safe."""

    def __init__(
        self,
        *,
        policy: Policy,
        audit: AuditStore,
        executor: JobExecutor,
        redactor: Redactor,
        surface: ChatSurface | None = None,
        book: ApprovalBook | None = None,
        prefix: str = "!",
        audit_place: Place | None = None,
    ) -> None:
        self.policy = policy
        self.audit = audit
        self.executor = executor
        self.redactor = redactor
        self.surface: ChatSurface = surface or NoSurface()
        self.book = book or ApprovalBook()
        self.prefix = prefix
        self.audit_place = audit_place
        self._lock = threading.Lock()
        self._pending: dict[str, _Run] = {}  # approval/confirmation id -> the waiting run
        self._runs: dict[str, _Run] = {}  # job id -> run, while the job is not finished
        # user id -> explanation of their last denial (bounded, oldest forgotten first)
        self._denials: OrderedDict[str, str] = OrderedDict()
        self._listeners: list[Callable[[AuditRecord], None]] = []

    def add_listener(self, listener: Callable[[AuditRecord], None]) -> None:
        """Call ``listener(record)`` after every record of an action's run is appended (on
        the thread that appended it; keep it quick). A failing listener is logged and
        changes nothing for the run."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[AuditRecord], None]) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # ================================================================== records =====
    def record(self, event: AuditEvent, run: _Run, outcome: str = "", **extra: Any) -> AuditRecord:
        principal = run.caller.principal
        redactor = run.redactor or self.redactor
        record = self.audit.append(
            event,
            action=run.spec.name,
            target=run.target,
            actor_id=principal.user_id,
            actor_name=principal.username,
            trigger=run.caller.trigger,
            channel_id=run.place.channel if run.place else "",
            post_id=run.post_id,
            parameters=redactor.scrub_obj(run.values),
            outcome=redactor.scrub_and_cut(outcome, MAX_RESULT_CHARS),
            correlation_id=run.correlation_id,
            job_id=run.job_id,
            **extra,
        )
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(record)
            except Exception:
                log.exception("audit listener %r failed on %s", listener, record.id)
        return record

    def _say(self, run: _Run, message: Message) -> Posted | None:
        """Tell the run's conversation (and copy to the audit channel)."""
        message = self._scrubbed(message)
        self._copy_to_audit_channel(message)
        if run.place is None:
            return None
        return self.surface.post(run.place, message)

    def _scrubbed(self, message: Message) -> Message:
        """Every piece of text of a message, secrets scrubbed (before anything cuts it)."""
        scrub = self.redactor.scrub
        if isinstance(message, str):
            return scrub(message)
        if isinstance(message, Outcome):
            return message.map_text(scrub)
        if isinstance(message, Table):
            return Outcome("", message).map_text(scrub).blocks[0]  # type: ignore[return-value]
        changes: dict[str, Any] = {}
        for item in dataclasses.fields(message):
            value = getattr(message, item.name)
            if isinstance(value, str):
                changes[item.name] = scrub(value)
            elif isinstance(value, Outcome):
                changes[item.name] = value.map_text(scrub)
        return dataclasses.replace(message, **changes)

    def _copy_to_audit_channel(self, message: Message) -> None:
        if self.audit_place is not None:
            self.surface.post(self.audit_place, message)

    def _remember_denial(self, user_id: str, text: str) -> None:
        with self._lock:
            self._denials[user_id] = text
            self._denials.move_to_end(user_id)
            while len(self._denials) > MAX_REMEMBERED_DENIALS:
                self._denials.popitem(last=False)

    def last_denial(self, user_id: str) -> str | None:
        with self._lock:
            return self._denials.get(user_id)

    # ================================================================== request =====
    def submit(
        self,
        spec: ActionSpec,
        plugin: Any,
        arguments: str | Mapping[str, Any],
        caller: Caller,
        place: Place | None = None,
        post_id: str = "",
    ) -> Submission:
        """The one entry point: a request from chat (``arguments`` as typed), an alert
        rule or the CLI (``arguments`` already bound by name). It is validated, checked,
        authorized, confirmed or approved as needed, and run as a job; every step is
        recorded and told to ``place`` (if any). Returns what became of it at once."""
        correlation_id = f"C-{secrets.token_hex(4)}"
        try:
            values = (
                spec.parse(arguments) if isinstance(arguments, str) else spec.validate(arguments)
            )
        except Refusal as exc:
            shown = arguments if isinstance(arguments, str) else dict(arguments)
            run = _Run(spec, plugin, {"arguments": shown}, caller, place, post_id, correlation_id)
            return self._refuse(run, f"invalid arguments: {exc}", str(exc), usage=True)
        run = _Run(spec, plugin, values, caller, place, post_id, correlation_id)
        try:  # the action's own checks (unknown host, service, namespace) come first
            spec.precheck(plugin, values)
            environment = run.environment
        except Refusal as exc:
            run.redactor = self.redactor.with_secrets(exc.secrets)
            return self._refuse(run, str(exc), str(exc))
        if not run.reads:
            self.record(AuditEvent.REQUESTED, run)
        decision = self.policy.authorize(
            caller.principal, spec.name, spec.risk, environment, values
        )
        if not decision.allowed:
            denied = self.record(AuditEvent.DENIED, run, decision.reason)
            self._remember_denial(
                caller.principal.user_id,
                f"{run.command(self.prefix)} was denied: {decision.reason} (audit {denied.id})",
            )
            self._say(run, notices.Denied(run.command(self.prefix), decision.reason, _ref(denied)))
            return Submission("denied", "", decision.reason, denied.id)
        run.job_id = self.executor.reserve_id()
        kind = self._gate(spec, environment)
        if kind is None:
            return self._start(run)
        self._ask(run, kind)
        return Submission("asked", run.job_id)

    def _refuse(self, run: _Run, recorded: str, reason: str, usage: bool = False) -> Submission:
        denied = self.record(AuditEvent.DENIED, run, recorded)
        scrub = (run.redactor or self.redactor).scrub
        command = scrub(run.command(self.prefix))
        self._remember_denial(
            run.caller.principal.user_id, f"{command} was refused: {reason} (audit {denied.id})"
        )
        shown_usage = run.spec.usage(self.prefix) if usage else ""
        refused = notices.Refused(command, scrub(reason), _ref(denied), shown_usage)
        self._say(run, refused)
        return Submission("refused", "", scrub(reason), denied.id)

    def deny_command(
        self,
        command: str,
        caller: Caller,
        reason: str,
        place: Place | None = None,
        post_id: str = "",
    ) -> notices.Denied:
        """Record a chat command (not an action) refused before it ran, e.g. admin-only."""
        principal = caller.principal
        record = self.audit.append(
            AuditEvent.DENIED,
            action=command,
            actor_id=principal.user_id,
            actor_name=principal.username,
            trigger=caller.trigger,
            channel_id=place.channel if place else "",
            post_id=post_id,
            outcome=reason,
            correlation_id=f"C-{secrets.token_hex(4)}",
        )
        shown = f"{self.prefix}{command}"
        self._remember_denial(
            principal.user_id, f"{shown} was denied: {reason} (audit {record.id})"
        )
        return notices.Denied(shown, reason, _ref(record))

    def _gate(self, spec: ActionSpec, environment: str) -> Kind | None:
        approval = spec.approval if spec.approval is not None else spec.risk is Risk.DANGEROUS
        if approval or (spec.risk is not Risk.READ and self.policy.needs_approval(environment)):
            return Kind.APPROVAL
        confirm = spec.confirm
        if confirm is None:
            confirm = spec.risk is Risk.CHANGE and self.policy.is_protected(environment)
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
            context={
                "correlation_id": run.correlation_id,
                "channel_id": run.place.channel if run.place else "",
            },
        )
        with self._lock:
            self._pending[request.id] = run
        event = (
            AuditEvent.APPROVAL_REQUESTED
            if kind is Kind.APPROVAL
            else AuditEvent.CONFIRMATION_REQUESTED
        )
        record = self.record(event, run, f"request {request.id}")
        asked = notices.Asked(
            approval=kind is Kind.APPROVAL,
            who=run.caller.describe(),
            command=run.command(self.prefix),
            request_id=request.id,
            minutes=max(1, round(ttl / 60)),
            environment=run.environment,
            approver_roles=tuple(self.policy.approvers(run.spec.name)),
            audit=_ref(record),
            prefix=self.prefix,
        )
        run.posted = self._say(run, asked)
        if run.posted is not None:
            run.posted.when_posted(lambda post_id: setattr(request, "post_id", post_id))

    def decide(self, request_id: str, who: Principal, grant: bool) -> notices.Notice:
        """Approve, confirm or reject a pending request; returns what to answer."""
        request = self.book.get(request_id)
        with self._lock:
            run = self._pending.get(request.id) if request is not None else None
        decider = {"decider_id": who.user_id, "decider_name": who.username}
        try:
            request = self.book.decide(request_id, who, grant, self.policy.can_approve)
        except Refusal as exc:
            self.expire_pending()
            if run is None:
                return notices.DecisionRefused(str(exc))
            refused = self.record(AuditEvent.REFUSED, run, str(exc), **decider)
            return notices.DecisionRefused(str(exc), _ref(refused))
        with self._lock:
            run = self._pending.pop(request.id, None)
        if run is None:
            return notices.DecisionRefused(
                f"request {request.id} is no longer known (the bot restarted?)"
            )
        verb = "granted" if grant else "rejected"
        event = AuditEvent.GRANTED if grant else AuditEvent.REJECTED
        record = self.record(event, run, f"{request.kind} {verb} by @{who.username}", **decider)
        decided = notices.Decided(request.id, grant, f"@{who.username}", _ref(record))
        self._copy_to_audit_channel(self._scrubbed(decided))
        if not grant:
            return decided
        try:
            self.book.check_binding(request, run.spec.digest(run.spec.validate(run.values)))
        except Refusal as exc:
            denied = self.record(AuditEvent.DENIED, run, str(exc))
            return notices.DecisionRefused(str(exc), _ref(denied))
        self._start(run)
        return decided

    def decide_by_reaction(self, post_id: str, who: Principal, emoji: str) -> notices.Notice | None:
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
            self._say(run, notices.Expired(request.id, _ref(record)))
            expired.append(request.id)
        return expired

    def pending_requests(self) -> list[Request]:
        return self.book.pending()

    # ===================================================================== jobs =====
    def _start(self, run: _Run) -> Submission:
        def body(ctx: JobContext) -> Any:
            started = None if run.reads else self.record(AuditEvent.STARTED, run)
            self._update(
                run,
                notices.Running(
                    run.command(self.prefix), ctx.job.id, audit=_ref(started) if started else None
                ),
            )
            try:
                return run.spec.func(run.plugin, ActionContext(ctx, run, self), **run.values)
            except ActionFailed as exc:
                run.failure = exc
                raise

        try:
            job = self.executor.submit(
                body,
                name=run.spec.name,
                target=run.target or None,
                timeout=run.spec.timeout,
                lock_policy=run.spec.lock,
                job_id=run.job_id,
                on_progress=lambda job, text: self._update(
                    run, notices.Running(run.command(self.prefix), job.id, progress=text)
                ),
                on_done=lambda job: self._finish(run, job),
            )
        except Refusal as busy:
            return self._refuse(run, str(busy), str(busy))
        run.job = job
        with self._lock:
            self._runs[job.id] = run
        try:
            if run.posted is None:
                run.posted = self._say(run, notices.Accepted(run.command(self.prefix), job.id))
        finally:
            run.acked.set()
        return Submission("accepted", job.id)

    def _update(self, run: _Run, notice: notices.Running) -> None:
        run.acked.wait(ACK_WAIT_SECONDS)
        if run.posted is not None:
            self.surface.edit(run.posted, self._scrubbed(notice), final=False)

    def _outcome(self, run: _Run, job: Job) -> Outcome:
        if job.status is JobStatus.SUCCEEDED:
            return as_outcome(job.result)
        if job.status is JobStatus.CANCELLED:
            return Outcome(f"cancelled by {job.cancelled_by or 'someone'}")
        if job.status is JobStatus.TIMED_OUT:
            return Outcome(f"timed out after {run.spec.timeout:g}s")
        if run.failure is not None:
            return run.failure.outcome
        return Outcome(job.error or "failed")

    def _finish(self, run: _Run, job: Job) -> None:
        try:
            event = FINAL_EVENTS[job.status]
            outcome = self._outcome(run, job).map_text(self.redactor.scrub)
            duration = int((time.monotonic() - run.started) * 1000)
            if job.started_at and job.finished_at:
                duration = int((job.finished_at - job.started_at).total_seconds() * 1000)
            stored = (
                self.redactor.scrub_and_cut(_summary(outcome), MAX_READ_SUMMARY_CHARS)
                if run.reads
                else outcome.plain()
            )
            record = self.record(event, run, stored, duration_ms=duration)
            finished = notices.Finished(  # scrubbed below, like every message
                command=run.command(self.prefix),
                who=run.who,
                status=record.event.value,
                outcome=outcome,
                seconds=duration / 1000,
                job_id=job.id,
                audit=_ref(record),
            )
            finished = self._scrubbed(finished)  # type: ignore[assignment]
            self._copy_to_audit_channel(finished)
            run.acked.wait(ACK_WAIT_SECONDS)
            if run.place is None:
                return
            if run.posted is not None:
                self.surface.edit(run.posted, finished, final=True)
            else:
                self.surface.post(run.place, finished)
        finally:
            with self._lock:
                self._runs.pop(job.id, None)

    def cancel(self, job_id: str, who: Principal) -> Job:
        """Cancel a job for ``who``; raises Refusal when it may not or cannot be."""
        job = self.executor.get(job_id)
        if job is None:
            raise Refusal(f"no job {job_id.strip()}")
        with self._lock:
            run = self._runs.get(job.id)
        if run is None:
            raise Refusal(f"job {job.id} already {job.status}")
        allowed = (
            run.caller.principal.user_id == who.user_id
            or self.policy.authorize(
                who, run.spec.name, run.spec.risk, run.environment, run.values
            ).allowed
        )
        if not allowed:
            raise Refusal(
                f"only the requester or someone allowed to run {job.name} may cancel {job.id}"
            )
        if not job.cancel(by=f"@{who.username}"):
            raise Refusal(f"job {job.id} already {job.status}")
        return job

    def jobs(self) -> list[Job]:
        return self.executor.jobs(active_only=True)

    # =============================================================== start-up =====
    def abandon_pending(self) -> list[tuple[str, notices.Abandoned]]:
        """Record as abandoned the requests a previous process left undecided: nobody can
        answer them any more (the process that asked is gone). Returns what to tell each
        request's channel."""
        abandoned = []
        for asked in self.audit.pending_requests():
            record = self._after_restart(
                asked,
                AuditEvent.ABANDONED,
                f"{asked.outcome} was still pending when the bot stopped",
            )
            command = f"{self.prefix}{asked.action.replace('.', ' ')}"
            request_id = asked.outcome.removeprefix("request ")
            abandoned.append(
                (asked.channel_id, notices.Abandoned(request_id, command, _ref(record)))
            )
        return abandoned

    def recover(self) -> list[AuditRecord]:
        """Record as interrupted the actions a previous process left running."""
        return [
            self._after_restart(
                started, AuditEvent.INTERRUPTED, "the bot stopped while this action was running"
            )
            for started in self.audit.unfinished()
        ]

    def _after_restart(self, earlier: AuditRecord, event: AuditEvent, outcome: str) -> AuditRecord:
        """Close, at start-up, what a previous process left open: same action, actor,
        place, parameters and ids as ``earlier``, triggered by the start-up."""
        return self.audit.append(
            event,
            action=earlier.action,
            target=earlier.target,
            actor_id=earlier.actor_id,
            actor_name=earlier.actor_name,
            trigger="startup",
            channel_id=earlier.channel_id,
            post_id=earlier.post_id,
            parameters=earlier.parameters,
            outcome=outcome,
            correlation_id=earlier.correlation_id,
            job_id=earlier.job_id or "",
        )

    def post_checkpoint(self) -> str:
        """Post the audit log's checkpoint (count, head hash; signed with a key) to the
        audit channel, where the bot's host cannot edit it; returns its line."""
        line = self.audit.checkpoint().render()
        if self.audit_place is not None:
            self.surface.post(self.audit_place, line)
        return line


def _summary(outcome: Outcome) -> str:
    """What the audit log keeps of a read: its summary, or the size of what it showed."""
    if outcome.summary:
        return outcome.summary
    rows = sum(len(block.rows) for block in outcome.blocks if isinstance(block, Table))
    if rows:
        return f"{rows} rows shown"
    return "shown" if outcome.blocks else "ok"


def interrupted_notice(record: AuditRecord, prefix: str) -> notices.Finished:
    """What to tell a channel about an action a restart interrupted."""
    return notices.Finished(
        command=f"{prefix}{record.action.replace('.', ' ')}",
        who=f"for @{record.actor_name}" if record.actor_name else "",
        status=record.event.value,
        outcome=Outcome(record.outcome),
        seconds=None,
        job_id=record.job_id or "",
        audit=_ref(record),
    )
