"""The runtime's face in Errbot: one Runtime per bot, callers built from chat messages.

Works on every Errbot backend. On Mattermost, progress is one message edited in place; on
backends without edits (the terminal, Errbot's test backend) progress is not shown and the
result comes as a new message.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from errbot import botcmd

from bot.redaction import Redactor
from bot.runtime.actions import ACTION_ATTRIBUTE, ActionArgumentError, ActionSpec, declare
from bot.runtime.audit import FILENAME as AUDIT_FILENAME
from bot.runtime.audit import AuditStore
from bot.runtime.jobs import JobExecutor
from bot.runtime.policy import Policy, PolicyDocument, Principal
from bot.runtime.runtime import Caller, Runtime
from bot.settings import get_settings

log = logging.getLogger(__name__)

_ATTRIBUTE = "_opsroom_runtime"
_build_lock = threading.Lock()
EDIT_WAIT_SECONDS = 30


def close_runtime(bot: Any) -> None:
    """Stop the bot's runtime (jobs cancelled, audit log closed) and forget it."""
    runtime = getattr(bot, _ATTRIBUTE, None)
    if runtime is not None:
        runtime.executor.shutdown(wait=1)
        runtime.audit.close()
        delattr(bot, _ATTRIBUTE)


def runtime_for(bot: Any) -> Runtime:
    """The bot's runtime, built on first use from the settings."""
    runtime = getattr(bot, _ATTRIBUTE, None)
    if runtime is not None:
        return runtime
    with _build_lock:
        runtime = getattr(bot, _ATTRIBUTE, None)
        if runtime is None:
            runtime = build_runtime(bot)
            setattr(bot, _ATTRIBUTE, runtime)
    return runtime


def build_runtime(bot: Any) -> Runtime:
    settings = get_settings()
    redactor = Redactor(settings.secrets)

    def resolve(name: str) -> str | None:
        try:
            return bot.build_identifier(name).aclattr
        except Exception:  # unknown user: reported by the policy as unresolved
            return None

    if settings.opsroom_policy:
        policy = Policy.load(settings.opsroom_policy, resolve)
    else:
        # No policy file: reads are open, every change is denied (default deny).
        policy = Policy(PolicyDocument(), resolve, source="(no OPSROOM_POLICY)")
    for name in policy.unresolved:
        log.error("%s: unknown user %s", policy.source, name)
    audit = AuditStore(Path(settings.opsroom_data_dir) / AUDIT_FILENAME, redact=redactor.scrub_obj)
    channel = settings.opsroom_audit_channel
    return Runtime(
        policy=policy,
        audit=audit,
        executor=JobExecutor(max_workers=settings.opsroom_job_workers),
        redactor=redactor,
        prefix=bot.bot_config.BOT_PREFIX,
        audit_channel=(lambda text: bot.send(bot.build_identifier(channel), text))
        if channel
        else None,
    )


def principal_of(bot: Any, person: Any) -> Principal:
    """Who someone is for the policy: the immutable id (``aclattr``), the username as a
    label, and their Mattermost groups when the backend can tell."""
    name = getattr(person, "username", None) or str(getattr(person, "person", person))
    user_id = str(person.aclattr)
    directory = getattr(bot, "directory", None)
    groups = directory.groups_of(user_id) if directory is not None else frozenset()
    return Principal(user_id, name.lstrip("@"), groups)


def caller_for(bot: Any, msg: Any) -> Caller:
    """Answer where the message was sent (in its thread on Mattermost)."""
    extras = msg.extras or {}
    if hasattr(bot, "poster"):

        def say(text: str) -> Future:
            channel_id = extras.get("channel_id") or bot.channel_id_for(
                msg.to if msg.is_group else msg.frm
            )
            return bot.post(channel_id, text, root_id=bot.thread_root(msg))[-1]

        def edit(handle: Future, text: str) -> None:
            post = handle.result(timeout=EDIT_WAIT_SECONDS)
            bot.poster.edit(post["id"], text)

        def attach(filename: str, content: bytes, message: str) -> Future:
            channel_id = extras.get("channel_id") or bot.channel_id_for(
                msg.to if msg.is_group else msg.frm
            )
            return bot.upload(
                channel_id, filename, content, message=message, root_id=bot.thread_root(msg)
            )

        def on_posted(handle: Future, callback: Any) -> None:
            handle.add_done_callback(lambda done: done.exception() or callback(done.result()["id"]))

        return Caller(
            principal_of(bot, msg.frm),
            "chat",
            extras.get("channel_id", ""),
            extras.get("post_id", ""),
            say,
            edit,
            on_posted,
            attach,
        )
    return Caller(
        principal_of(bot, msg.frm), "chat", say=lambda text: bot.send_simple_reply(msg, text)
    )


def run_from_chat(plugin: Any, spec: ActionSpec, msg: Any, args: str) -> None:
    """What an action's chat command does: parse, then hand over to the runtime."""
    runtime = runtime_for(plugin._bot)
    caller = caller_for(plugin._bot, msg)
    try:
        values = spec.parse(args or "")
    except ActionArgumentError as exc:
        runtime.refuse(spec, plugin, args or "", caller, str(exc))
        return
    runtime.request(spec, plugin, values, caller)


def action(name: str | None = None, **options: Any) -> Any:
    """Declare a plugin method as an action and a chat command (``!name args``).

    The method is ``def name(self, ctx, <typed parameters>)`` and runs as a job; what it
    returns is the result shown in the channel. The options (``risk``, ``target``,
    ``timeout``, ``confirm``, ``approval``, ``lock``) are those of
    :func:`bot.runtime.actions.declare`; see ``docs/plugin-authoring.md``.
    """
    declaration = declare(name, **options)

    def decorate(func: Any) -> Any:
        spec: ActionSpec = getattr(declaration(func), ACTION_ATTRIBUTE)

        def command(self: Any, msg: Any, args: str) -> None:
            run_from_chat(self, spec, msg, args)

        command.__name__ = func.__name__
        command.__qualname__ = func.__qualname__
        command.__doc__ = f"{spec.summary} Usage: {spec.usage()} ({spec.risk} action)"
        setattr(command, ACTION_ATTRIBUTE, spec)
        return botcmd(name=spec.name.replace(".", "_"))(command)

    return decorate
