"""Rule arguments templated from an alert: ``{{labels.service}}``, ``{{annotations.x}}``,
``{{fingerprint}}``, ``{{alertname}}``. Nothing else is evaluated (no expressions)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from bot.alerts.model import Alert

_FIELD = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_.]*)\s*\}\}")
ROOTS = ("labels", "annotations", "fingerprint", "alertname")


class MissingLabel(LookupError):
    """The alert lacks what a template names; the message says which."""


def fields(template: str) -> list[str]:
    """The fields a template names (for start-up validation)."""
    return _FIELD.findall(template)


def field_problem(name: str) -> str | None:
    root, _, rest = name.partition(".")
    if root not in ROOTS:
        return (
            f"{{{{{name}}}}}: expected labels.<name>, annotations.<name>, fingerprint or alertname"
        )
    if root in ("labels", "annotations") and not rest:
        return f"{{{{{name}}}}}: name the {root[:-1]}, e.g. {{{{{root}.service}}}}"
    if root in ("fingerprint", "alertname") and rest:
        return f"{{{{{name}}}}}: {root} has no fields"
    return None


def render(template: str, alert: Alert) -> str:
    def value(found: re.Match[str]) -> str:
        root, _, rest = found.group(1).partition(".")
        source: Mapping[str, str]
        if root == "fingerprint":
            return alert.fingerprint
        if root == "alertname":
            return alert.labels.get("alertname", "")
        source = alert.labels if root == "labels" else alert.annotations
        if rest not in source:
            raise MissingLabel(f"the alert has no {root[:-1]} {rest!r}")
        return source[rest]

    return _FIELD.sub(value, template)


def is_templated(template: str) -> bool:
    return bool(_FIELD.search(template))
