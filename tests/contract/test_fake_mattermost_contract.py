"""Contract tests: the fake Mattermost speaks REST v4 and the reliable WebSocket as documented.

REST traffic goes through the real ``mattermostdriver`` client and websocket traffic through the
``websockets`` library, over a real loopback socket, so the fake is held to what real clients
send and expect.  Every test ends with the fake's own OpenAPI shape check being clean.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from mattermostdriver import Driver
from mattermostdriver.exceptions import (
    FeatureDisabled,
    InvalidOrMissingParameters,
    NoAccessTokenProvided,
    NotEnoughPermissions,
    ResourceNotFound,
)
from mattermostdriver.websocket import Websocket
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from bot.testing.fake_mattermost import FakeMattermost, rate_limit_headers
from bot.testing.fake_mattermost.openapi import load_docs

APP_ERROR_KEYS = {"id", "message", "detailed_error", "request_id", "status_code"}


@dataclass
class World:
    fm: FakeMattermost
    team: dict[str, Any]
    bot: dict[str, Any]
    alice: dict[str, Any]
    bob: dict[str, Any]
    channel: dict[str, Any]
    token: str
    driver: Driver

    def url(self, path: str) -> str:
        return f"{self.fm.url}/api/v4{path}"

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}


@pytest.fixture
def world(fake_mm: FakeMattermost) -> Iterator[World]:
    team = fake_mm.add_team("ops", "Ops")
    bot = fake_mm.add_user("opsbot", is_bot=True)
    alice = fake_mm.add_user("alice")
    bob = fake_mm.add_user("bob")
    for user in (bot, alice, bob):
        fake_mm.add_to_team(team, user)
    channel = fake_mm.add_channel(team, "deploys", display_name="Deploys")
    for user in (bot, alice):
        fake_mm.add_member(channel, user)
    token = fake_mm.create_token(bot)
    driver = Driver(
        {"url": "127.0.0.1", "port": fake_mm.port, "scheme": "http", "token": token, "timeout": 5}
    )
    driver.login()
    yield World(fake_mm, team, bot, alice, bob, channel, token, driver)
    assert fake_mm.contract_violations == []


def ws_url(fm: FakeMattermost, connection_id: str = "", sequence_number: int | None = 0) -> str:
    query = f"connection_id={connection_id}"
    if sequence_number is not None:
        query += f"&sequence_number={sequence_number}"
    return f"ws://127.0.0.1:{fm.port}/api/v4/websocket?{query}"


@contextmanager
def ws_connect(
    fm: FakeMattermost,
    token: str | None,
    connection_id: str = "",
    sequence_number: int | None = 0,
) -> Iterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with connect(
        ws_url(fm, connection_id, sequence_number), additional_headers=headers, open_timeout=5
    ) as ws:
        yield ws


def recv(ws: ClientConnection, timeout: float = 3.0) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def recv_event(ws: ClientConnection, event: str, timeout: float = 3.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        message = recv(ws, max(0.01, deadline - time.monotonic()))
        if message.get("event") == event:
            return message


def assert_app_error(response: requests.Response, status: int, error_id: str = "") -> None:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) >= APP_ERROR_KEYS
    assert body["status_code"] == status
    assert isinstance(body["message"], str) and body["message"]
    if error_id:
        assert body["id"] == error_id


# --------------------------------------------------------------------------- documentation


def test_every_served_route_is_documented() -> None:
    docs = load_docs()
    for route in FakeMattermost.ROUTES:
        assert docs.operation(route.method, route.template) is not None, route
    assert docs.documents_websocket()


def test_driver_drives_every_route(world: World) -> None:
    fm, d, ch = world.fm, world.driver, world.channel
    assert d.system.check_system_health() == {"status": "OK"}
    assert d.users.get_user("me")["id"] == world.bot["id"]
    assert d.users.get_user(world.alice["id"])["username"] == "alice"
    assert d.users.get_user_by_username("alice")["id"] == world.alice["id"]
    assert [u["username"] for u in d.users.get_users_by_ids([world.alice["id"]])] == ["alice"]
    assert {u["id"] for u in d.users.get_users_by_usernames(["alice", "bob"])} == {
        world.alice["id"],
        world.bob["id"],
    }
    assert [t["name"] for t in d.teams.get_user_teams("me")] == ["ops"]
    fm.add_group("sre", [world.alice])
    assert [g["name"] for g in d.client.get(f"/users/{world.alice['id']}/groups")] == ["sre"]
    assert d.client.get(f"/users/{world.bob['id']}/groups") == []
    fm.groups_enabled = False
    with pytest.raises(FeatureDisabled):
        d.client.get(f"/users/{world.alice['id']}/groups")
    fm.groups_enabled = True
    assert d.teams.get_team(world.team["id"])["name"] == "ops"
    assert d.teams.get_team_by_name("ops")["id"] == world.team["id"]
    assert d.channels.get_channel(ch["id"])["name"] == "deploys"
    assert d.channels.get_channel_by_name_and_team_name("ops", "deploys")["id"] == ch["id"]
    assert d.channels.get_channel_by_name(world.team["id"], "deploys")["id"] == ch["id"]
    members = d.channels.get_channel_members(ch["id"])
    assert {m["user_id"] for m in members} == {world.bot["id"], world.alice["id"]}
    assert (
        d.channels.add_user(ch["id"], options={"user_id": world.bob["id"]})["user_id"]
        == (world.bob["id"])
    )
    assert d.channels.remove_channel_member(ch["id"], world.bob["id"]) == {"status": "OK"}
    dm = d.channels.create_direct_message_channel([world.bot["id"], world.alice["id"]])
    assert dm["type"] == "D"
    assert dm["name"] == "__".join(sorted([world.bot["id"], world.alice["id"]]))
    mine = d.channels.get_channels_for_user("me", world.team["id"])
    assert {c["id"] for c in mine} == {ch["id"], dm["id"]}

    upload = d.files.upload_file(ch["id"], {"files": ("report.txt", b"all green")})
    file_id = upload["file_infos"][0]["id"]
    root = d.posts.create_post({"channel_id": ch["id"], "message": "deploy done"})
    reply = d.posts.create_post(
        {"channel_id": ch["id"], "message": "log", "root_id": root["id"], "file_ids": [file_id]}
    )
    assert reply["file_ids"] == [file_id]
    patched = d.posts.patch_post(root["id"], options={"message": "deploy done!", "props": {}})
    assert patched["message"] == "deploy done!" and patched["edit_at"] > 0
    assert d.posts.get_post(root["id"])["message"] == "deploy done!"
    thread = d.posts.get_thread(root["id"])
    assert set(thread["order"]) == {root["id"], reply["id"]}
    page = d.posts.get_posts_for_channel(ch["id"])
    people = [i for i in page["order"] if not page["posts"][i]["type"]]  # not system_* posts
    assert people == [reply["id"], root["id"]]
    since = d.posts.get_posts_for_channel(ch["id"], params={"since": reply["create_at"]})
    assert reply["id"] in since["order"]
    reaction = d.reactions.create_reaction(
        {"user_id": world.bot["id"], "post_id": root["id"], "emoji_name": "white_check_mark"}
    )
    assert reaction["emoji_name"] == "white_check_mark"
    assert fm.reactions_on(root["id"]) == ["white_check_mark"]
    listed = d.client.get(f"/posts/{root['id']}/reactions")  # the driver adds a "//"
    assert [(r["user_id"], r["emoji_name"]) for r in listed] == [
        (world.bot["id"], "white_check_mark")
    ]

    # incidents: channels created private, patched, pinned; groups and their members
    created = d.client.post(
        "/channels",
        options={
            "team_id": world.team["id"],
            "name": "inc-1",
            "display_name": "INC-1",
            "type": "P",
        },
    )
    assert created["type"] == "P"
    assert (
        d.client.put(f"/channels/{created['id']}/patch", options={"header": "h"})["header"] == "h"
    )
    assert d.client.post(f"/posts/{root['id']}/pin") == {"status": "OK"}
    assert fm.get_post(root["id"])["is_pinned"]
    assert d.client.post(f"/posts/{root['id']}/unpin") == {"status": "OK"}
    [group] = d.client.get("/groups", params={"q": "sre"})
    members = d.client.get(f"/groups/{group['id']}/members")["members"]
    assert [m["username"] for m in members] == ["alice"]

    docs = load_docs()
    served = {(r.method, r.template) for r in FakeMattermost.ROUTES}
    hit = set()
    for request in fm.requests:
        op = docs.match(request.method, request.path)
        if op is not None and 200 <= request.status < 300:
            hit.add((request.method, op.template))
    assert served - hit == set()
    assert fm.unexpected_requests == []


def test_json_content_type_is_exact_and_ping_needs_no_auth(fake_mm: FakeMattermost) -> None:
    response = requests.get(f"{fake_mm.url}/api/v4/system/ping", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"status": "OK"}


def test_strict_mode_records_request_and_response_violations(world: World) -> None:
    fm = world.fm
    bad = requests.post(
        world.url("/posts"),
        json={"channel_id": world.channel["id"], "message": 42},
        headers=world.headers(),
        timeout=5,
    )
    assert_app_error(bad, 400)
    requests.get(world.url("/channels/x/posts?since=yesterday"), headers=world.headers(), timeout=5)
    requests.get(world.url("/definitely/not/mattermost"), headers=world.headers(), timeout=5)
    violations = list(fm.contract_violations)
    assert any("message: 42 is not of type 'string'" in v for v in violations), violations
    assert any("since='yesterday' is not an integer" in v for v in violations), violations
    assert any("/definitely/not/mattermost: endpoint not documented" in v for v in violations)
    fm.contract_violations.clear()

    docs = load_docs()
    post_errors = docs.validate_response(
        "get", "/api/v4/posts/{post_id}", 200, {"id": 1, "props": "x"}
    )
    assert len(post_errors) == 2
    assert docs.validate_response("post", "/api/v4/posts", 200, {}) != []  # 201 is documented
    assert docs.validate_response("get", "/api/v4/posts/{post_id}", 404, {"id": "x"}) == []


# --------------------------------------------------------------------------- errors and auth


def test_unknown_and_revoked_tokens_get_401_app_error(world: World) -> None:
    fm = world.fm
    assert_app_error(
        requests.get(world.url("/users/me"), headers=world.headers("nope"), timeout=5),
        401,
        "api.context.session_expired.app_error",
    )
    assert_app_error(
        requests.get(world.url("/users/me"), timeout=5),
        401,
        "api.context.session_expired.app_error",
    )
    fm.revoke_token(world.token)
    with pytest.raises(NoAccessTokenProvided):
        world.driver.users.get_user("me")


def test_unserved_routes_get_404_app_error_and_are_recorded(world: World) -> None:
    fm = world.fm
    response = requests.get(world.url("/users/me/preferences"), headers=world.headers(), timeout=5)
    assert_app_error(response, 404, "api.context.404.app_error")
    with pytest.raises(ResourceNotFound):
        world.driver.posts.delete_post("abc")
    assert [(r.method, r.path, r.status) for r in fm.unexpected_requests] == [
        ("GET", "/api/v4/users/me/preferences", 404),
        ("DELETE", "/api/v4/posts/abc", 404),
    ]
    assert fm.unexpected_requests[0].user_id == world.bot["id"]


def test_not_a_member_cannot_post(world: World) -> None:
    secret = world.fm.add_channel(world.team, "secret", type="P")
    with pytest.raises(NotEnoughPermissions):
        world.driver.posts.create_post({"channel_id": secret["id"], "message": "hi"})
    assert world.fm.posts_by(world.bot) == []


# --------------------------------------------------------------------------- posts semantics


def test_message_length_limit_is_16383(world: World) -> None:
    d, ch = world.driver, world.channel
    assert len(
        d.posts.create_post({"channel_id": ch["id"], "message": "é" * 16383})["message"]
    ) == (16383)
    response = requests.post(
        world.url("/posts"),
        json={"channel_id": ch["id"], "message": "x" * 16384},
        headers=world.headers(),
        timeout=5,
    )
    assert_app_error(response, 400, "model.post.is_valid.msg.app_error")
    assert len(world.fm.posts_by(world.bot)) == 1


def test_root_id_must_be_a_root_post_of_the_same_channel(world: World) -> None:
    fm, d, ch = world.fm, world.driver, world.channel
    root = fm.post_as(world.alice, ch, "deploy api")
    reply = d.posts.create_post({"channel_id": ch["id"], "message": "ok", "root_id": root["id"]})
    assert reply["root_id"] == root["id"]
    with pytest.raises(InvalidOrMissingParameters):
        d.posts.create_post({"channel_id": ch["id"], "message": "no", "root_id": reply["id"]})
    other = fm.add_channel(world.team, "other")
    fm.add_member(other, world.bot)
    with pytest.raises(InvalidOrMissingParameters):
        d.posts.create_post({"channel_id": other["id"], "message": "no", "root_id": root["id"]})
    with pytest.raises(InvalidOrMissingParameters):
        d.posts.create_post({"channel_id": ch["id"], "message": "no", "root_id": "x" * 26})
    assert [p["message"] for p in fm.posts_by(world.bot)] == ["ok"]
    assert fm.get_post(root["id"])["reply_count"] == 1


def test_pending_post_id_deduplicates(world: World) -> None:
    d, ch = world.driver, world.channel
    first = d.posts.create_post({"channel_id": ch["id"], "message": "a", "pending_post_id": "p1"})
    again = d.posts.create_post({"channel_id": ch["id"], "message": "a", "pending_post_id": "p1"})
    other = d.posts.create_post({"channel_id": ch["id"], "message": "a", "pending_post_id": "p2"})
    assert again["id"] == first["id"] and other["id"] != first["id"]
    assert len(world.fm.posts_by(world.bot)) == 2


def test_since_returns_posts_updated_at_or_after(world: World) -> None:
    fm, d, ch = world.fm, world.driver, world.channel
    now = int(time.time() * 1000)
    stale = fm.post_as(world.alice, ch, "!deploy old", create_at=now - 3_600_000)
    fresh = fm.post_as(world.alice, ch, "!deploy new")
    assert stale["create_at"] == stale["update_at"] == now - 3_600_000
    result = d.posts.get_posts_for_channel(ch["id"], params={"since": fresh["update_at"]})
    assert result["order"] == [fresh["id"]]
    assert set(result["posts"]) == {fresh["id"]}
    assert result["next_post_id"] == result["prev_post_id"] == ""
    fm.edit_as(world.alice, stale["id"], "!deploy old (edited)")
    result = d.posts.get_posts_for_channel(ch["id"], params={"since": fresh["update_at"]})
    assert set(result["order"]) == {fresh["id"], stale["id"]}
    everything = d.posts.get_posts_for_channel(ch["id"], params={"since": now - 4_000_000})
    assert everything["order"] == [fresh["id"], stale["id"]]  # newest first


def test_paging_without_since_is_newest_first(world: World) -> None:
    fm, d, ch = world.fm, world.driver, world.channel
    ids = [
        fm.post_as(world.alice, ch, f"m{i}", create_at=1_700_000_000_000 + i)["id"]
        for i in range(3)
    ]
    first = d.posts.get_posts_for_channel(ch["id"], params={"page": 0, "per_page": 2})
    second = d.posts.get_posts_for_channel(ch["id"], params={"page": 1, "per_page": 2})
    assert first["order"] == [ids[2], ids[1]] and first["has_next"] is True
    assert second["order"] == [ids[0]]


def test_files_attach_to_posts(world: World) -> None:
    fm, d, ch = world.fm, world.driver, world.channel
    infos = d.files.upload_file(
        ch["id"], [("files", ("a.log", b"one")), ("files", ("b.png", b"\x89PNG"))]
    )["file_infos"]
    assert [i["name"] for i in infos] == ["a.log", "b.png"]
    assert infos[1]["mime_type"] == "image/png" and infos[1]["extension"] == "png"
    post = d.posts.create_post(
        {"channel_id": ch["id"], "message": "logs", "file_ids": [i["id"] for i in infos]}
    )
    assert [f["id"] for f in post["metadata"]["files"]] == [i["id"] for i in infos]
    assert [(f["name"], f["content"], f["channel_id"]) for f in fm.uploaded_files] == [
        ("a.log", b"one", ch["id"]),
        ("b.png", b"\x89PNG", ch["id"]),
    ]
    with pytest.raises(InvalidOrMissingParameters):  # a file attaches to one post only
        d.posts.create_post({"channel_id": ch["id"], "message": "x", "file_ids": [infos[0]["id"]]})


def test_bot_and_webhook_props(world: World) -> None:
    fm, d, ch = world.fm, world.driver, world.channel
    assert d.posts.create_post({"channel_id": ch["id"], "message": "hi"})["props"] == {
        "from_bot": "true"
    }
    hook = fm.post_as(world.alice, ch, "alert", from_webhook=True, props={"k": "v"})
    assert hook["props"] == {"k": "v", "from_webhook": "true"}
    assert fm.post_as(world.bot, ch, "x")["props"] == {"from_bot": "true"}


def test_post_records_receive_times_and_hook(world: World) -> None:
    fm, ch = world.fm, world.channel
    seen: list[dict[str, Any]] = []
    fm.post_received = seen.append
    before_wall, before_mono = time.time(), time.monotonic()
    created = world.driver.posts.create_post({"channel_id": ch["id"], "message": "pong"})
    [record] = fm.wait_for_posts(world.bot, 1, timeout=2)
    assert record["id"] == created["id"] == seen[0]["id"]
    assert before_wall <= record["received_time"] <= time.time()
    assert before_mono <= record["received_monotonic"] <= time.monotonic()
    fm.post_as(world.alice, ch, "not via REST")
    assert len(seen) == 1


def test_wait_for_posts_times_out_with_what_it_has(world: World) -> None:
    fm = world.fm
    threading.Timer(0.1, fm.post_as, (world.bot, world.channel, "late")).start()
    assert [p["message"] for p in fm.wait_for_posts(world.bot, 1, timeout=3)] == ["late"]
    with pytest.raises(AssertionError, match="got 1: \\['late'\\]"):
        fm.wait_for_posts(world.bot, 2, timeout=0.2)


# --------------------------------------------------------------------------- faults


def test_fail_next_rate_limit_then_recovers(world: World) -> None:
    fm, d, ch = world.fm, world.driver, world.channel
    fm.fail_next("POST", r"^/api/v4/posts$", 429, headers=rate_limit_headers(2, 10))
    with pytest.raises(requests.HTTPError) as caught:
        d.posts.create_post({"channel_id": ch["id"], "message": "x"})
    response = caught.value.response
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert response.json()["status_code"] == 429
    assert fm.posts_by(world.bot) == []
    d.posts.create_post({"channel_id": ch["id"], "message": "x"})
    assert len(fm.posts_by(world.bot)) == 1
    assert [r.status for r in fm.requests if r.path == "/api/v4/posts"] == [429, 201]


def test_fail_next_count_text_body_and_websocket(world: World) -> None:
    fm = world.fm
    fm.fail_next("*", "ping", 503, count=2, body="limit exceeded")
    for _ in range(2):
        response = requests.get(world.url("/system/ping"), timeout=5)
        assert (response.status_code, response.text) == (503, "limit exceeded")
    assert requests.get(world.url("/system/ping"), timeout=5).status_code == 200
    fm.fail_next("GET", "/websocket$", 502)
    with pytest.raises(InvalidStatus) as caught, ws_connect(fm, world.token):
        pass
    assert caught.value.response.status_code == 502
    with ws_connect(fm, world.token) as ws:
        assert recv(ws)["event"] == "hello"


def test_delay_next(world: World) -> None:
    world.fm.delay_next("GET", "/users/me$", 0.3)
    started = time.monotonic()
    world.driver.users.get_user("me")
    assert time.monotonic() - started >= 0.3
    assert world.fm._faults == []  # used up: the request after it is not held


def test_delayed_request_is_processed_even_if_the_client_gave_up(world: World) -> None:
    fm, ch = world.fm, world.channel
    fm.delay_next("POST", r"^/api/v4/posts$", 0.4)
    body = {"channel_id": ch["id"], "message": "slow", "pending_post_id": "retry-1"}
    with pytest.raises(requests.Timeout):
        requests.post(world.url("/posts"), json=body, headers=world.headers(), timeout=0.1)
    [created] = fm.wait_for_posts(world.bot, 1, timeout=3)
    retried = world.driver.posts.create_post(body)
    assert retried["id"] == created["id"]
    assert len(fm.posts_by(world.bot)) == 1


def test_stop_start_keeps_port_and_state(world: World) -> None:
    fm, d = world.fm, world.driver
    port = fm.port
    with ws_connect(fm, world.token) as ws:
        hello = recv(ws)
        fm.stop()
        with pytest.raises(ConnectionClosed):
            recv(ws)
    assert fm.live_websockets() == 0
    with pytest.raises(requests.ConnectionError):
        d.users.get_user("me")
    missed = fm.post_as(world.alice, world.channel, "while you were out")
    assert fm.start() == f"http://127.0.0.1:{port}"
    assert d.users.get_user("me")["id"] == world.bot["id"]
    # Like a restarted Mattermost: data survives, websocket sessions do not.
    cid = hello["data"]["connection_id"]
    with ws_connect(fm, world.token, cid, 1) as ws:
        fresh = recv(ws)
    assert (fresh["event"], fresh["seq"]) == ("hello", 0)
    assert fresh["data"]["connection_id"] != cid
    since = d.posts.get_posts_for_channel(
        world.channel["id"], params={"since": missed["create_at"]}
    )
    assert since["order"] == [missed["id"]]
    assert fm.restart() == f"http://127.0.0.1:{port}"
    assert d.system.check_system_health() == {"status": "OK"}


# --------------------------------------------------------------------------- websocket


def test_hello_on_header_auth(world: World) -> None:
    fm = world.fm
    with ws_connect(fm, world.token, sequence_number=None) as ws:
        hello = recv(ws)
        fm.wait_for_live_websockets(1, timeout=2)
    assert hello["event"] == "hello" and hello["seq"] == 0
    assert set(hello["data"]) == {"server_version", "connection_id"}
    assert len(hello["data"]["connection_id"]) == 26
    assert hello["broadcast"] == {
        "omit_users": None,
        "user_id": world.bot["id"],
        "channel_id": "",
        "team_id": "",
    }
    assert fm.websocket_connections == 1
    assert fm.requests[-1][1:] == ("GET", "/api/v4/websocket", 101, world.bot["id"])


def test_authentication_challenge(world: World) -> None:
    fm = world.fm
    with ws_connect(fm, None) as ws:
        ws.send(json.dumps({"seq": 1, "action": "ping"}))
        assert recv(ws)["status"] == "FAIL"
        challenge = {"token": world.token}
        ws.send(json.dumps({"seq": 1, "action": "authentication_challenge", "data": challenge}))
        assert recv(ws) == {"status": "OK", "seq_reply": 1}
        hello = recv(ws)
        assert (hello["event"], hello["seq"]) == ("hello", 0)
        assert hello["broadcast"]["user_id"] == world.bot["id"]
    with ws_connect(fm, None) as ws:
        bad = {"token": "wrong"}
        ws.send(json.dumps({"seq": 1, "action": "authentication_challenge", "data": bad}))
        reply = recv(ws)
        assert (reply["status"], reply["seq_reply"]) == ("FAIL", 1)
        assert reply["error"]["id"]
        with pytest.raises(ConnectionClosed):
            recv(ws)


def test_invalid_header_token_rejects_upgrade(world: World) -> None:
    with pytest.raises(InvalidStatus) as caught, ws_connect(world.fm, "bogus"):
        pass
    assert caught.value.response.status_code == 401
    assert world.fm.websocket_connections == 0
    assert world.fm.requests[-1][2:4] == ("/api/v4/websocket", 401)


def test_ping_and_unknown_actions(world: World) -> None:
    with ws_connect(world.fm, world.token) as ws:
        recv(ws)
        ws.ping().wait(timeout=2)  # protocol-level ping
        ws.send(json.dumps({"action": "ping", "seq": 7}))
        assert recv(ws) == {"status": "OK", "seq_reply": 7, "data": {"text": "pong"}}
        ws.send(json.dumps({"action": "frobnicate", "seq": 8}))
        reply = recv(ws)
        assert (reply["status"], reply["seq_reply"]) == ("FAIL", 8)
        ws.send(json.dumps({"action": "get_statuses", "seq": 9}))
        assert recv(ws)["data"][world.bot["id"]] == "online"


def test_revoked_token_closes_websocket_with_1008(world: World) -> None:
    fm = world.fm
    with ws_connect(fm, world.token) as ws:
        recv(ws)
        fm.revoke_token(world.token)
        with pytest.raises(ConnectionClosed) as caught:
            recv(ws)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1008


def test_posted_event_shape(world: World) -> None:
    fm, ch = world.fm, world.channel
    with ws_connect(fm, world.token) as ws:
        recv(ws)
        plain = fm.post_as(world.alice, ch, "hello all")
        event = recv_event(ws, "posted")
        assert event["seq"] == 1
        assert event["broadcast"] == {
            "omit_users": None,
            "user_id": "",
            "channel_id": ch["id"],
            "team_id": "",
        }
        data = event["data"]
        assert "mentions" not in data
        assert data["channel_display_name"] == "Deploys"
        assert data["channel_name"] == "deploys" and data["channel_type"] == "O"
        assert data["sender_name"] == "@alice" and data["set_online"] is True
        assert data["team_id"] == world.team["id"]
        assert isinstance(data["post"], str) and json.loads(data["post"]) == plain
        fm.post_as(world.alice, ch, "@opsbot: deploy api")
        mentioned = recv_event(ws, "posted")
        assert json.loads(mentioned["data"]["mentions"]) == [world.bot["id"]]
        dm = fm.direct_channel(world.alice, world.bot)
        fm.post_as(world.alice, dm, "psst")
        direct = recv_event(ws, "posted")
        assert direct["data"]["channel_type"] == "D" and direct["data"]["team_id"] == ""
        assert json.loads(direct["data"]["mentions"]) == [world.bot["id"]]
        own = world.driver.posts.create_post({"channel_id": ch["id"], "message": "mine"})
        assert json.loads(recv_event(ws, "posted")["data"]["post"])["id"] == own["id"]


def test_edit_reaction_and_membership_events(world: World) -> None:
    fm, d, ch = world.fm, world.driver, world.channel
    with ws_connect(fm, world.token) as ws:
        recv(ws)
        post = fm.post_as(world.alice, ch, "v1")
        recv_event(ws, "posted")
        fm.edit_as(world.alice, post["id"], "v2")
        edited = json.loads(recv_event(ws, "post_edited")["data"]["post"])
        assert (edited["message"], edited["edit_at"] > 0) == ("v2", True)
        fm.react_as(world.alice, post["id"], "+1")
        reaction = json.loads(recv_event(ws, "reaction_added")["data"]["reaction"])
        assert reaction["emoji_name"] == "+1" and reaction["user_id"] == world.alice["id"]

        fm.add_member(ch, world.bob, notify=True)
        added = recv_event(ws, "user_added")
        assert added["data"] == {"team_id": world.team["id"], "user_id": world.bob["id"]}
        assert added["broadcast"]["channel_id"] == ch["id"]
        fm.remove_member(ch, world.bot, remover=world.alice)
        # The channel-wide user_removed goes to the remaining members; the bot gets its own.
        to_me = recv_event(ws, "user_removed")
        assert to_me["broadcast"]["user_id"] == world.bot["id"]
        assert to_me["data"] == {
            "channel_id": ch["id"],
            "remover_id": world.alice["id"],
            "user_id": world.bot["id"],
        }
        d.channels.add_user(ch["id"], options={"user_id": world.bot["id"]})
        assert recv_event(ws, "user_added")["data"]["user_id"] == world.bot["id"]
        d.channels.remove_channel_member(ch["id"], "me")
        assert recv_event(ws, "user_removed")["data"]["remover_id"] == world.bot["id"]

        other = fm.add_team("other")
        fm.add_to_team(other, world.bot, notify=True)
        joined = recv_event(ws, "added_to_team")
        assert joined["data"] == {"team_id": other["id"], "user_id": world.bot["id"]}
        fm.remove_from_team(other, world.bot)
        assert recv_event(ws, "leave_team")["data"] == joined["data"]


def test_channels_for_user_include_direct_and_group(world: World) -> None:
    fm = world.fm
    dm = fm.direct_channel(world.bot, world.bob)
    group = fm.group_channel([world.bot, world.alice, world.bob])
    assert group["type"] == "G" and group["team_id"] == ""
    channels = world.driver.channels.get_channels_for_user("me", world.team["id"])
    assert {c["id"] for c in channels} == {world.channel["id"], dm["id"], group["id"]}


def test_events_are_sequenced_across_threads(world: World) -> None:
    fm, ch = world.fm, world.channel
    with ws_connect(fm, world.token) as ws:
        recv(ws)

        def burst(n: int) -> None:
            for i in range(25):
                fm.post_as(world.alice, ch, f"{n}-{i}")

        threads = [threading.Thread(target=burst, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seqs = [recv(ws)["seq"] for _ in range(100)]
    assert seqs == list(range(1, 101))


# --------------------------------------------------------------------------- resume


def _connect_and_drop(world: World, events: int = 1) -> str:
    """Connect, read hello + ``events`` posts, drop the socket; return the connection id."""
    fm = world.fm
    with ws_connect(fm, world.token) as ws:
        hello = recv(ws)
        for i in range(events):
            fm.post_as(world.alice, world.channel, f"seen {i}")
            recv_event(ws, "posted")
        fm.drop_websockets()
        with pytest.raises(ConnectionClosed):
            recv(ws)
    assert fm.live_websockets() == 0
    return hello["data"]["connection_id"]


def test_resume_replays_missed_events_with_original_seqs(world: World) -> None:
    fm = world.fm
    cid = _connect_and_drop(world)  # client saw seq 0 (hello) and seq 1
    fm.post_as(world.alice, world.channel, "missed 1")
    fm.post_as(world.alice, world.channel, "missed 2")
    with ws_connect(fm, world.token, cid, 2) as ws:
        first, second, hello = recv(ws), recv(ws), recv(ws)
    assert [first["seq"], second["seq"]] == [2, 3]
    assert [json.loads(e["data"]["post"])["message"] for e in (first, second)] == [
        "missed 1",
        "missed 2",
    ]
    assert (hello["event"], hello["seq"], hello["data"]["connection_id"]) == ("hello", 4, cid)
    assert fm.last_resume is not None
    assert fm.last_resume["resumed"] is True and fm.last_resume["replayed"] == 2


def test_resume_with_nothing_missed_just_says_hello(world: World) -> None:
    cid = _connect_and_drop(world)
    with ws_connect(world.fm, world.token, cid, 2) as ws:
        hello = recv(ws)
    assert (hello["event"], hello["seq"], hello["data"]["connection_id"]) == ("hello", 2, cid)


def test_resume_after_window_expired_starts_fresh(world: World) -> None:
    fm = world.fm
    fm.resume_window = 0.1
    cid = _connect_and_drop(world)
    time.sleep(0.15)
    with ws_connect(fm, world.token, cid, 2) as ws:
        hello = recv(ws)
    assert hello["event"] == "hello" and hello["seq"] == 0
    assert hello["data"]["connection_id"] != cid
    assert fm.last_resume is not None and fm.last_resume["resumed"] is False


def test_forgotten_connection_starts_fresh(world: World) -> None:
    fm = world.fm
    cid = _connect_and_drop(world)
    fm.drop_websockets(forget=True)
    with ws_connect(fm, world.token, cid, 2) as ws:
        hello = recv(ws)
    assert (hello["seq"], hello["data"]["connection_id"] != cid) == (0, True)


def test_resume_beyond_dead_queue_starts_fresh(world: World) -> None:
    fm = world.fm
    fm.dead_queue_size = 4
    cid = _connect_and_drop(world)
    for i in range(5):
        fm.post_as(world.alice, world.channel, f"missed {i}")
    with ws_connect(fm, world.token, cid, 2) as ws:
        hello = recv(ws)
    assert (hello["event"], hello["seq"]) == ("hello", 0)
    assert hello["data"]["connection_id"] != cid


def test_resume_of_other_users_connection_starts_fresh(world: World) -> None:
    fm = world.fm
    cid = _connect_and_drop(world)
    alice_token = fm.create_token(world.alice)
    with ws_connect(fm, alice_token, cid, 2) as ws:
        hello = recv(ws)
    assert hello["seq"] == 0 and hello["data"]["connection_id"] != cid


def test_stop_aborts_unauthenticated_sockets_too(world: World) -> None:
    fm = world.fm
    with ws_connect(fm, None) as ws:
        fm.stop()
        with pytest.raises(ConnectionClosed):
            recv(ws)
    fm.start()


def test_channel_wide_user_removed_reaches_remaining_members(world: World) -> None:
    fm = world.fm
    with ws_connect(fm, fm.create_token(world.alice)) as ws:
        recv(ws)
        fm.remove_member(world.channel, world.bot, remover=world.alice)
        event = recv_event(ws, "user_removed")
    assert event["broadcast"]["channel_id"] == world.channel["id"]
    assert event["data"] == {"remover_id": world.alice["id"], "user_id": world.bot["id"]}


def test_context_manager_without_strict_checking() -> None:
    with FakeMattermost(strict=False) as fm:
        assert fm.docs is None
        response = requests.get(f"{fm.url}/api/v4/nowhere", timeout=5)
        assert_app_error(response, 404)
    assert fm.contract_violations == []
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{fm.url}/api/v4/system/ping", timeout=5)


def test_mattermostdriver_websocket_client_authenticates_by_challenge(world: World) -> None:
    """The driver's own websocket client (challenge auth, legacy flow) works against the fake."""
    fm = world.fm
    d = Driver(
        {
            "url": "127.0.0.1",
            "port": fm.port,
            "scheme": "http",
            "token": world.token,
            "keepalive": False,
            "timeout": 5,
        }
    )
    d.login()
    received: list[dict[str, Any]] = []

    async def handler(message: str) -> None:
        received.append(json.loads(message))

    client = Websocket(d.options, d.client.token)
    runner = threading.Thread(target=lambda: asyncio.run(client.connect(handler)), daemon=True)
    runner.start()
    fm.wait_for_live_websockets(1, timeout=5)
    fm.post_as(world.alice, world.channel, "hi driver")
    deadline = time.monotonic() + 5
    while not any(m.get("event") == "posted" for m in received) and time.monotonic() < deadline:
        time.sleep(0.01)
    client.disconnect()
    fm.drop_websockets()
    runner.join(timeout=5)
    assert not runner.is_alive()
    assert received[0] == {"status": "OK", "seq_reply": 1}
    assert [(m.get("event"), m.get("seq")) for m in received[1:]] == [("hello", 0), ("posted", 1)]
