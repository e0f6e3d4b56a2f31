"""The words: runtime notices rendered for one surface (Markdown or terminal text).

The runtime hands surfaces data (:mod:`bot.runtime.notices`); this module is the only
place that turns a notice into a sentence, with the surface's renderer for commands,
tables and output.
"""

from __future__ import annotations

from bot.outcomes import Outcome, Table
from bot.rendering import Renderer
from bot.runtime.notices import (
    Abandoned,
    Accepted,
    Asked,
    AuditRef,
    Decided,
    DecisionRefused,
    Denied,
    Expired,
    Finished,
    Notice,
    Refused,
    Running,
)

ICONS = {
    "succeeded": "✅",
    "failed": "❌",
    "cancelled": "🛑",
    "timed out": "⌛",
    "interrupted": "⚠️",
}


def audit(ref: AuditRef | None) -> str:
    """``audit A-000123 #1a2b3c4d5e6f``: the record and its chain hash prefix."""
    if ref is None:
        return ""
    return f"audit {ref.id} #{ref.short}" if ref.hash else f"audit {ref.id}"


def render(message: Notice | Outcome | Table | str, renderer: Renderer) -> str:
    """Any message the runtime hands a surface, as that surface's text."""
    if isinstance(message, str):
        return message
    if isinstance(message, Table):
        return renderer.table(message)
    if isinstance(message, Outcome):
        return renderer.outcome(message)
    return notice(message, renderer)


def notice(n: Notice, r: Renderer) -> str:
    if isinstance(n, Refused):
        usage = f"\nusage: {r.command(n.usage)}" if n.usage else ""
        return f"⛔ {n.reason}{usage} · nothing was run · {audit(n.audit)}"
    if isinstance(n, Denied):
        return f"⛔ denied: {n.reason} · {audit(n.audit)}"
    if isinstance(n, Asked):
        if n.approval:
            roles = ", ".join(n.approver_roles) or "nobody (see the policy)"
            return (
                f"🔐 {n.who} asks to run {r.command(n.command)}. It needs approval by "
                f"someone else with role {roles}: {r.command(f'{n.prefix}approve {n.request_id}')} "
                f"or 👍, {r.command(f'{n.prefix}reject {n.request_id}')} or 👎. "
                f"Expires in {n.minutes} min · {audit(n.audit)}"
            )
        return (
            f"❓ {n.who}, {r.command(n.command)} touches protected {n.environment}. "
            f"Confirm with {r.command(f'{n.prefix}confirm {n.request_id}')} or 👍 within "
            f"{n.minutes} min ({r.command(f'{n.prefix}reject {n.request_id}')} or 👎 to drop it) "
            f"· {audit(n.audit)}"
        )
    if isinstance(n, Decided):
        verb, icon = ("granted", "👍") if n.granted else ("rejected", "🚫")
        return f"{icon} request {n.request_id} {verb} by {n.by} · {audit(n.audit)}"
    if isinstance(n, DecisionRefused):
        tail = f" · {audit(n.audit)}" if n.audit else ""
        return f"⛔ {n.reason}{tail}"
    if isinstance(n, Expired):
        return f"⌛ request {n.request_id} expired; nothing was run · {audit(n.audit)}"
    if isinstance(n, Abandoned):
        return (
            f"⚠️ request {n.request_id} for {r.command(n.command)} was still pending when "
            f"the bot stopped; it can no longer be decided, ask again · {audit(n.audit)}"
        )
    if isinstance(n, Accepted):
        return f"⏳ {r.command(n.command)} accepted as job {n.job_id}"
    if isinstance(n, Running):
        if n.progress:
            return f"⏳ {r.command(n.command)} ({n.job_id}): {n.progress}"
        return f"⏳ {r.command(n.command)} running as {n.job_id} · {audit(n.audit)}"
    assert isinstance(n, Finished)
    icon = ICONS.get(n.status, "•")
    seconds = f" in {n.seconds:.1f}s" if n.seconds is not None else ""
    who = f" {n.who}" if n.who else ""
    body = r.outcome(n.outcome)
    head = f"{icon} {r.command(n.command)}{who} {n.status}{seconds}"
    tail = " · ".join(
        part for part in (f"job {n.job_id}" if n.job_id else "", audit(n.audit)) if part
    )
    # A one-line outcome follows a colon; anything longer goes between headline and ids.
    if body and "\n" not in body:
        return f"{head}: {body} · {tail}"
    if body:
        return f"{head}\n{body}\n{tail}"
    return f"{head} · {tail}"
