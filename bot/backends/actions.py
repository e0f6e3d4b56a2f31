"""The runtime in Errbot: one Runtime per bot, chat commands for actions.

This is the only place where the chat-free runtime (``bot/runtime``) meets Errbot: it
builds the runtime from the settings with the surface of the bot's backend, turns chat
messages into :class:`~bot.runtime.callers.Person` callers and places, and makes every
``@action`` a chat command that hands its text to :meth:`Runtime.submit`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from errbot import botcmd
from typing_extensions import Unpack

from bot.redaction import Redactor
from bot.runtime.actions import ACTION_ATTRIBUTE, ActionOptions, ActionSpec, declare
from bot.runtime.audit import FILENAME as AUDIT_FILENAME
from bot.runtime.audit import AuditStore
from bot.runtime.audit_evidence import AuditKey
from bot.runtime.callers import Person
from bot.runtime.jobs import JobExecutor
from bot.runtime.policy import Policy, Principal
from bot.runtime.runtime import Runtime
from bot.runtime.surface import Place
from bot.settings import get_settings

from .surfaces import ErrbotSurface, MattermostSurface, principal_of

log = logging.getLogger(__name__)

_ATTRIBUTE = "_opsroom_runtime"
_build_lock = threading.Lock()
F = TypeVar("F", bound=Callable[..., Any])
Surface = MattermostSurface | ErrbotSurface


def surface_for(bot: Any) -> Surface:
    """The chat surface of the bot's backend."""
    return runtime_for(bot).surface  # type: ignore[return-value]


def _make_surface(bot: Any) -> Surface:
    # Errbot's declared backend mode ("mattermost" is ours; "text" is the terminal). The
    # backend class cannot be compared: Errbot loads backends from their files.
    if bot.mode == "mattermost":
        return MattermostSurface(bot)
    return ErrbotSurface(bot, terminal=bot.mode == "text")


def close_runtime(bot: Any) -> None:
    """Stop the bot's runtime (jobs cancelled, audit log closed) and forget it."""
    runtime = getattr(bot, _ATTRIBUTE, None)
    if runtime is not None:
        runtime.executor.shutdown(wait=1)
        runtime.audit.close()
        delattr(bot, _ATTRIBUTE)


def runtime_for(bot: Any) -> Runtime:
    """The bot's runtime, built on first use from the settings."""
    runtime: Runtime | None = getattr(bot, _ATTRIBUTE, None)
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
    surface = _make_surface(bot)

    def resolve(name: str) -> str | None:
        principal = surface.lookup(name)
        return principal.user_id if principal else None

    if settings.opsroom_policy:
        policy = Policy.load(settings.opsroom_policy, resolve)
    else:
        policy = Policy.none()  # reads are open, every change is denied
    for name in policy.unresolved:
        log.error("%s: unknown user %s", policy.source, name)
    key_file = settings.opsroom_audit_key_file
    audit = AuditStore(
        Path(settings.opsroom_data_dir) / AUDIT_FILENAME,
        redact=redactor.scrub_obj,
        key=AuditKey.load(key_file) if key_file else None,
    )
    channel = settings.opsroom_audit_channel
    return Runtime(
        policy=policy,
        audit=audit,
        executor=JobExecutor(max_workers=settings.opsroom_job_workers),
        redactor=redactor,
        surface=surface,
        prefix=bot.bot_config.BOT_PREFIX,
        audit_place=surface.place_named(channel) if channel else None,
    )


def person_of(bot: Any, identifier: Any) -> Person:
    """A chat user as a runtime caller."""
    return Person(principal_of(surface_for(bot), identifier))


def whois(bot: Any, identifier: Any) -> Principal:
    return principal_of(surface_for(bot), identifier)


def place_of(bot: Any, msg: Any) -> Place:
    return surface_for(bot).place_for(msg)


def post_id_of(msg: Any) -> str:
    return str((msg.extras or {}).get("post_id", ""))


def run_from_chat(plugin: Any, spec: ActionSpec, msg: Any, args: str) -> None:
    """What an action's chat command does: hand the text to the runtime's entry point."""
    bot = plugin._bot
    runtime_for(bot).submit(
        spec, plugin, args or "", person_of(bot, msg.frm), place_of(bot, msg), post_id_of(msg)
    )


def action(name: str | None = None, **options: Unpack[ActionOptions]) -> Callable[[F], F]:
    """Declare a plugin method as an action and a chat command (``!name args``).

    The method is ``def name(self, ctx: ActionContext, <typed parameters>)`` and runs as a
    job; what it returns (``None``, a ``str``, a ``Table`` or an ``Outcome``) is the result
    shown in the channel. The options (``risk``, ``target``, ``environment``, ``check``,
    ``timeout``, ``confirm``, ``approval``, ``lock``) are typed by
    :class:`~bot.runtime.actions.ActionOptions`; see ``docs/plugin-authoring.md``.
    """
    declaration = declare(name, **options)

    def decorate(func: F) -> F:
        spec: ActionSpec = getattr(declaration(func), ACTION_ATTRIBUTE)

        def command(self: Any, msg: Any, args: str) -> None:
            run_from_chat(self, spec, msg, args)

        command.__name__ = func.__name__
        command.__qualname__ = func.__qualname__
        command.__doc__ = spec.help()
        setattr(command, ACTION_ATTRIBUTE, spec)
        decorated: F = botcmd(name=spec.name.replace(".", "_"))(command)
        return decorated

    return decorate
