"""The real bot process against the fake Mattermost server, over real sockets."""

from __future__ import annotations

import itertools
import time

import pytest

from bot.mattermost.inbound import STALE_NOTICE
from tests.e2e.harness import barrier


def replies(mm, world, since=0):
    return mm.posts_by(world.bot)[since:]


def texts(posts):
    return [p["message"] for p in posts]


def wait_reply(mm, world, count=1, timeout=15):
    return mm.wait_for_posts(world.bot, count, timeout=timeout)


def bot_texts_after(mm, world, *channels):
    """Everything the bot said, once a sentinel answered in each channel (default ~ops):
    what it had not said by then, it did not say. The sentinels' answers are left out."""
    sentinels = {barrier(mm, world, channel) for channel in channels or (world.ops,)}
    return [t for t in texts(mm.posts_by(world.bot)) if t not in sentinels]


def post_requests(mm):
    return [r for r in mm.requests if (r.method, r.path) == ("POST", "/api/v4/posts")]


def test_help_lists_commands(fake_mm, world, bot):
    fake_mm.post_as(world.alice, world.ops, "!help")
    (reply,) = wait_reply(fake_mm, world)
    assert "!echo" in reply["message"] and "!ping" in reply["message"]
    assert reply["channel_id"] == world.ops["id"]


def test_prefix_and_mention_both_work(fake_mm, world, bot):
    fake_mm.post_as(world.alice, world.ops, "!echo one")
    wait_reply(fake_mm, world, 1)
    fake_mm.post_as(world.alice, world.ops, "@opsbot echo two")
    wait_reply(fake_mm, world, 2)
    fake_mm.post_as(world.alice, world.ops, "@opsbot: echo three")
    posts = wait_reply(fake_mm, world, 3)
    assert texts(posts) == ["one", "two", "three"]


def test_plain_chatter_gets_no_answer(fake_mm, world, bot):
    fake_mm.post_as(world.alice, world.ops, "echo not for the bot")
    assert bot_texts_after(fake_mm, world) == []


def test_reply_goes_to_the_thread_root_not_the_reply(fake_mm, world, bot):
    root = fake_mm.post_as(world.bob, world.ops, "deploy discussion")
    reply_in_thread = fake_mm.post_as(world.alice, world.ops, "!echo threaded", root_id=root["id"])
    (answer,) = wait_reply(fake_mm, world)
    assert answer["root_id"] == root["id"] != reply_in_thread["id"]
    fake_mm.post_as(world.alice, world.ops, "!echo top level")
    answer = wait_reply(fake_mm, world, 2)[-1]
    assert answer["root_id"] == ""


def test_always_reply_in_thread_option(fake_mm, world, make_bot):
    make_bot(OPSROOM_REPLY_IN_THREAD="true")
    command = fake_mm.post_as(world.alice, world.ops, "!echo in a thread")
    (answer,) = wait_reply(fake_mm, world)
    assert answer["root_id"] == command["id"]


def test_direct_and_group_messages(fake_mm, world, bot):
    dm = fake_mm.direct_channel(world.alice, world.bot)
    fake_mm.post_as(world.alice, dm, "echo no prefix needed")
    (answer,) = wait_reply(fake_mm, world)
    assert answer["channel_id"] == dm["id"] and answer["message"] == "no prefix needed"
    group = fake_mm.group_channel([world.alice, world.bob, world.bot])
    fake_mm.post_as(world.bob, group, "!echo group")
    answer = wait_reply(fake_mm, world, 2)[-1]
    assert answer["channel_id"] == group["id"] and answer["message"] == "group"


def test_private_channel_and_every_team_are_served(fake_mm, world, bot):
    fake_mm.post_as(world.alice, world.secret, "!echo private")
    fake_mm.post_as(world.alice, world.infra, "!echo other team")
    posts = wait_reply(fake_mm, world, 2)
    by_channel = {p["channel_id"]: p["message"] for p in posts}
    assert by_channel == {world.secret["id"]: "private", world.infra["id"]: "other team"}


def test_team_filter_limits_what_is_served(fake_mm, world, make_bot):
    make_bot(MATTERMOST_TEAMS="alpha")
    fake_mm.post_as(world.alice, world.infra, "!echo beta is not served")
    fake_mm.post_as(world.alice, world.ops, "!echo alpha is")
    # infra is not served, so no sentinel can be answered there; the dispatcher takes the
    # posts in order, so the one in ~ops (then the sentinel) comes after infra's was dropped.
    assert bot_texts_after(fake_mm, world) == ["alpha is"]


def test_other_bots_and_webhooks_are_ignored_by_default(fake_mm, world, bot):
    other_bot = fake_mm.add_user("deploybot", is_bot=True)
    fake_mm.add_to_team(world.alpha, other_bot)
    fake_mm.add_member(world.ops, other_bot)
    fake_mm.post_as(other_bot, world.ops, "!echo from bot")
    fake_mm.post_as(world.alice, world.ops, "!echo from hook", from_webhook=True)
    fake_mm.post_as(world.alice, world.ops, "!echo from human")
    assert bot_texts_after(fake_mm, world) == ["from human"]


def test_resume_replays_missed_events_without_rest_backfill(fake_mm, world, bot):
    fake_mm.post_as(world.alice, world.ops, "!echo before")
    wait_reply(fake_mm, world, 1)
    backfills_before = bot.log().count("missed post(s) found over REST")
    fake_mm.drop_websockets()
    fake_mm.post_as(world.alice, world.ops, "!echo while away 1")
    fake_mm.post_as(world.alice, world.ops, "!echo while away 2")
    posts = wait_reply(fake_mm, world, 3)
    bot.wait_for_log("websocket session resumed")
    # Two commands run on parallel workers: their replies may come in either order.
    assert sorted(texts(posts)) == ["before", "while away 1", "while away 2"]
    assert fake_mm.last_resume["resumed"] is True
    assert sorted(bot_texts_after(fake_mm, world)) == ["before", "while away 1", "while away 2"]
    assert bot.log().count("missed post(s) found over REST") == backfills_before


def test_lost_session_is_caught_up_over_rest_exactly_once(fake_mm, world, bot):
    fake_mm.post_as(world.alice, world.ops, "!echo before")
    wait_reply(fake_mm, world, 1)
    fake_mm.drop_websockets(forget=True)
    fake_mm.post_as(world.alice, world.ops, "!echo missed 1")
    fake_mm.post_as(world.bob, world.infra, "!echo missed 2")
    posts = wait_reply(fake_mm, world, 3)
    bot.wait_for_log("caught up after reconnect")
    assert sorted(texts(posts)) == ["before", "missed 1", "missed 2"]
    assert fake_mm.last_resume["resumed"] is False
    answered = bot_texts_after(fake_mm, world, world.ops, world.infra)
    assert sorted(answered) == ["before", "missed 1", "missed 2"]  # "before" was not run again


def test_restart_does_not_rerun_and_catches_up(fake_mm, world, make_bot):
    first = make_bot()
    fake_mm.post_as(world.alice, world.ops, "!echo first life")
    wait_reply(fake_mm, world, 1)
    assert first.stop() == 0
    fake_mm.post_as(world.alice, world.ops, "!echo while down")
    make_bot()
    assert bot_texts_after(fake_mm, world) == ["first life", "while down"]


def test_stale_commands_are_refused_not_run(fake_mm, world, make_bot):
    first = make_bot(OPSROOM_MAX_COMMAND_AGE="1s")
    assert first.stop() == 0
    # Sent 2 s ago while the bot was down (backdated: no waiting for it to age).
    two_seconds_ago = int(time.time() * 1000) - 2000
    fake_mm.post_as(world.alice, world.ops, "!echo too late", create_at=two_seconds_ago)
    make_bot(OPSROOM_MAX_COMMAND_AGE="1s")
    (answer,) = wait_reply(fake_mm, world)
    assert STALE_NOTICE in answer["message"] and "`!echo too late`" in answer["message"]
    assert bot_texts_after(fake_mm, world) == [answer["message"]]  # refused, not also run


def test_rate_limited_posts_are_delivered_once_after_the_pause(fake_mm, world, bot):
    fake_mm.fail_next(
        "POST",
        r"/api/v4/posts$",
        429,
        count=2,
        headers={"Retry-After": "1", "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0"},
    )
    started = time.monotonic()
    fake_mm.post_as(world.alice, world.ops, "!echo patience")
    (answer,) = wait_reply(fake_mm, world)
    assert answer["message"] == "patience"
    assert time.monotonic() - started >= 2.0
    assert bot_texts_after(fake_mm, world) == ["patience"]


def test_server_errors_on_posting_are_retried(fake_mm, world, bot):
    fake_mm.fail_next("POST", r"/api/v4/posts$", 503, count=3)
    fake_mm.post_as(world.alice, world.ops, "!echo eventually")
    (answer,) = wait_reply(fake_mm, world)
    assert answer["message"] == "eventually"
    assert bot_texts_after(fake_mm, world) == ["eventually"]


@pytest.mark.slow
def test_slow_server_response_does_not_duplicate(fake_mm, world, make_bot):
    # The first POST is answered after the client gave up; the retry carries the same
    # pending_post_id, so Mattermost returns the post it already made.
    make_bot(MATTERMOST_REQUEST_TIMEOUT="1s")
    before = len(post_requests(fake_mm))
    fake_mm.delay_next("POST", r"/api/v4/posts$", 2.0)
    fake_mm.post_as(world.alice, world.ops, "!echo only once")
    wait_reply(fake_mm, world)
    # The delayed first attempt is handled (and recorded) after the retry: wait for both.
    deadline = time.monotonic() + 15
    while len(post_requests(fake_mm)) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(post_requests(fake_mm)) == before + 2
    assert texts(fake_mm.posts_by(world.bot)) == ["only once"]


def test_long_output_is_split_with_balanced_code_fences(fake_mm, world, bot):
    fake_mm.post_as(world.alice, world.ops, "!bigoutput 1200")
    posts = fake_mm.wait_for_posts(world.bot, 4, timeout=15)
    assert all(len(p["message"]) <= 16383 for p in posts)
    assert all(p["message"].count("```") % 2 == 0 for p in posts)
    body = "\n".join(p["message"] for p in posts)
    numbers = [line.split()[1] for line in body.splitlines() if line.startswith("line ")]
    assert numbers == [f"{n:05d}" for n in range(1200)]  # nothing lost, in order


def test_two_hundred_concurrent_commands_are_each_answered_once(fake_mm, world, bot):
    users = [world.alice, world.bob, world.admin]
    channels = [world.ops, world.secret, world.infra]
    expected = {}
    for n in range(200):
        channel = channels[n % 3]
        fake_mm.post_as(users[n % 3], channel, f"!echo msg-{n:03d}")
        expected[f"msg-{n:03d}"] = channel["id"]
    fake_mm.wait_for_posts(world.bot, 200, timeout=60)
    answered = bot_texts_after(fake_mm, world, *channels)
    assert sorted(answered) == sorted(expected)  # each once
    posts = [p for p in fake_mm.posts_by(world.bot) if p["message"] in expected]
    assert {p["message"]: p["channel_id"] for p in posts} == expected


def test_replies_of_one_command_keep_their_order(fake_mm, world, bot):
    for n in range(20):
        fake_mm.post_as(world.alice, world.ops, f"!twoparts {n}")
    posts = fake_mm.wait_for_posts(world.bot, 40, timeout=30)
    for n in range(20):
        mine = [p["message"] for p in posts if p["message"].endswith(f" {n}")]
        assert mine == [f"first {n}", f"second {n}"]


def test_revoked_token_stops_the_bot_with_an_error(fake_mm, world, bot):
    fake_mm.revoke_token(world.token)
    assert bot.wait_exit(timeout=20) == 3
    assert "rejected the token" in bot.log()


def test_invalid_token_at_start_exits_at_once(fake_mm, world, make_bot):
    bot = make_bot(wait=False, token="not-a-valid-token-at-all")
    assert bot.wait_exit(timeout=20) == 3
    assert "not-a-valid-token-at-all" not in bot.log()


def test_server_down_at_start_is_waited_for(fake_mm, world, make_bot):
    fake_mm.stop()
    bot = make_bot(wait=False)
    bot.wait_for_log("Mattermost not reachable", timeout=20)
    fake_mm.start()
    bot.wait_for_log("caught up after start", timeout=30)
    fake_mm.post_as(world.alice, world.ops, "!echo back")
    (answer,) = wait_reply(fake_mm, world)
    assert answer["message"] == "back"


@pytest.mark.slow
def test_server_restart_is_survived(fake_mm, world, bot):
    fake_mm.stop()
    time.sleep(1)
    fake_mm.start()
    bot.wait_for_log("caught up after reconnect", timeout=30)
    fake_mm.post_as(world.alice, world.ops, "!echo after restart")
    (answer,) = wait_reply(fake_mm, world)
    assert answer["message"] == "after restart"


@pytest.mark.slow
def test_reconnects_back_off(fake_mm, world, bot):
    fake_mm.fail_next("GET", r"/api/v4/websocket", 503, count=4)
    fake_mm.drop_websockets()
    fake_mm.post_as(world.alice, world.ops, "!echo reconnected")
    wait_reply(fake_mm, world, timeout=30)
    attempts = [t for (t, method, path, *_rest) in fake_mm.requests if path.endswith("/websocket")]
    gaps = [b - a for a, b in itertools.pairwise(attempts[1:])]
    assert len(gaps) >= 4
    assert all(gap >= 0.45 for gap in gaps)  # never hammering
    assert max(gaps) > min(gaps)


def test_sigterm_finishes_running_commands_and_delivers_replies(fake_mm, world, bot):
    fake_mm.post_as(world.alice, world.ops, "!slow 2")
    bot.wait_for_log('Processing command "slow"')
    assert bot.stop() == 0
    assert texts(fake_mm.posts_by(world.bot)) == ["slept 2"]


def test_cards_uploads_edits_and_reactions(fake_mm, world, bot):
    command = fake_mm.post_as(world.alice, world.ops, "!card 2.1")
    (card,) = wait_reply(fake_mm, world)
    attachment = card["props"]["attachments"][0]
    assert attachment["title"] == "Deploy" and attachment["color"] == "#3db887"
    assert {"title": "version", "value": "2.1", "short": True} in attachment["fields"]
    fake_mm.post_as(world.alice, world.ops, "!upload file-body")
    upload = wait_reply(fake_mm, world, 2)[-1]
    assert len(upload["file_ids"]) == 1
    assert fake_mm.uploaded_files[-1]["content"] == b"file-body"
    command = fake_mm.post_as(world.alice, world.ops, "!progress")
    progress = wait_reply(fake_mm, world, 3)[-1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        current = fake_mm.get_post(progress["id"])
        if current["message"] == "step 2/2 done" and fake_mm.reactions_on(command["id"]):
            break
        time.sleep(0.05)
    assert fake_mm.get_post(progress["id"])["message"] == "step 2/2 done"
    assert fake_mm.reactions_on(command["id"]) == ["white_check_mark"]


def test_admin_commands_are_admin_only_by_user_id(fake_mm, world, bot):
    fake_mm.post_as(world.alice, world.ops, "!adminonly")
    (denied,) = wait_reply(fake_mm, world)
    assert "denied: this command is for the bot's admins" in denied["message"]
    assert "audit A-" in denied["message"]
    fake_mm.post_as(world.admin, world.ops, "!adminonly")
    in_channel = wait_reply(fake_mm, world, 2)[-1]
    assert "only taken in a direct message" in in_channel["message"]
    dm = fake_mm.direct_channel(world.admin, world.bot)
    fake_mm.post_as(world.admin, dm, "!adminonly")
    allowed = wait_reply(fake_mm, world, 3)[-1]
    assert allowed["channel_id"] == dm["id"]
    assert allowed["message"] == "admin command ran"


def test_identifiers_rooms_and_occupants(fake_mm, world, bot):
    fake_mm.post_as(world.alice, world.ops, "!sendto @bob ~ops alpha/secret ~beta/infra")
    posts = wait_reply(fake_mm, world, 5)
    # Posts to different channels are delivered in parallel: compare without order.
    where = {p["message"]: p["channel_id"] for p in posts}
    bob_dm = fake_mm.direct_channel(world.bob, world.bot)
    assert where == {
        "hello @bob": bob_dm["id"],
        "hello ~ops": world.ops["id"],
        "hello alpha/secret": world.secret["id"],
        "hello ~beta/infra": world.infra["id"],
        "sent": world.ops["id"],
    }
    # In one channel, what a command sends arrives in the order it was sent.
    in_ops = [p["message"] for p in posts if p["channel_id"] == world.ops["id"]]
    assert in_ops == ["hello ~ops", "sent"]
    fake_mm.post_as(world.alice, world.ops, "!sendto ~nowhere")
    assert wait_reply(fake_mm, world, 6)[-1]["message"] == (
        "error: no channel ~nowhere in any served team"
    )
    fake_mm.post_as(world.alice, world.ops, "!occupants ~alpha/ops")
    assert wait_reply(fake_mm, world, 7)[-1]["message"] == "@admin @alice @bob @opsbot"
    fake_mm.post_as(world.alice, world.ops, "!myrooms")
    rooms = wait_reply(fake_mm, world, 8)[-1]["message"].split()
    assert {"~alpha/ops", "~alpha/secret", "~beta/infra"} <= set(rooms)


def test_identity_is_the_immutable_user_id(fake_mm, world, bot):
    fake_mm.post_as(world.alice, world.ops, "!whois")
    (answer,) = wait_reply(fake_mm, world)
    assert answer["message"] == f"@alice {world.alice['id']}"


@pytest.mark.slow
def test_dead_connection_is_detected_by_ping_and_replaced(fake_mm, world, bot):
    connects = fake_mm.websocket_connections
    fake_mm.freeze_websockets()
    # Found by the bot's own ping (2 s interval, 2 s to answer), not by TCP minutes later.
    bot.wait_for_log("websocket connection lost", timeout=30)
    assert "keepalive ping timeout" in bot.log()
    fake_mm.post_as(world.alice, world.ops, "!echo alive again")
    (answer,) = wait_reply(fake_mm, world, timeout=15)
    assert answer["message"] == "alive again"
    assert fake_mm.websocket_connections > connects


def test_token_never_reaches_the_log_even_at_debug(fake_mm, world, make_bot):
    bot = make_bot(OPSROOM_LOG_LEVEL="DEBUG")
    fake_mm.post_as(world.alice, world.ops, "!echo debug")
    wait_reply(fake_mm, world)
    fake_mm.drop_websockets()
    bot.wait_for_log("websocket session resumed")
    log = bot.log()
    assert "Authorization: Bearer [REDACTED]" in log  # the header was logged, scrubbed
    assert world.token not in log


def test_membership_reactions_and_mentions_reach_plugins(fake_mm, world, bot):
    carol = fake_mm.add_user("carol")
    fake_mm.add_to_team(world.alpha, carol)
    fake_mm.add_member(world.ops, carol, notify=True)
    assert wait_reply(fake_mm, world)[-1]["message"] == "welcome @carol to ~alpha/ops"
    fake_mm.remove_member(world.ops, carol, remover=world.admin)
    assert wait_reply(fake_mm, world, 2)[-1]["message"] == "@carol left, removed by @admin"
    post = fake_mm.post_as(world.alice, world.ops, "nice work")
    fake_mm.react_as(world.bob, post["id"], "tada")
    assert wait_reply(fake_mm, world, 3)[-1]["message"] == "@bob reacted :tada:"
    fake_mm.post_as(world.alice, world.ops, "thanks @bob")
    assert wait_reply(fake_mm, world, 4)[-1]["message"] == "mentioned @bob"
    # the bot joining a channel is announced there too
    new = fake_mm.add_channel(world.alpha, "incident-42")
    fake_mm.add_member(new, world.alice)
    fake_mm.add_member(new, world.bot, notify=True)
    welcome = wait_reply(fake_mm, world, 5)[-1]
    assert welcome["channel_id"] == new["id"]
    assert welcome["message"] == "welcome @opsbot to ~alpha/incident-42"


@pytest.mark.slow
def test_failing_server_at_start_is_retried(fake_mm, world, make_bot):
    fake_mm.fail_next("GET", r"/api/v4/users/me/teams$", 503, count=2)
    bot = make_bot(wait=False)
    bot.wait_for_log("caught up after start", timeout=30)
    assert bot.log().count("Mattermost not reachable") == 2
    fake_mm.post_as(world.alice, world.ops, "!echo started")
    assert wait_reply(fake_mm, world)[-1]["message"] == "started"


@pytest.mark.slow
def test_outage_then_restart_catches_up_quiet_channels(fake_mm, world, make_bot):
    # infra never had a post: no watermark, so catch-up relies on "last seen", which must
    # not move while the bot is disconnected, even when it is stopped during the outage.
    first = make_bot()
    fake_mm.stop()
    first.wait_for_log("websocket connection lost")
    fake_mm.post_as(world.alice, world.infra, "!echo during outage")
    time.sleep(5)  # longer than the catch-up margin (2 ping intervals = 4 s here)
    assert first.stop() == 0
    fake_mm.start()
    make_bot()
    (answer,) = wait_reply(fake_mm, world)
    assert answer["message"] == "during outage"
    assert answer["channel_id"] == world.infra["id"]


def test_secrets_are_scrubbed_from_every_reply(fake_mm, world, bot):
    fake_mm.post_as(world.alice, world.ops, "!leak")
    (answer,) = wait_reply(fake_mm, world)
    assert "hunter2pass" not in answer["message"] and "abc123secretvalue" not in answer["message"]
    assert "postgres://app:[REDACTED]@db" in answer["message"]
