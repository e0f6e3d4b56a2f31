"""A storm: 5,000 alerts, grouped and ungrouped, through the receiver over HTTP. Each is
stored once, the channels get a bounded number of posts, and each fingerprint is
remediated at most once per cooldown."""

from __future__ import annotations

import json

import requests

from bot.alerts.auth import RefusalLog
from bot.alerts.receivers import Receiver
from bot.http import HttpServer
from tests.alerts.world import TOKEN, base_config

N = 5000
REMEDIATED = 1100


def notification(group: str, hosts: range, status: str = "firing") -> dict:
    return {
        "version": "4",
        "groupKey": group,
        "status": "firing",
        "receiver": "opsroom",
        "groupLabels": {},
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": status,
                "labels": {
                    "alertname": "ServiceDown",
                    "service": "nginx",
                    "host": f"h{i}",
                    "team": "web",
                },
                "annotations": {},
                "startsAt": "2024-01-01T00:00:00Z",
                "fingerprint": f"{i:016x}",
            }
            for i in hosts
        ],
    }


def test_five_thousand_alerts_grouped_and_ungrouped(make_world):
    # The rule covers 1,100 of the hosts, grouped (h0-h999) and ungrouped (h2500-h2599):
    # enough to show at-most-once without 5,000 audited runs.
    document = base_config(cooldown="1h", max_runs=100_000, max_targets=100_000)
    document["rules"][0]["matchers"].append(r'host=~"h(\d{1,3}|25\d\d)"')
    world = make_world(document)
    server = HttpServer("127.0.0.1:0")
    receiver = Receiver(
        "am",
        world.config.receivers["am"],
        world.store,
        on_stored=lambda n: None,
        refusals=RefusalLog(),
    )
    server.mount("POST", "/alerts/am", receiver.handle)
    server.start()
    session = requests.Session()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def send(body: dict) -> dict:
        answer = session.post(f"{server.url}/alerts/am", data=json.dumps(body), headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    try:
        # Half in 25 groups of 100 (each sent twice: the repeat stores nothing) ...
        for g in range(25):
            hosts = range(g * 100, (g + 1) * 100)
            assert send(notification(f"grouped-{g}", hosts))["new"] == 100
            assert send(notification(f"grouped-{g}", hosts))["new"] == 0
        # ... half ungrouped: one alert per notification.
        for i in range(N // 2, N):
            send(notification(f"single-{i}", range(i, i + 1)))
        assert world.store.event_count() == N
        world.settle(timeout=120)
        # Every fingerprint the rule matches remediated once ...
        assert len(world.ops.restarts) == REMEDIATED
        assert len(set(world.ops.restarts)) == REMEDIATED
        # ... and again nothing when the whole storm is re-sent within the cooldown, as
        # a new state (fired again) for the first 1,000.
        world.clock.advance(60)
        for g in range(10):
            body = notification(f"grouped-{g}", range(g * 100, (g + 1) * 100))
            for a in body["alerts"]:
                a["startsAt"] = "2024-01-01T00:05:00Z"
            send(body)
        world.settle(timeout=60)
        assert len(world.ops.restarts) == REMEDIATED
        # The channel: at most 10 group posts a minute plus one storm summary, edited.
        top = world.chat.in_channel("~web")
        groups = [p for p in top if "ServiceDown" in p["text"]]
        summaries = [p for p in top if "alert storm" in p["text"]]
        assert len(groups) <= 20 and len(summaries) <= 2, (len(groups), len(summaries))
        assert "more alert group(s) this minute were not posted" in summaries[0]["text"]
    finally:
        server.stop()
