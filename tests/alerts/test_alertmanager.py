"""Against a real Alertmanager 0.25: truncated groups fetched from its API, silences
created and expired, and its notifications acted on per alert."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from bot.alerts.auth import RefusalLog
from bot.alerts.clients import Alertmanager as AlertmanagerClient
from bot.alerts.config import Server
from bot.alerts.matchers import parse_matcher
from bot.alerts.receivers import Receiver
from bot.http import HttpServer
from bot.testing.sshd import free_port
from tests.alerts.servers import Alertmanager, unavailable_reason
from tests.alerts.world import TOKEN, World, base_config
from tests.e2e.harness import wait_until


@pytest.fixture
def real_am(tmp_path, monkeypatch):
    """A world whose receiver listens on HTTP, and a real Alertmanager posting to it with
    max_alerts 2 (so a group of 5 arrives truncated)."""
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Alertmanager is required on CI: {reason}")
        pytest.skip(reason)
    port = free_port()
    am = Alertmanager(tmp_path / "am", f"http://127.0.0.1:{port}/alerts/am", TOKEN, max_alerts=2)
    am.start()
    document = base_config(cooldown="1h", max_targets=10)
    document["alertmanager"] = {"url": am.url}
    world = World(tmp_path, document, monkeypatch)
    server = HttpServer(f"127.0.0.1:{port}")
    receiver = Receiver(
        "am", world.config.receivers["am"], world.store,
        on_stored=world.engine.stored, refusals=RefusalLog(),
    )  # fmt: skip
    server.mount("POST", "/alerts/am", receiver.handle)
    server.start()
    yield world, am
    server.stop()
    am.stop()
    world.close()


def pushed(host: str, ends: datetime | None = None) -> dict:
    alert: dict = {
        "labels": {"alertname": "ServiceDown", "service": "nginx", "host": host, "team": "web"},
        "annotations": {"summary": f"nginx down on {host}"},
        "startsAt": datetime(2024, 1, 1, tzinfo=UTC).isoformat(),
    }
    if ends is not None:
        alert["endsAt"] = ends.isoformat()
    return alert


def test_a_truncated_group_is_fetched_whole_and_acted_on_per_alert(real_am):
    world, am = real_am
    hosts = [f"web{i}" for i in range(5)]
    am.post_alerts([pushed(h) for h in hosts])
    wait_until(lambda: world.store.event_count() >= 2, message="the truncated notification")

    def all_stored():
        world.engine.step()
        return world.store.event_count() == 5

    wait_until(all_stored, message="the group fetched from GET /api/v2/alerts")
    world.settle()
    assert sorted(h for _, h in world.ops.restarts) == hosts
    # One alert resolves: the group's status stays "firing", the alert's is "resolved".
    am.post_alerts([pushed("web0", ends=datetime.now(UTC) - timedelta(seconds=1))])

    def resolved_shown():
        world.engine.step()
        [post] = world.chat.in_channel("~web")
        return "4 firing, 1 resolved" in post["text"]

    wait_until(resolved_shown, message="web0 resolved in the group post")
    assert len(world.ops.restarts) == 5  # nothing ran again for the repeated notifications


def test_silences_are_created_and_expired_through_api_v2(real_am):
    _, am = real_am
    client = AlertmanagerClient(Server(url=am.url))
    silence_id = client.silence(
        [parse_matcher("alertname=ServiceDown"), parse_matcher('host=~"web.*"')],
        timedelta(hours=2),
        "deploy in progress",
        "@alice",
    )
    [silence] = am.silences()
    assert silence["id"] == silence_id and silence["status"]["state"] == "active"
    assert silence["createdBy"] == "@alice" and silence["comment"] == "deploy in progress"
    assert {"name": "host", "value": "web.*", "isRegex": True, "isEqual": True} in silence[
        "matchers"
    ]
    client.expire(silence_id)
    assert am.silences()[0]["status"]["state"] == "expired"
