"""Receivers over real HTTP: authentication, limits, validation; a 2xx means stored."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

import pytest
import requests

from bot.alerts.auth import RefusalLog
from bot.alerts.config import AlertsConfigError, check_rules, load_config
from bot.alerts.receivers import Receiver
from bot.alerts.store import AlertStore
from bot.http import HttpServer
from tests.alerts.world import HEALTH, RESTART, TOKEN, Clock

SECRET = "grafana-signing-secret-0123"


def am_payload(n=1, status="firing", group="g1", truncated=0):
    return {
        "version": "4",
        "groupKey": group,
        "truncatedAlerts": truncated,
        "status": "firing",
        "receiver": "opsroom",
        "groupLabels": {"alertname": "ServiceDown"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "ServiceDown", "host": f"web{i}"},
                "annotations": {},
                "startsAt": "2024-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prom/graph",
                "fingerprint": f"{i:016x}",
            }
            for i in range(n)
        ],
    }


@pytest.fixture
def receiving(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_AM_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_GRAFANA_SECRET", SECRET)
    path = tmp_path / "alerts.yaml"
    path.write_text(
        json.dumps(
            {
                "receivers": {
                    "am": {
                        "kind": "alertmanager",
                        "max_body": "64KiB",
                        "auth": {"bearer": {"token": {"env": "TEST_AM_TOKEN"}}},
                    },
                    "grafana": {
                        "kind": "grafana",
                        "auth": {
                            "hmac": {
                                "secret": {"env": "TEST_GRAFANA_SECRET"},
                                "header": "X-Grafana-Alerting-Signature",
                            }
                        },
                    },
                    "custom": {
                        "kind": "generic",
                        "path": "/hooks/custom",
                        "auth": {"bearer": {"token": {"env": "TEST_AM_TOKEN"}}},
                        "mapping": {
                            "alerts": "events",
                            "fingerprint": "id",
                            "status": "state",
                            "firing": ["open"],
                            "labels": "tags",
                            "starts_at": "opened",
                        },
                    },
                }
            }
        )
    )
    config = load_config(path)
    store = AlertStore(tmp_path / "alerts.sqlite3")
    server = HttpServer("127.0.0.1:0")
    woken: list[object] = []
    refusals = RefusalLog(interval=300, clock=Clock())
    for name, rc in config.receivers.items():
        receiver = Receiver(name, rc, store, on_stored=woken.append, refusals=refusals)
        server.mount("POST", config.path_of(name), receiver.handle)
    server.start()
    yield server, store, woken
    server.stop()
    store.close()


def post(server, path, body, headers=None, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(
        f"{server.url}{path}",
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=10,
    )


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_an_authenticated_alertmanager_notification_is_stored_before_the_answer(receiving):
    server, store, woken = receiving
    answer = post(server, "/alerts/am", am_payload(3), BEARER)
    assert answer.status_code == 200 and answer.json() == {"received": 3, "new": 3}
    assert store.event_count() == 3 and len(woken) == 1
    again = post(server, "/alerts/am", am_payload(3), BEARER)  # byte-identical repeat
    assert again.json() == {"received": 3, "new": 0}
    assert store.event_count() == 3


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "no Authorization header"),
        ({"Authorization": "Bearer wrong-token"}, "wrong bearer token"),
        ({"Authorization": f"Basic {TOKEN}"}, "Authorization scheme 'Basic', expected Bearer"),
    ],
)
def test_unauthenticated_requests_get_401_and_nothing_is_stored(receiving, headers, reason):
    server, store, woken = receiving
    answer = post(server, "/alerts/am", am_payload(), headers)
    assert answer.status_code == 401
    assert answer.json() == {"error": reason}
    assert store.event_count() == 0 and woken == []


def sign(body: bytes, secret=SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_grafana_needs_the_hmac_signature_in_the_configured_header(receiving):
    server, store, _ = receiving
    body = json.dumps({**am_payload(1), "version": "1", "orgId": 1, "title": "x"}).encode()
    ok = post(
        server, "/alerts/grafana", None, {"X-Grafana-Alerting-Signature": sign(body)}, raw=body
    )
    assert ok.status_code == 200, ok.text
    wrong = post(
        server,
        "/alerts/grafana",
        None,
        {"X-Grafana-Alerting-Signature": sign(body, "x" * 20)},
        raw=body,
    )
    assert wrong.status_code == 401
    # The header name of Grafana's examples is not the one configured here.
    other = post(
        server, "/alerts/grafana", None, {"X-Grafana-Alert-Signature": sign(body)}, raw=body
    )
    assert other.json() == {"error": "no X-Grafana-Alerting-Signature header"}
    tampered = post(
        server,
        "/alerts/grafana",
        None,
        {"X-Grafana-Alerting-Signature": sign(body)},
        raw=body + b" ",
    )
    assert tampered.status_code == 401
    assert store.event_count() == 1


def test_generic_json_through_the_mapping(receiving):
    server, store, _ = receiving
    body = {
        "events": [
            {
                "id": "e1",
                "state": "open",
                "tags": {"alertname": "DiskFull", "host": "db1"},
                "opened": "t1",
            },
            {
                "id": "e2",
                "state": "closed",
                "tags": {"alertname": "DiskFull", "host": "db2"},
                "opened": "t1",
            },
        ]
    }
    answer = post(server, "/hooks/custom", body, BEARER)
    assert answer.json() == {"received": 2, "new": 2}
    [first, second] = store.pending()
    assert (first.alert.fingerprint, first.alert.status.value) == ("e1", "firing")
    assert (second.alert.fingerprint, second.alert.status.value) == ("e2", "resolved")


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "reason"),
    [
        (b"{not json", "application/json", 400, "not JSON"),
        (
            json.dumps({"version": "4"}).encode(),
            "application/json",
            422,
            "groupKey: Field required",
        ),
        (
            json.dumps({**am_payload(), "version": "3"}).encode(),
            "application/json",
            422,
            "expected Alertmanager webhook version 4",
        ),
        (
            json.dumps(
                {**am_payload(), "alerts": [{**am_payload()["alerts"][0], "status": "burning"}]}
            ).encode(),
            "application/json",
            422,
            "alerts.0.status",
        ),
        (json.dumps(am_payload()).encode(), "text/plain", 415, "expected application/json"),
        (b"x" * (64 * 1024 + 1), "application/json", 413, "the limit is 65536"),
    ],
)
def test_malformed_oversized_or_mistyped_bodies_are_refused_with_a_reason(
    receiving, raw, content_type, status, reason
):
    server, store, woken = receiving
    answer = requests.post(
        f"{server.url}/alerts/am",
        data=raw,
        headers={"Content-Type": content_type, **BEARER},
        timeout=10,
    )
    assert answer.status_code == status
    assert reason in answer.json()["error"]
    assert store.event_count() == 0 and woken == []
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200  # still serving


def test_an_oversized_chunked_body_is_cut_off(receiving):
    server, store, _ = receiving

    def chunks():
        for _ in range(100):
            yield b"x" * 1024

    answer = requests.post(
        f"{server.url}/alerts/am",
        data=chunks(),
        headers={"Content-Type": "application/json", **BEARER},
        timeout=10,
    )
    assert answer.status_code == 413
    assert store.event_count() == 0


def test_a_misconfigured_sender_is_logged_once_per_interval(receiving, caplog):
    server, _, _ = receiving
    with caplog.at_level(logging.WARNING, logger="bot.alerts.auth"):
        for _ in range(20):  # Alertmanager re-sends a 4xx'd notification every group_interval
            assert (
                post(server, "/alerts/am", am_payload(), {"Authorization": "Bearer x"}).status_code
                == 401
            )
    lines = [r.getMessage() for r in caplog.records if "refused a request" in r.getMessage()]
    assert len(lines) == 1
    assert "HTTP 401, wrong bearer token" in lines[0]


def test_refusal_log_reports_again_after_the_interval_with_a_count(caplog):
    clock = Clock()
    log = RefusalLog(interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="bot.alerts.auth"):
        assert log.refused("10.0.0.1", "am", 401, "wrong bearer token")
        assert not log.refused("10.0.0.1", "am", 401, "wrong bearer token")
        assert log.refused("10.0.0.2", "am", 401, "wrong bearer token")  # another source
        clock.advance(61)
        assert log.refused("10.0.0.1", "am", 401, "wrong bearer token")
    assert "(and 1 more since the last report)" in caplog.records[-1].getMessage()


# --- the file ---------------------------------------------------------------------------------
def write(tmp_path, document):
    path = tmp_path / "alerts.yaml"
    path.write_text(json.dumps(document))
    return path


def test_config_errors_name_the_file_and_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_AM_TOKEN", TOKEN)
    path = write(
        tmp_path,
        {
            "receivers": {
                "am": {"kind": "alertmanager", "auth": {"bearer": {"token": {"env": "NOPE"}}}}
            },
            "routes": [{"matchers": ["severity=~(crit"], "channel": "~ops"}],
            "rules": [
                {"name": "r", "matchers": ["a=b"], "action": "x", "as_role": "r", "cooldwn": "1m"}
            ],
        },
    )
    with pytest.raises(AlertsConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert f"{path}: routes.0.matchers: " in text and "bad regular expression" in text
    assert f"{path}: rules.0.cooldwn: unknown key" in text


def test_a_secret_that_is_not_set_is_a_start_up_error(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    path = write(
        tmp_path,
        {
            "receivers": {
                "am": {"kind": "alertmanager", "auth": {"bearer": {"token": {"env": "NOPE"}}}}
            }
        },
    )
    with pytest.raises(
        AlertsConfigError, match=r"receivers\.am\.auth: environment variable NOPE is unset"
    ):
        load_config(path)


def test_rules_are_checked_against_the_actions_signatures(tmp_path):
    path = write(
        tmp_path,
        {
            "rules": [
                {"name": "a", "matchers": ["x=y"], "action": "service.reboot", "as_role": "r"},
                {
                    "name": "b",
                    "matchers": ["x=y"],
                    "action": "service.restart",
                    "arguments": {"service": "{{labels.service}}", "hots": "{{labels.host}}"},
                    "as_role": "r",
                },
                {
                    "name": "c",
                    "matchers": ["x=y"],
                    "action": "service.restart",
                    "arguments": {"service": "{{labels.service}}", "host": "{{labels.host}}"},
                    "as_role": "r",
                    "verify_within": "1m",
                    "verify": {
                        "action": "service.restart",
                        "arguments": {"service": "x", "host": "y"},
                    },
                },
            ]
        },
    )
    config = load_config(path)
    problems = check_rules(
        config, {"service.restart": RESTART, "health.check": HEALTH}, "alerts.yaml"
    )
    assert problems == [
        "alerts.yaml: rules.0.action: unknown action 'service.reboot' "
        "(known: health.check, service.restart)",
        "alerts.yaml: rules.1.arguments.hots: service.restart has no parameter 'hots' "
        "(parameters: service, host)",
        "alerts.yaml: rules.1.arguments: service.restart needs 'host'",
        "alerts.yaml: rules.2.verify.action: service.restart is a change action; "
        "verify with a read action",
    ]


def test_a_template_naming_nothing_known_is_refused(tmp_path):
    path = write(
        tmp_path,
        {
            "rules": [
                {
                    "name": "a",
                    "matchers": ["x=y"],
                    "action": "s",
                    "as_role": "r",
                    "arguments": {"s": "{{label.x}}"},
                }
            ]
        },
    )
    with pytest.raises(AlertsConfigError, match=r"rules\.0: .*expected labels\.<name>"):
        load_config(path)
