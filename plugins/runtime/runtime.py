"""The chat face of the action runtime: identity, authorization, approvals, jobs, audit."""

from __future__ import annotations

import threading

from errbot import BotPlugin, botcmd, cmdfilter

from bot.runtime.actions import ACTION_ATTRIBUTE
from bot.runtime.chat import caller_for, principal_of, runtime_for
from bot.runtime.runtime import render

EXPIRY_CHECK_SECONDS = 5


def markdown_table(headers: tuple[str, ...], rows: list[tuple[object, ...]]) -> str:
    """A Markdown table; pipes and newlines inside cells are neutralised."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


SHUTDOWN_GRACE_SECONDS = 10


class Runtime(BotPlugin):
    """Who may do what, approvals, jobs and the audit log."""

    def activate(self) -> None:
        super().activate()
        runtime = runtime_for(self._bot)
        for record in runtime.recover():
            text = render(record, runtime.prefix)
            self.log.warning("interrupted by a restart: %s", text)
            if record.channel_id:
                try:
                    self.send(self._bot.query_room(record.channel_id), text)
                except Exception:
                    self.log.exception("could not announce %s", record.id)
        self._seen_reactions: set[tuple[str, str, str]] = set()
        self._seen_lock = threading.Lock()
        self.start_poller(EXPIRY_CHECK_SECONDS, self._sweep)

    def deactivate(self) -> None:
        still = self.runtime.executor.shutdown(wait=SHUTDOWN_GRACE_SECONDS)
        for job in still:
            self.log.warning("job %s (%s) cancelled by shutdown", job.id, job.name)
        super().deactivate()

    @property
    def runtime(self):
        return runtime_for(self._bot)

    def _spec(self, command: str):
        method = self._bot.all_commands.get(command)
        return getattr(method, ACTION_ATTRIBUTE, None) if method else None

    # --- identity and authorization ------------------------------------------------------
    @cmdfilter
    def authorize(self, msg, cmd, args, dry_run):
        """The one command filter: admin-only commands for admins, in direct messages;
        actions are authorized with their arguments by the runtime itself. Help (a dry
        run) hides what the asker may not run. Real refusals are audited."""
        method = self._bot.all_commands.get(cmd)
        if method is None:
            return msg, cmd, args
        who = principal_of(self._bot, msg.frm)
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

    def _deny(self, msg, cmd, reason, dry_run):
        if not dry_run:
            caller = caller_for(self._bot, msg)
            record = self.runtime.deny_command(cmd.replace("_", " "), caller, reason)
            caller.say(f"⛔ denied: {reason} · audit {record.id}")
        return None, None, None

    @botcmd
    def whoami(self, msg, args):
        """Show your identity and roles as the bot sees them."""
        who = principal_of(self._bot, msg.frm)
        roles = ", ".join(self.runtime.policy.roles_of(who)) or "none"
        return f"You are @{who.username} (user id `{who.user_id}`); roles: {roles}."

    @botcmd
    def can(self, msg, args):
        """Ask whether a user may run an action: !can @user <action> [environment]."""
        words = args.split()
        if len(words) < 2:
            return f"usage: `{self.runtime.prefix}can @user <action> [environment]`"
        try:
            person = self._bot.build_identifier(words[0])
        except ValueError as exc:
            return f"⛔ {exc}"
        spec = self._spec(words[1].replace(".", "_")) or self._spec(words[1])
        if spec is None:
            return f"⛔ no action named {words[1]}"
        who = principal_of(self._bot, person)
        name = who.username
        env = words[2] if len(words) > 2 else ""
        decision = self.runtime.policy.authorize(who, spec.name, spec.risk, env)
        verdict = "✅ yes" if decision.allowed else "⛔ no"
        return f"{verdict}: @{name} {spec.name}{' in ' + env if env else ''}: {decision.reason}"

    @botcmd(name="why-denied")
    def why_denied(self, msg, args):
        """Explain your last denial."""
        explanation = self.runtime.last_denial(principal_of(self._bot, msg.frm).user_id)
        return explanation or "You have not been denied anything since the bot started."

    # --- approvals -----------------------------------------------------------------------
    @botcmd
    def approve(self, msg, args):
        """Approve someone else's request: !approve <request id>."""
        return self.runtime.decide(args.strip(), principal_of(self._bot, msg.frm), True)

    @botcmd
    def confirm(self, msg, args):
        """Confirm your own request: !confirm <request id>."""
        return self.runtime.decide(args.strip(), principal_of(self._bot, msg.frm), True)

    @botcmd
    def reject(self, msg, args):
        """Reject (or withdraw) a request: !reject <request id>."""
        return self.runtime.decide(args.strip(), principal_of(self._bot, msg.frm), False)

    def callback_reaction(self, reaction):
        target = reaction.reacted_to or {}
        self._decide_by_reaction(
            target.get("id", ""), reaction.reactor, reaction.reaction_name, target.get("channel_id")
        )

    def _decide_by_reaction(self, post_id, reactor, emoji, channel_id) -> None:
        """Each (post, person, emoji) is decided once, whether seen live or by the sweep."""
        key = (post_id, str(reactor.aclattr), emoji)
        with self._seen_lock:
            if key in self._seen_reactions:
                return
            self._seen_reactions.add(key)
        who = principal_of(self._bot, reactor)
        answer = self.runtime.decide_by_reaction(post_id, who, emoji)
        if answer and channel_id:
            self.send(self._bot.query_room(channel_id), answer)

    def _sweep(self) -> None:
        """Expire old requests, and read the reactions on pending request posts: a 👍 given
        while the bot was disconnected never arrives as an event."""
        self.runtime.expire_pending()
        rest = getattr(self._bot, "rest", None)
        if rest is None:
            return
        for request in self.runtime.book.pending():
            if not request.post_id:
                continue
            try:
                reactions = rest.reactions(request.post_id)
            except Exception as exc:  # a sweep that fails is retried at the next one
                self.log.warning("could not read reactions of %s: %s", request.id, exc)
                continue
            channel_id = request.context.get("channel_id")
            for reaction in reactions:
                if reaction["user_id"] == rest.user_id:
                    continue
                reactor = self._bot.build_identifier(reaction["user_id"])
                self._decide_by_reaction(
                    request.post_id, reactor, reaction["emoji_name"], channel_id
                )

    # --- jobs ----------------------------------------------------------------------------
    @botcmd
    def jobs(self, msg, args):
        """List running and queued jobs."""
        jobs = self.runtime.jobs()
        if not jobs:
            return "No jobs are running."
        return markdown_table(
            ("job", "action", "target", "status", "progress"),
            [(j.id, j.name, j.target or "", j.status, j.progress or "") for j in jobs],
        )

    @botcmd
    def job(self, msg, args):
        """Show one job: !job <id>."""
        job = self.runtime.executor.get(args.strip().upper())
        if job is None:
            return f"⛔ no job {args.strip()}"
        detail = job.error or job.progress or ""
        return f"{job.id} `{job.name}` on {job.target or '-'}: {job.status} {detail}".strip()

    @botcmd
    def cancel(self, msg, args):
        """Cancel a running or queued job: !cancel <id>."""
        return self.runtime.cancel(args.strip(), principal_of(self._bot, msg.frm))

    # --- audit ---------------------------------------------------------------------------
    @botcmd
    def audit_last(self, msg, args):
        """Show the last N audit records (default 10): !audit last [N]."""
        try:
            count = min(50, int(args or "10"))
        except ValueError:
            return "usage: `!audit last [N]`"
        records = self.runtime.audit.last(count)
        if not records:
            return "The audit log is empty."
        return markdown_table(
            ("id", "time", "event", "action", "target", "who", "outcome"),
            [
                (
                    r.id,
                    r.time,
                    r.event.value,
                    r.action,
                    r.target,
                    f"@{r.actor_name}" if r.actor_name else r.trigger,
                    r.outcome[:80],
                )
                for r in records
            ],
        )

    @botcmd
    def audit_show(self, msg, args):
        """Show one audit record: !audit show <id>."""
        record = self.runtime.audit.get(args.strip().upper())
        if record is None:
            return f"⛔ no audit record {args.strip()}"
        return f"```json\n{record.to_json()}\n```"

    @botcmd
    def audit_verify(self, msg, args):
        """Check the audit log's hash chain; names the first broken record."""
        result = self.runtime.audit.verify()
        if result.ok:
            return f"✅ audit log OK: {result.records} records"
        return f"⛔ audit log BROKEN at {result.first_bad}: {result.reason}"
