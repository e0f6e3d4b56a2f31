"""The chat face of the action runtime: identity, authorization, approvals, jobs, audit."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from errbot import BotPlugin, botcmd, cmdfilter

from bot.backends.actions import person_of, place_of, post_id_of, runtime_for, surface_for, whois
from bot.errors import Refusal
from bot.messages import render
from bot.outcomes import Outcome, Table, Text
from bot.runtime import runtime as core
from bot.runtime.actions import ACTION_ATTRIBUTE, ActionSpec
from bot.runtime.notices import Notice
from bot.runtime.surface import Message, Place
from bot.settings import get_settings

EXPIRY_CHECK_SECONDS = 5
SHUTDOWN_GRACE_SECONDS = 10
# Reactions already decided: (post, person, emoji). Kept for as long as a request can be
# pending, so that a reaction seen live and again by the sweep is decided once.
SEEN_REACTIONS_KEEP_SECONDS = 24 * 3600
MAX_AUDIT_ROWS = 50


class Runtime(BotPlugin):  # type: ignore[misc]
    """Who may do what, approvals, jobs and the audit log."""

    def activate(self) -> None:
        super().activate()
        runtime = self.runtime
        for record in runtime.recover():
            notice = core.interrupted_notice(record, runtime.prefix)
            self.log.warning("interrupted by a restart: %s %s", record.id, record.action)
            if record.channel_id:
                self._tell(Place(record.channel_id), notice)
        for channel_id, abandoned in runtime.abandon_pending():
            self.log.warning("request %s abandoned by a restart", abandoned.request_id)
            if channel_id:
                self._tell(Place(channel_id), abandoned)
        self._seen_reactions: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._seen_lock = threading.Lock()
        self._checkpoint()
        self.start_poller(EXPIRY_CHECK_SECONDS, self._sweep)

    def deactivate(self) -> None:
        still = self.runtime.executor.shutdown(wait=SHUTDOWN_GRACE_SECONDS)
        for job in still:
            self.log.warning("job %s (%s) cancelled by shutdown", job.id, job.name)
        self._checkpoint()
        super().deactivate()

    def _checkpoint(self) -> None:
        """Post the audit log's checkpoint to the audit channel (start, stop, periodic)."""
        self._checkpointed_at = time.monotonic()
        self._checkpointed_records = self.runtime.audit.checkpoint().records
        try:
            self.runtime.post_checkpoint()
        except Exception:
            self.log.exception("could not post the audit checkpoint")

    def _checkpoint_due(self) -> bool:
        settings = get_settings()
        new = self.runtime.audit.checkpoint().records - self._checkpointed_records
        if new <= 0:
            return False
        elapsed = time.monotonic() - self._checkpointed_at
        return (
            new >= settings.opsroom_audit_checkpoint_records
            or elapsed >= settings.opsroom_audit_checkpoint_interval.total_seconds()
        )

    @property
    def runtime(self) -> core.Runtime:
        return runtime_for(self._bot)

    def _text(self, message: Message) -> str:
        """A message in this surface's words (the command's return value)."""
        return render(message, surface_for(self._bot).renderer)

    def _tell(self, place: Place, message: Message) -> None:
        try:
            surface_for(self._bot).post(place, message)
        except Exception:
            self.log.exception("could not post to %s", place.channel)

    def _spec(self, command: str) -> ActionSpec | None:
        method = self._bot.all_commands.get(command)
        return getattr(method, ACTION_ATTRIBUTE, None) if method else None

    # --- identity and authorization ------------------------------------------------------
    @cmdfilter  # type: ignore[misc]
    def authorize(self, msg: Any, cmd: str, args: str, dry_run: bool) -> tuple[Any, Any, Any]:
        """The one command filter: admin-only commands for admins, in direct messages;
        actions are authorized with their arguments by the runtime itself. Help (a dry
        run) hides what the asker may not run. Real refusals are audited."""
        method = self._bot.all_commands.get(cmd)
        if method is None:
            return msg, cmd, args
        who = whois(self._bot, msg.frm)
        if getattr(method, "_err_command_admin_only", False):
            if who.user_id not in self.bot_config.BOT_ADMINS:
                return self._deny(msg, cmd, "this command is for the bot's admins", dry_run)
            if msg.is_group:
                return self._deny(
                    msg, cmd, "admin commands are only taken in a direct message", dry_run
                )
        spec = getattr(method, ACTION_ATTRIBUTE, None)
        if dry_run and spec is not None:
            policy = self.runtime.policy
            readable = spec.risk == "read" and policy.is_reader(who)
            if not readable and not policy.grants_any(who, spec.name):
                return None, None, None
        return msg, cmd, args

    def _deny(self, msg: Any, cmd: str, reason: str, dry_run: bool) -> tuple[None, None, None]:
        if not dry_run:
            place = place_of(self._bot, msg)
            denied = self.runtime.deny_command(
                cmd.replace("_", " "), person_of(self._bot, msg.frm), reason, place, post_id_of(msg)
            )
            self._tell(place, denied)
        return None, None, None

    @botcmd  # type: ignore[misc]
    def whoami(self, msg: Any, args: str) -> str:
        """Show your identity, your roles and what the policy lets you do."""
        who = whois(self._bot, msg.frm)
        policy = self.runtime.policy
        roles = ", ".join(policy.roles_of(who)) or "none"
        admin = who.user_id in self.bot_config.BOT_ADMINS
        lines = [
            f"You are @{who.username} (user id {who.user_id}); roles: {roles}; "
            f"bot admin: {'yes' if admin else 'no'}."
        ]
        if not policy.loaded:
            lines.append(
                "No policy is loaded (OPSROOM_POLICY is unset): read actions are open to "
                "everyone and every change is denied, to admins too. Being a bot admin only "
                "gives the bot's admin commands. See examples/policy.yaml and docs/runtime.md."
            )
        elif roles == "none":
            lines.append("The policy gives you no role: you may run read actions only.")
        return self._text(Outcome(lines[0], *[Text(line) for line in lines[1:]]))

    @botcmd  # type: ignore[misc]
    def can(self, msg: Any, args: str) -> str:
        """Ask whether a user may run an action: !can @user <action> [environment]."""
        prefix = self.runtime.prefix
        words = args.split()
        if len(words) < 2:
            return f"usage: {prefix}can @user <action> [environment]"
        principal = surface_for(self._bot).lookup(words[0])
        if principal is None:
            return f"⛔ no user {words[0]}"
        spec = self._spec(words[1].replace(".", "_")) or self._spec(words[1])
        if spec is None:
            return f"⛔ no action named {words[1]}"
        env = words[2] if len(words) > 2 else ""
        decision = self.runtime.policy.authorize(principal, spec.name, spec.risk, env)
        verdict = "✅ yes" if decision.allowed else "⛔ no"
        where = f" in {env}" if env else ""
        return f"{verdict}: @{principal.username} {spec.name}{where}: {decision.reason}"

    @botcmd(name="why-denied")  # type: ignore[misc]
    def why_denied(self, msg: Any, args: str) -> str:
        """Explain your last denial."""
        explanation = self.runtime.last_denial(whois(self._bot, msg.frm).user_id)
        return explanation or "You have not been denied anything since the bot started."

    # --- approvals -----------------------------------------------------------------------
    def _decide(self, msg: Any, args: str, grant: bool, verb: str) -> str:
        request_id = args.strip()
        if not request_id:
            return f"usage: {self.runtime.prefix}{verb} <request id>"
        return self._text(self.runtime.decide(request_id, whois(self._bot, msg.frm), grant))

    @botcmd  # type: ignore[misc]
    def approve(self, msg: Any, args: str) -> str:
        """Approve someone else's request: !approve <request id>."""
        return self._decide(msg, args, True, "approve")

    @botcmd  # type: ignore[misc]
    def confirm(self, msg: Any, args: str) -> str:
        """Confirm your own request: !confirm <request id>."""
        return self._decide(msg, args, True, "confirm")

    @botcmd  # type: ignore[misc]
    def reject(self, msg: Any, args: str) -> str:
        """Reject (or withdraw) a request: !reject <request id>."""
        return self._decide(msg, args, False, "reject")

    def callback_reaction(self, reaction: Any) -> None:
        target = reaction.reacted_to or {}
        reactor = whois(self._bot, reaction.reactor)
        self._decide_by_reaction(
            target.get("id", ""), reactor.user_id, reaction.reaction_name, target.get("channel_id")
        )

    def _decide_by_reaction(
        self, post_id: str, user_id: str, emoji: str, channel_id: str | None
    ) -> None:
        """Each (post, person, emoji) is decided once, whether seen live or by the sweep."""
        key = (post_id, user_id, emoji)
        now = time.monotonic()
        with self._seen_lock:
            if key in self._seen_reactions:
                return
            self._seen_reactions[key] = now
            while self._seen_reactions:
                oldest, seen = next(iter(self._seen_reactions.items()))
                if now - seen < SEEN_REACTIONS_KEEP_SECONDS:
                    break
                del self._seen_reactions[oldest]
        who = surface_for(self._bot).lookup(user_id)
        if who is None:
            return
        answer: Notice | None = self.runtime.decide_by_reaction(post_id, who, emoji)
        if answer is not None and channel_id:
            self._tell(Place(channel_id), answer)

    def _sweep(self) -> None:
        """Expire old requests, and read the reactions on pending request posts: a 👍 given
        while the bot was disconnected never arrives as an event."""
        self.runtime.expire_pending()
        if self._checkpoint_due():
            self._checkpoint()
        surface = surface_for(self._bot)
        for request in self.runtime.pending_requests():
            if not request.post_id:
                continue
            try:
                reactions = surface.reactions(request.post_id)
            except Exception as exc:  # a sweep that fails is retried at the next one
                self.log.warning("could not read reactions of %s: %s", request.id, exc)
                continue
            channel_id = request.context.get("channel_id")
            for reaction in reactions:
                self._decide_by_reaction(
                    request.post_id, reaction.user_id, reaction.emoji, channel_id
                )

    # --- jobs ----------------------------------------------------------------------------
    @botcmd  # type: ignore[misc]
    def jobs(self, msg: Any, args: str) -> str:
        """List running and queued jobs."""
        jobs = self.runtime.jobs()
        if not jobs:
            return "No jobs are running."
        return self._text(
            Table(
                ("job", "action", "target", "status", "progress"),
                [(j.id, j.name, j.target or "", j.status, j.progress or "") for j in jobs],
            )
        )

    @botcmd  # type: ignore[misc]
    def job(self, msg: Any, args: str) -> str:
        """Show one job: !job <id>."""
        if not args.strip():
            return f"usage: {self.runtime.prefix}job <job id>"
        job = self.runtime.executor.get(args.strip())
        if job is None:
            return f"⛔ no job {args.strip()}"
        detail = job.error or job.progress or ""
        return f"{job.id} {job.name} on {job.target or '-'}: {job.status} {detail}".strip()

    @botcmd  # type: ignore[misc]
    def cancel(self, msg: Any, args: str) -> str:
        """Cancel a running or queued job: !cancel <id>."""
        if not args.strip():
            return f"usage: {self.runtime.prefix}cancel <job id>"
        try:
            job = self.runtime.cancel(args.strip(), whois(self._bot, msg.frm))
        except Refusal as exc:
            return f"⛔ {exc}"
        return f"🛑 cancelling {job.id}"

    # --- audit ---------------------------------------------------------------------------
    @botcmd  # type: ignore[misc]
    def audit_last(self, msg: Any, args: str) -> str:
        """Show the last N audit records (default 10, at most 50): !audit last [N]."""
        try:
            count = min(MAX_AUDIT_ROWS, int(args or "10"))
        except ValueError:
            return f"usage: {self.runtime.prefix}audit last [N]"
        records = self.runtime.audit.last(count)
        if not records:
            return "The audit log is empty."
        return self._text(
            Table(
                ("id", "time", "event", "action", "who", "outcome"),
                [
                    (
                        r.id,
                        r.time[11:19],
                        r.event.value,
                        f"{r.action} {r.target}".strip(),
                        f"@{r.actor_name}" if r.actor_name else r.trigger,
                        r.outcome.splitlines()[0][:60] if r.outcome else "",
                    )
                    for r in records
                ],
            )
        )

    @botcmd  # type: ignore[misc]
    def audit_show(self, msg: Any, args: str) -> str:
        """Show an audit record, or every record of a job: !audit show <A-… | J-…>."""
        ref = args.strip()
        prefix = self.runtime.prefix
        if not ref:
            return f"usage: {prefix}audit show <record id A-000123 | job id J-4F2A1>"
        records = self.runtime.audit.lookup(ref)
        if not records:
            return f"⛔ no audit record or job {ref}"
        if len(records) == 1:
            (record,) = records
            rows = [(key, _field(value)) for key, value in record.as_dict().items()]
            return self._text(Table(("field", "value"), rows, title=f"audit record {record.id}"))
        return self._text(
            Table(
                ("id", "time", "event", "who", "outcome"),
                [
                    (
                        r.id,
                        r.time[11:19],
                        r.event.value,
                        f"@{r.decider_name or r.actor_name}" if r.actor_name else r.trigger,
                        r.outcome.splitlines()[0][:60] if r.outcome else "",
                    )
                    for r in records
                ],
                title=f"{ref.upper()}: {records[0].action} {records[0].target}".strip(),
            )
        )

    @botcmd  # type: ignore[misc]
    def audit_verify(self, msg: Any, args: str) -> str:
        """Check the audit log's hash chain; names the first broken record."""
        result = self.runtime.audit.verify()
        if result.ok:
            return f"✅ audit log OK: {result.records} records"
        return f"⛔ audit log BROKEN at {result.first_bad}: {result.reason}"


def _field(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return "" if value is None else str(value)
