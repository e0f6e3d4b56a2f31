"""What senders post, validated and normalised into :mod:`bot.alerts.model`.

- Alertmanager webhook, payload version 4 (``groupKey``, ``status``, ``truncatedAlerts``,
  ``alerts[]`` with ``fingerprint``, ``labels``, ``annotations``, ``startsAt``,
  ``endsAt``, ``generatorURL``). The notification's own ``status`` is ignored: it stays
  ``firing`` while alerts inside it resolve, so each alert's status is what counts.
- Grafana unified alerting: the same shape (``version: "1"``, plus ``orgId``, ``title``,
  ``state``, ``message``, and per alert ``values``, ``silenceURL``, ``dashboardURL``...).
- Generic JSON, read through a configured :class:`~bot.alerts.config.Mapping_`.

Malformed input raises :class:`PayloadError` with a reason for the sender (a 400/422).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.alerts.config import Mapping_
from bot.alerts.model import Alert, Notification, Status, canonical_time, fingerprint_of

MAX_ALERTS = 10_000  # per request
MAX_LABELS = 100
MAX_VALUE = 4096  # characters of one label or annotation value


class PayloadError(ValueError):
    """A payload that does not validate; the message is the reason told to the sender."""


Labels = dict[str, str]


class _AlertIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Status
    labels: Labels
    annotations: Labels = {}
    startsAt: str = Field(min_length=1, max_length=64)
    endsAt: str = Field("", max_length=64)
    generatorURL: str = Field("", max_length=MAX_VALUE)
    fingerprint: str = Field("", max_length=128)


class _WebhookIn(BaseModel):
    """Alertmanager v4 and Grafana share this shape."""

    model_config = ConfigDict(extra="ignore")

    version: str
    groupKey: str = Field(max_length=MAX_VALUE)
    status: Status
    receiver: str = ""
    groupLabels: Labels = {}
    truncatedAlerts: int = Field(0, ge=0)
    alerts: list[_AlertIn] = Field(max_length=MAX_ALERTS)


def _explain(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def _checked(labels: Mapping[str, str], what: str) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise PayloadError(f"{what}: more than {MAX_LABELS} entries")
    for key, value in labels.items():
        if len(key) > 256 or len(value) > MAX_VALUE:
            raise PayloadError(f"{what}.{key[:40]}: longer than {MAX_VALUE} characters")
    return dict(labels)


def _alert(raw: _AlertIn) -> Alert:
    labels = _checked(raw.labels, "labels")
    return Alert(
        fingerprint=raw.fingerprint or fingerprint_of(labels),
        status=raw.status,
        labels=labels,
        annotations=_checked(raw.annotations, "annotations"),
        starts_at=canonical_time(raw.startsAt),
        ends_at=canonical_time(raw.endsAt),
        generator_url=raw.generatorURL,
    )


def parse_webhook(body: Any, receiver: str, *, kind: str) -> Notification:
    """An Alertmanager (v4) or Grafana webhook body."""
    try:
        payload = _WebhookIn.model_validate(body)
    except ValidationError as exc:
        raise PayloadError(_explain(exc)) from None
    if kind == "alertmanager" and payload.version != "4":
        raise PayloadError(
            f"version: expected Alertmanager webhook version 4 (got {payload.version!r})"
        )
    return Notification(
        receiver=receiver,
        group_key=payload.groupKey,
        alerts=tuple(_alert(a) for a in payload.alerts),
        truncated=payload.truncatedAlerts,
        group_labels=_checked(payload.groupLabels, "groupLabels"),
    )


def _at(body: Any, path: str) -> Any:
    value = body
    for part in path.split(".") if path else []:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _text(item: Any, path: str, default: str = "") -> str:
    value = _at(item, path) if path else None
    return default if value is None else str(value)[:MAX_VALUE]


def parse_generic(body: Any, receiver: str, mapping: Mapping_) -> list[Notification]:
    """A generic JSON body read through ``mapping``; one notification per group."""
    items = _at(body, mapping.alerts) if mapping.alerts else [body]
    if not isinstance(items, list):
        raise PayloadError(f"{mapping.alerts or 'body'}: expected a list of alerts")
    if len(items) > MAX_ALERTS:
        raise PayloadError(f"{mapping.alerts}: more than {MAX_ALERTS} alerts")
    groups: dict[str, list[Alert]] = {}
    for index, item in enumerate(items):
        where = f"{mapping.alerts or 'body'}.{index}" if mapping.alerts else "body"
        if not isinstance(item, Mapping):
            raise PayloadError(f"{where}: expected an object")
        labels = _at(item, mapping.labels)
        if not isinstance(labels, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise PayloadError(f"{where}.{mapping.labels}: expected an object of strings")
        labels = _checked(labels, f"{where}.{mapping.labels}")
        annotations = _at(item, mapping.annotations) if mapping.annotations else {}
        if not isinstance(annotations, Mapping):
            raise PayloadError(f"{where}.{mapping.annotations}: expected an object")
        status = _at(item, mapping.status)
        if not isinstance(status, str):
            raise PayloadError(f"{where}.{mapping.status}: expected a string")
        text = {k: str(v) for k, v in annotations.items()}

        fingerprint = _text(item, mapping.fingerprint) or fingerprint_of(labels)
        alert = Alert(
            fingerprint=fingerprint[:128],
            status=Status.FIRING if status in mapping.firing else Status.RESOLVED,
            labels=labels,
            annotations=_checked(text, f"{where}.{mapping.annotations}"),
            starts_at=canonical_time(_text(item, mapping.starts_at, "-")[:64]),
            ends_at=canonical_time(_text(item, mapping.ends_at)[:64]),
            generator_url=_text(item, mapping.generator_url),
        )
        groups.setdefault(_text(item, mapping.group_key) or fingerprint, []).append(alert)
    return [Notification(receiver, key, tuple(alerts)) for key, alerts in groups.items()]
