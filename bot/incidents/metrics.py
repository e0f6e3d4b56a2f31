"""MTTA, MTTM and MTTR from real timestamps, by severity and service, and their trend.

Each incident's times run from its start (the alert's start when an alert declared it, the
declaration otherwise) to its acknowledgement (the declaration by a person, or the first
thing a person did), its mitigation and its resolution. Means are over the incidents
declared in the period that reached that point. The trend chart (matplotlib, Agg backend,
PNG) has one point per day (periods up to 14 days) or per week, for each measure, where
at least one incident reached it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import mean

from bot.incidents.config import IncidentsConfig
from bot.incidents.model import Incident
from bot.incidents.postmortem import durations
from bot.incidents.service import minutes
from bot.outcomes import Table

MEASURES = (("MTTA", "acknowledge"), ("MTTM", "mitigate"), ("MTTR", "resolve"))


def _mean(incidents: Iterable[Incident], measure: str) -> timedelta | None:
    values = [
        value.total_seconds()
        for incident in incidents
        if (value := durations(incident)[measure]) is not None
    ]
    return timedelta(seconds=mean(values)) if values else None


def metrics_table(
    incidents: Sequence[Incident], config: IncidentsConfig, since: datetime, until: datetime
) -> Table:
    """One row per severity and per service (and one for all), over the period."""
    groups: list[tuple[str, list[Incident]]] = [("all", list(incidents))]
    for severity in sorted({i.severity for i in incidents}):
        groups.append(
            (config.severity_label(severity), [i for i in incidents if i.severity == severity])
        )
    for service in sorted({i.service for i in incidents if i.service}):
        groups.append((f"service {service}", [i for i in incidents if i.service == service]))
    return Table(
        ("group", "incidents", "MTTA", "MTTM", "MTTR"),
        [
            (name, len(members), *(minutes(_mean(members, m)) for _, m in MEASURES))
            for name, members in groups
        ],
        title=f"Incidents declared {since:%Y-%m-%d} to {until:%Y-%m-%d}",
    )


@dataclass(frozen=True)
class TrendPoint:
    bucket: datetime  # start of the day or week
    measure: str  # MTTA, MTTM or MTTR
    minutes: float


def bucket_size(since: datetime, until: datetime) -> timedelta:
    return timedelta(days=1) if until - since <= timedelta(days=14) else timedelta(days=7)


def trend(incidents: Sequence[Incident], since: datetime, until: datetime) -> list[TrendPoint]:
    size = bucket_size(since, until)
    buckets: dict[datetime, list[Incident]] = {}
    for incident in incidents:
        index = int((incident.declared_at - since) / size)
        buckets.setdefault(since + index * size, []).append(incident)
    points = []
    for start in sorted(buckets):
        for label, measure in MEASURES:
            value = _mean(buckets[start], measure)
            if value is not None:
                points.append(TrendPoint(start, label, value.total_seconds() / 60))
    return points


def chart_png(points: Sequence[TrendPoint], title: str) -> bytes:
    """The trend as a PNG: one line per measure, minutes over time."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    import matplotlib.dates
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4), dpi=100)
    axes = figure.subplots()
    for label, _ in MEASURES:
        series = [p for p in points if p.measure == label]
        if series:
            days = [matplotlib.dates.date2num(p.bucket) for p in series]
            axes.plot(days, [p.minutes for p in series], marker="o", label=label)
    axes.set_title(title)
    axes.set_ylabel("minutes")
    axes.xaxis_date()
    axes.grid(True, alpha=0.3)
    if points:
        axes.legend()
    figure.autofmt_xdate()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
