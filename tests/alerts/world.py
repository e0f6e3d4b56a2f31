"""A chat-free world for the alert engine: the real runtime (policy, audit, jobs), a chat
surface that keeps every post and edit, an action plugin that records what it was asked,
and an injected clock."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Annotated, Any

import yaml

from bot.alerts.config import AlertsConfig, load_config
from bot.alerts.engine import AlertEngine
from bot.alerts.model import Alert, Notification, Status
from bot.alerts.store import AlertStore
from bot.errors import ActionFailed
from bot.messages import render
from bot.redaction import Redactor
from bot.rendering import MarkdownRenderer
from bot.runtime.actions import Arg, spec_of
from bot.runtime.actions import declare as action
from bot.runtime.audit import AuditStore
from bot.runtime.jobs import JobExecutor
from bot.runtime.policy import Policy, Principal, Risk
from bot.runtime.runtime import Runtime
from bot.runtime.surface import NoSurface, Place, Posted

TOKEN = "alertmanager-token-0123456789"
ALICE = Principal("a" * 26, "alice")
BOB = Principal("b" * 26, "bob")
POLICY = {
    "roles": {
        "remediator": {
            "members": [],
            "grants": [{"action": "service.restart"}, {"action": "health.check"}],
        },
        "approver": {"members": [BOB.user_id], "approves": ["service.restart"]},
    }
}


class Clock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Chat(NoSurface):
    """Keeps each post's current text, by id; edits replace it."""

    name = "test"

    def __init__(self) -> None:
        self.posts: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def post(self, place: Place, message: Any) -> Posted:
        with self._lock:
            post_id = f"post{next(self._ids)}"
            self.posts[post_id] = {
                "channel": place.channel,
                "thread": place.thread,
                "text": render(message, MarkdownRenderer()),
                "edits": 0,
            }
        future: Future[str] = Future()
        future.set_result(post_id)
        return Posted(future)

    def edit(self, posted: Posted, message: Any, *, final: bool) -> None:
        post_id = posted.post_id(1)
        assert post_id is not None
        with self._lock:
            self.posts[post_id]["text"] = render(message, MarkdownRenderer())
            self.posts[post_id]["edits"] += 1

    def in_channel(self, channel: str, thread: str | None = "") -> list[dict[str, Any]]:
        """Posts of a channel: top-level ("" thread, the default), a thread, or all (None)."""
        with self._lock:
            return [
                {"id": i, **p}
                for i, p in self.posts.items()
                if p["channel"] == channel and (thread is None or p["thread"] == thread)
            ]

    def texts(self) -> list[str]:
        with self._lock:
            return [p["text"] for p in self.posts.values()]

    def wait_for(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [t for t in self.texts() if needle in t]
            if found:
                return found[-1]
            time.sleep(0.01)
        raise AssertionError(f"nobody said {needle!r}; said: {self.texts()}")


Service = Annotated[str, Arg(help="a service")]


class Ops:
    """Stand-in actions: a restart that records its calls (and fails on demand), a health
    check whose answer the test sets."""

    def __init__(self) -> None:
        self.restarts: list[tuple[str, str]] = []
        self.fail = False
        self.healthy = True
        self.lock = threading.Lock()

    @action("service.restart", risk=Risk.CHANGE, target="host")
    def restart(self, ctx: Any, service: Service, host: Annotated[str, Arg(after="on")]) -> str:
        """Restart a service."""
        with self.lock:
            self.restarts.append((service, host))
        if self.fail:
            raise ActionFailed(f"{service} did not start on {host}")
        return f"restarted {service} on {host}"

    @action("health.check", risk=Risk.READ)
    def health(self, ctx: Any, service: str) -> str:
        """Check a service."""
        if not self.healthy:
            raise ActionFailed(f"{service} is unhealthy")
        return f"{service} is healthy"


RESTART, HEALTH = spec_of(Ops.restart), spec_of(Ops.health)


def base_config(with_rule: bool = True, **rule: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "receivers": {
            "am": {"kind": "alertmanager", "auth": {"bearer": {"token": {"env": "TEST_AM_TOKEN"}}}},
        },
        "routes": [
            {"matchers": ["team=web"], "channel": "~web", "mention": ["@alice", "@sre"]},
            {"matchers": [], "channel": "~ops"},
        ],
        "storm": {"posts_per_minute": 10},
        "rules": [],
    }
    if with_rule:
        document["rules"].append(
            {
                "name": "restart",
                "matchers": ["alertname=ServiceDown"],
                "action": "service.restart",
                "arguments": {"service": "{{labels.service}}", "host": "{{labels.host}}"},
                "as_role": "remediator",
                **rule,
            }
        )
    return document


class World:
    def __init__(self, tmp_path: Path, document: dict[str, Any], monkeypatch: Any) -> None:
        monkeypatch.setenv("TEST_AM_TOKEN", TOKEN)
        self.tmp_path = tmp_path
        self.path = tmp_path / "alerts.yaml"
        self.path.write_text(yaml.safe_dump(document))
        self.config: AlertsConfig = load_config(self.path)
        self.chat = Chat()
        self.ops = Ops()
        self.clock = Clock()
        self.runtime = Runtime(
            policy=Policy.from_mapping(POLICY),
            audit=AuditStore(tmp_path / "audit.sqlite3", redact=Redactor([]).scrub_obj),
            executor=JobExecutor(max_workers=4),
            redactor=Redactor([]),
            surface=self.chat,
        )
        self.store = AlertStore(tmp_path / "data" / "alerts.sqlite3")
        self.engine = self.make_engine()

    def make_engine(self) -> AlertEngine:
        actions = {"service.restart": (RESTART, self.ops), "health.check": (HEALTH, self.ops)}
        return AlertEngine(
            self.config, self.store, self.runtime, lambda: actions, Place, clock=self.clock
        )

    def restart_bot(self) -> None:
        """A new store connection and engine on the same files (the process restarted)."""
        self.engine.remediator.close()
        self.store.close()
        self.store = AlertStore(self.tmp_path / "data" / "alerts.sqlite3")
        self.engine = self.make_engine()

    def receive(self, *alerts: Alert, group: str = '{}:{alertname="ServiceDown"}') -> int:
        new = self.store.add([Notification("am", group, tuple(alerts))], self.clock())
        self.engine.process()
        return new

    def settle(self, timeout: float = 10.0, states: tuple[str, ...] = ("started",)) -> None:
        """Follow runs until none is in ``states`` (verifications may wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.engine.step()
            if not [r for r in self.store.open_runs() if r.state in states]:
                return
            time.sleep(0.01)
        raise AssertionError(f"runs still open: {self.store.open_runs()}")

    def close(self) -> None:
        self.engine.remediator.close()
        self.runtime.executor.shutdown(wait=5)
        self.runtime.audit.close()
        self.store.close()


def alert(
    host: str = "web1",
    status: Status = Status.FIRING,
    starts_at: str = "2024-01-01T00:00:00Z",
    name: str = "ServiceDown",
    **labels: str,
) -> Alert:
    all_labels = {"alertname": name, "service": "nginx", "host": host, "team": "web", **labels}
    return Alert(
        fingerprint=f"fp-{name}-{host}",
        status=status,
        labels=all_labels,
        annotations={"summary": f"nginx down on {host}"},
        starts_at=starts_at,
    )
