"""Thin clients: Alertmanager API v2 (alerts, silences) and Prometheus ``/api/v1/query``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from bot.alerts.config import Server
from bot.alerts.matchers import Matcher
from bot.alerts.model import Alert, Status, canonical_time
from bot.errors import ActionFailed


def _status(ends_at: str) -> Status:
    """Firing until its ``endsAt`` has passed (an alert Alertmanager holds may be active,
    silenced or inhibited: all three are still firing)."""
    try:
        ended = datetime.fromisoformat(canonical_time(ends_at).replace("Z", "+00:00"))
    except ValueError:
        return Status.FIRING
    return Status.RESOLVED if ended <= datetime.now(UTC) else Status.FIRING


class ServerClient:
    def __init__(self, server: Server, what: str) -> None:
        self.base = str(server.url).rstrip("/")
        self.timeout = server.timeout.total_seconds()
        self.what = what
        self.session = requests.Session()
        if server.token is not None:
            self.session.headers["Authorization"] = f"Bearer {server.token.read().decode()}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(
                method, self.base + path, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise ActionFailed(
                f"{self.what} at {self.base} unreachable: {type(exc).__name__}"
            ) from None
        if not response.ok:
            raise ActionFailed(
                f"{self.what} answered HTTP {response.status_code} to {method} {path}: "
                f"{response.text[:200]}"
            )
        return response.json() if response.content else None


class Alertmanager(ServerClient):
    def __init__(self, server: Server) -> None:
        super().__init__(server, "Alertmanager")

    def alerts(self, matchers: Iterable[Matcher] = ()) -> list[Alert]:
        """The alerts Alertmanager holds (``GET /api/v2/alerts``), as our model: used when
        a notification was truncated (``truncatedAlerts`` > 0)."""
        params = [("filter", str(m)) for m in matchers]
        found = self._call("GET", "/api/v2/alerts", params=params) or []
        return [
            Alert(
                fingerprint=a["fingerprint"],
                status=_status(a.get("endsAt", "")),
                labels=a.get("labels", {}),
                annotations=a.get("annotations", {}),
                starts_at=canonical_time(a.get("startsAt", "")),
                ends_at=canonical_time(a.get("endsAt", "")),
                generator_url=a.get("generatorURL", ""),
            )
            for a in found
        ]

    def silence(
        self, matchers: Iterable[Matcher], duration: timedelta, comment: str, by: str
    ) -> str:
        """Create a silence from now for ``duration``; returns its id."""
        start = datetime.now(UTC)
        body = {
            "matchers": [m.api() for m in matchers],
            "startsAt": start.isoformat(),
            "endsAt": (start + duration).isoformat(),
            "createdBy": by,
            "comment": comment,
        }
        return str(self._call("POST", "/api/v2/silences", json=body)["silenceID"])

    def expire(self, silence_id: str) -> None:
        self._call("DELETE", f"/api/v2/silence/{silence_id}")

    def silences(self) -> list[Mapping[str, Any]]:
        return list(self._call("GET", "/api/v2/silences") or [])


class Prometheus(ServerClient):
    def __init__(self, server: Server) -> None:
        super().__init__(server, "Prometheus")

    def healthy(self, query: str) -> tuple[bool, str]:
        """Run an instant query; healthy when it returns at least one sample."""
        data = self._call("GET", "/api/v1/query", params={"query": query})
        result = (data or {}).get("data", {}).get("result", [])
        if result:
            return True, f"{query} returned {len(result)} sample(s)"
        return False, f"{query} returned nothing"
