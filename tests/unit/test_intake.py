"""The Mattermost intake on its own: a fake clock, an in-memory server, a ledger in tmp_path."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from bot.mattermost.directory import Directory
from bot.mattermost.events import EventStream
from bot.mattermost.inbound import STALE_NOTICE, InboundPolicy
from bot.mattermost.intake import LAST_SEEN, Dispatcher, IncomingPost, Intake, IntakeLimits
from bot.mattermost.ledger import Ledger

BOT = "b" * 26
ALICE = "a" * 26
OTHER_BOT = "o" * 26
TEAM, OTHER_TEAM = "t" * 26, "u" * 26
OPS, QUIET, FOREIGN = "c" * 26, "q" * 26, "f" * 26
START = 1_700_000_000.0  # the fake clock's wall time at the start of every test
MAX_AGE, WINDOW, BEAT = 600.0, 3600.0, 20.0


class FakeClock:
    def __init__(self) -> None:
        self.now = START
        self.mono = 0.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds


class FakeServer:
    """What the directory and a catch-up read, held in memory."""

    user_id = BOT

    def __init__(self) -> None:
        self.teams = [{"id": TEAM, "name": "alpha"}, {"id": OTHER_TEAM, "name": "beta"}]
        self.channels = {
            OPS: {"id": OPS, "name": "ops", "team_id": TEAM, "type": "O"},
            QUIET: {"id": QUIET, "name": "quiet", "team_id": TEAM, "type": "O"},
            FOREIGN: {"id": FOREIGN, "name": "infra", "team_id": OTHER_TEAM, "type": "O"},
        }
        self.users = {u: {"id": u, "username": u[:1]} for u in (BOT, ALICE, OTHER_BOT)}
        self.posts: list[dict[str, Any]] = []
        self.reads: list[tuple[str, int]] = []  # posts_since calls

    def my_teams(self) -> list[dict[str, Any]]:
        return self.teams

    def my_channels(self, team_id: str) -> list[dict[str, Any]]:
        return [c for c in self.channels.values() if c["team_id"] == team_id]

    def channel(self, channel_id: str) -> dict[str, Any]:
        return self.channels[channel_id]

    def user(self, user_id: str) -> dict[str, Any]:
        return self.users[user_id]

    def posts_since(self, channel_id: str, since_ms: int) -> list[dict[str, Any]]:
        self.reads.append((channel_id, since_ms))
        found = [
            p
            for p in self.posts
            if p["channel_id"] == channel_id and max(p["create_at"], p["update_at"]) >= since_ms
        ]
        random.Random(len(self.reads)).shuffle(found)  # no promise of order
        return found

    def add(self, post: dict[str, Any]) -> dict[str, Any]:
        self.posts.append(post)
        return post


class Recorder:
    """The handler: remembers what it was handed."""

    def __init__(self) -> None:
        self.ran: list[IncomingPost] = []
        self.refused: list[tuple[IncomingPost, str]] = []
        self.reactions: list[tuple[dict[str, Any], str]] = []
        self.memberships: list[tuple[str, str, bool, str]] = []
        self.fail_on: set[str] = set()

    def post_received(self, post: IncomingPost) -> None:
        self.ran.append(post)
        if post.id in self.fail_on:
            raise RuntimeError("plugin crashed")

    def stale_command(self, post: IncomingPost, notice: str) -> None:
        self.refused.append((post, notice))

    def reaction_added(self, reaction: dict[str, Any], channel_id: str) -> None:
        self.reactions.append((reaction, channel_id))

    def membership_changed(
        self, channel_id: str, user_id: str, joined: bool, remover_id: str
    ) -> None:
        self.memberships.append((channel_id, user_id, joined, remover_id))

    @property
    def ran_ids(self) -> list[str]:
        return [p.id for p in self.ran]


_ids = iter(range(10**6))


def post(
    message: str,
    *,
    channel: str = OPS,
    user: str = ALICE,
    at: float | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A post created ``at`` (wall seconds; default: the start of the test)."""
    created = int((START if at is None else at) * 1000)
    return {
        "id": f"p{next(_ids):025d}",
        "channel_id": channel,
        "user_id": user,
        "message": message,
        "create_at": created,
        "update_at": created,
        "delete_at": 0,
        "type": "",
        "props": {},
        "root_id": "",
        **fields,
    }


def posted(p: dict[str, Any], seq: int = 1, mentions: list[str] | None = None) -> dict[str, Any]:
    data = {"post": json.dumps(p), "mentions": json.dumps(mentions or [])}
    return {
        "event": "posted",
        "seq": seq,
        "data": data,
        "broadcast": {"channel_id": p["channel_id"]},
    }


def hello(connection_id: str = "c1", seq: int = 0) -> dict[str, Any]:
    return {"event": "hello", "seq": seq, "data": {"connection_id": connection_id}}


class Bot:
    """An intake wired to fakes, driven on the test's thread in event order."""

    def __init__(self, tmp_path: Any, server: FakeServer | None = None, **policy: Any) -> None:
        self.server = server or FakeServer()
        self.clock = FakeClock()
        self.handler = Recorder()
        self.ledger = Ledger(tmp_path / "ledger.sqlite3")
        self.beats = 0
        directory = Directory(self.server, ["alpha"])  # beta is not served
        directory.refresh_teams()
        self.intake = Intake(
            directory=directory,
            history=self.server,
            ledger=self.ledger,
            policy=InboundPolicy(bot_user_id=BOT, bot_username="opsbot", prefix="!", **policy),
            handler=self.handler,
            limits=IntakeLimits(
                max_command_age=MAX_AGE, backfill_window=WINDOW, beat_interval=BEAT
            ),
            clock=self.clock,
            on_beat=self._beat,
        )
        self.connection = 0

    def _beat(self) -> None:
        self.beats += 1

    def connect(self, connection_id: str = "c1") -> None:
        """A connection opens, the catch-up it needs runs, then its hello arrives."""
        self.connection += 1
        self.intake.set_live(self.connection)
        self.intake.opened(self.connection)
        self.intake.backfill("start" if self.connection == 1 else "reconnect")
        self.intake.handle_event(hello(connection_id))

    def drop(self) -> None:
        self.intake.set_live(None)
        self.intake.closed()

    @property
    def last_seen(self) -> float | None:
        value = self.ledger.get_state(LAST_SEEN)
        return None if value is None else int(value) / 1000


@pytest.fixture
def bot(tmp_path: Any) -> Bot:
    return Bot(tmp_path)


# --- exactly once -------------------------------------------------------------------------


def test_a_post_seen_live_and_again_in_a_catch_up_runs_once(bot: Bot) -> None:
    bot.connect()
    first = bot.server.add(post("!echo one"))
    bot.intake.handle_event(posted(first))
    second = bot.server.add(post("!echo two", at=START + 1))
    bot.clock.advance(5)
    bot.intake.backfill("gap")
    bot.intake.handle_event(posted(first, seq=2))  # replayed by the server as well
    assert bot.handler.ran_ids == [first["id"], second["id"]]
    assert [(p.source, p.text) for p in bot.handler.ran] == [
        ("live", "!echo one"),
        ("backfill", "!echo two"),
    ]


def test_a_post_claimed_before_a_restart_is_not_run_after_it(tmp_path: Any) -> None:
    server = FakeServer()
    first_life = Bot(tmp_path, server)
    first_life.connect()
    before = server.add(post("!deploy web"))
    first_life.intake.handle_event(posted(before))
    first_life.ledger.close()

    second_life = Bot(tmp_path, server)
    while_down = server.add(post("!echo while down", at=START + 30))
    second_life.clock.advance(60)
    second_life.connect()
    second_life.intake.handle_event(posted(before, seq=1))  # and delivered live once more
    assert first_life.handler.ran_ids == [before["id"]]
    assert second_life.handler.ran_ids == [while_down["id"]]


def test_an_edited_old_post_in_a_catch_up_page_is_not_run(bot: Bot) -> None:
    bot.connect()
    old = bot.server.add(post("!restart db", at=START - 100))
    old["update_at"] = int((START + 10) * 1000)  # edited: the server returns it again
    bot.intake.handle_event(posted(post("!echo seen", at=START + 5)))
    bot.clock.advance(20)
    bot.intake.backfill("gap")
    assert [p.text for p in bot.handler.ran] == ["!echo seen"]


def test_a_plugin_failure_does_not_stop_the_catch_up_or_run_anything_twice(bot: Bot) -> None:
    bot.connect()
    bot.intake.handle_event(posted(post("!echo mark")))
    crashing = bot.server.add(post("!crash", at=START + 1))
    after = bot.server.add(post("!echo after", at=START + 2))
    bot.handler.fail_on.add(crashing["id"])
    bot.clock.advance(5)
    bot.intake.backfill("gap")
    bot.intake.backfill("gap")
    assert bot.handler.ran_ids[1:] == [crashing["id"], after["id"]]


# --- stale commands -----------------------------------------------------------------------


def test_a_command_older_than_the_max_age_is_answered_not_run(bot: Bot) -> None:
    bot.connect()
    late = post("@opsbot restart db", at=START - MAX_AGE - 60)
    bot.intake.handle_event(posted(late))
    bot.intake.handle_event(posted(late, seq=2))
    assert bot.handler.ran == []
    ((refused, notice),) = bot.handler.refused
    assert refused.id == late["id"]
    assert STALE_NOTICE in notice and "`!restart db`" in notice and "(sent 11 min ago)" in notice


def test_a_command_just_within_the_max_age_runs(bot: Bot) -> None:
    bot.connect()
    bot.intake.handle_event(posted(post("!echo in time", at=START - MAX_AGE)))
    assert [p.text for p in bot.handler.ran] == ["!echo in time"] and bot.handler.refused == []


def test_old_chatter_is_shown_to_plugins_not_refused(bot: Bot) -> None:
    bot.connect()
    bot.intake.handle_event(posted(post("good morning", at=START - 2 * MAX_AGE)))
    assert [p.text for p in bot.handler.ran] == ["good morning"] and bot.handler.refused == []


# --- catch-up after a reconnect -----------------------------------------------------------


class Wired:
    """A real EventStream's sequencing feeding the intake, without a network."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.resyncs: list[str] = []
        self.stream = EventStream(
            "ws://127.0.0.1:1/api/v4/websocket",
            "token",
            on_event=bot.intake.handle_event,
            on_resync=self._resync,
            on_unauthorized=lambda: None,
        )

    def _resync(self, reason: str) -> None:
        self.resyncs.append(reason)
        self.bot.intake.backfill(reason)

    def open(self) -> None:
        self.bot.connection += 1
        self.bot.intake.set_live(self.bot.connection)
        self.bot.intake.opened(self.bot.connection)

    def frame(self, event: dict[str, Any]) -> None:
        self.stream._receive(json.dumps(event))


def test_a_new_connection_id_is_caught_up_over_rest(bot: Bot) -> None:
    wired = Wired(bot)
    wired.open()
    wired.frame(hello("c1"))
    live = bot.server.add(post("!echo live"))
    wired.frame(posted(live, seq=1))
    bot.drop()
    missed = bot.server.add(post("!echo missed", at=START + 10))
    bot.clock.advance(30)
    wired.open()
    wired.frame(hello("c2"))  # the server lost the session: events were lost
    assert wired.resyncs == ["start", "reconnect"]
    assert bot.handler.ran_ids == [live["id"], missed["id"]]


def test_a_resumed_session_is_not_caught_up_over_rest(bot: Bot) -> None:
    wired = Wired(bot)
    wired.open()
    wired.frame(hello("c1"))
    reads = len(bot.server.reads)
    bot.drop()
    replayed = bot.server.add(post("!echo replayed"))
    wired.open()
    wired.frame(posted(replayed, seq=1))
    wired.frame(hello("c1", seq=2))
    assert wired.resyncs == ["start"] and len(bot.server.reads) == reads
    assert bot.handler.ran_ids == [replayed["id"]]


def test_a_sequence_gap_is_caught_up_over_rest(bot: Bot) -> None:
    wired = Wired(bot)
    wired.open()
    wired.frame(hello("c1"))
    wired.frame(posted(bot.server.add(post("!echo 1")), seq=1))
    lost = bot.server.add(post("!echo 2", at=START + 1))
    after = bot.server.add(post("!echo 3", at=START + 2))
    bot.clock.advance(3)
    wired.frame(posted(after, seq=3))  # seq 2 never came
    assert wired.resyncs == ["start", "gap"]
    assert [p.text for p in bot.handler.ran] == ["!echo 1", "!echo 2", "!echo 3"]
    assert bot.handler.ran[1].id == lost["id"] and bot.handler.ran[1].source == "backfill"


def test_the_first_start_leaves_old_history_alone(bot: Bot) -> None:
    bot.server.add(post("!deploy from last week", at=START - 7 * 86400))
    bot.connect()
    assert bot.handler.ran == [] and bot.server.reads == []
    assert bot.last_seen == START


def test_a_catch_up_never_reads_further_back_than_the_window(bot: Bot) -> None:
    bot.connect()
    bot.intake.handle_event(posted(post("!echo mark")))
    bot.drop()
    bot.clock.advance(2 * WINDOW)
    bot.server.add(post("!echo too old", at=START + WINDOW / 2))
    recent = bot.server.add(post("chatter", at=START + 1.5 * WINDOW))
    bot.connect("c2")
    assert (OPS, int((START + WINDOW) * 1000)) in bot.server.reads
    assert bot.handler.ran_ids[1:] == [recent["id"]]


def test_a_catch_up_page_is_handled_oldest_first(bot: Bot) -> None:
    bot.connect()
    bot.intake.handle_event(posted(post("!echo mark")))
    bot.drop()
    texts = [f"!echo {n}" for n in range(12)]
    for n, text in enumerate(texts):
        bot.server.add(post(text, at=START + 1 + n))
    tie = [bot.server.add(post(f"!echo tie {n}", at=START + 20)) for n in range(3)]
    bot.clock.advance(60)
    bot.connect("c2")
    assert [p.text for p in bot.handler.ran[1:13]] == texts
    assert bot.handler.ran_ids[13:] == sorted(p["id"] for p in tie)


# --- "last seen" ----------------------------------------------------------------------------


def test_last_seen_moves_only_while_connected_and_caught_up(bot: Bot) -> None:
    bot.intake.set_live(1)
    bot.intake.opened(1)
    bot.intake.beat()  # connected, not caught up yet
    assert bot.last_seen is None and bot.beats == 0
    bot.intake.handle_event(hello("c1"))
    assert bot.last_seen == START and bot.beats == 1
    bot.clock.advance(BEAT)
    bot.intake.beat()
    assert bot.last_seen == START + BEAT
    bot.drop()
    bot.clock.advance(BEAT)
    bot.intake.beat()
    assert bot.last_seen == START + BEAT and bot.beats == 2
    bot.intake.set_live(2)
    bot.intake.opened(2)
    bot.intake.beat()  # reconnected, its catch-up not done
    assert bot.last_seen == START + BEAT
    bot.intake.handle_event(hello("c2"))
    assert bot.last_seen == START + 2 * BEAT and bot.beats == 3


def test_a_quiet_channel_is_caught_up_from_before_an_outage(bot: Bot) -> None:
    bot.connect()
    bot.intake.handle_event(posted(post("!echo mark")))  # ops has a watermark, quiet none
    bot.drop()
    during = bot.server.add(post("!echo during the outage", channel=QUIET, at=START + 50))
    for _ in range(10):  # the dispatcher keeps beating while the connection is down
        bot.clock.advance(BEAT)
        bot.intake.beat()
    bot.connect("c2")
    assert (QUIET, int((START - 2 * BEAT) * 1000)) in bot.server.reads
    assert bot.handler.ran_ids[1:] == [during["id"]]


def test_a_hello_handled_after_its_connection_dropped_does_not_move_last_seen(
    tmp_path: Any,
) -> None:
    bot = Bot(tmp_path)
    dispatcher = Dispatcher(bot.intake)
    # Queued before the dispatcher thread runs: it handles them after both changes happened.
    dispatcher.connection_changed(True)
    dispatcher.submit_event(hello("c1"))
    dispatcher.connection_changed(False)
    dispatcher.connection_changed(True)
    dispatcher.start()
    dispatcher.stop()
    assert bot.last_seen is None and bot.beats == 0
    assert not bot.intake.in_sync


def test_the_dispatcher_handles_events_in_order_and_drains_on_stop(tmp_path: Any) -> None:
    bot = Bot(tmp_path)
    dispatcher = Dispatcher(bot.intake)
    dispatcher.start()
    dispatcher.connection_changed(True)
    dispatcher.request_backfill("start")
    dispatcher.submit_event(hello("c1"))
    posts = [post(f"!echo {n}") for n in range(20)]
    for seq, p in enumerate(posts, start=1):
        dispatcher.submit_event(posted(p, seq=seq))
    dispatcher.stop()
    assert bot.handler.ran_ids == [p["id"] for p in posts]
    assert bot.intake.in_sync and bot.last_seen == START


# --- what is not handed over, and what is ---------------------------------------------------


def test_own_system_deleted_bot_and_webhook_posts_are_ignored(bot: Bot) -> None:
    bot.connect()
    ignored = [
        post("!echo me", user=BOT),
        post("alice joined the channel", type="system_join_channel"),
        post("!echo deleted", delete_at=1),
        post("!echo from a bot", user=OTHER_BOT, props={"from_bot": "true"}),
        post("!echo from a hook", props={"from_webhook": "true"}),
        post("!echo unserved team", channel=FOREIGN),
    ]
    for seq, p in enumerate(ignored, start=1):
        bot.intake.handle_event(posted(p, seq=seq))
    assert bot.handler.ran == [] and bot.handler.refused == []
    assert bot.ledger.watermark(OPS) is None  # nothing was claimed


def test_other_bots_are_answered_when_enabled(tmp_path: Any) -> None:
    bot = Bot(tmp_path, answer_bots=True)
    bot.connect()
    bot.intake.handle_event(posted(post("!echo hi", user=OTHER_BOT, props={"from_bot": "true"})))
    assert [p.text for p in bot.handler.ran] == ["!echo hi"]


def test_a_served_post_arrives_normalised_with_its_other_mentions(bot: Bot) -> None:
    bot.connect()
    bot.intake.handle_event(posted(post("@opsbot: echo hi @a"), mentions=[BOT, ALICE]))
    (incoming,) = bot.handler.ran
    assert incoming.text == "!echo hi @a" and incoming.mentions == (ALICE,)
    assert incoming.source == "live" and not incoming.direct


def test_reactions_and_membership_changes_are_handed_over_but_not_the_bots_own(bot: Bot) -> None:
    bot.connect()
    for user in (BOT, ALICE):
        reaction = {"user_id": user, "post_id": "p", "emoji_name": "tada"}
        event = {"data": {"reaction": json.dumps(reaction)}, "broadcast": {"channel_id": OPS}}
        bot.intake.handle_event({"event": "reaction_added", **event})
    assert [(r["user_id"], c) for r, c in bot.handler.reactions] == [(ALICE, OPS)]
    bot.intake.handle_event(
        {"event": "user_removed", "data": {"user_id": ALICE, "remover_id": BOT, "channel_id": OPS}}
    )
    bot.intake.handle_event(
        {"event": "user_added", "data": {"user_id": BOT}, "broadcast": {"channel_id": QUIET}}
    )
    assert bot.handler.memberships == [(OPS, ALICE, False, BOT), (QUIET, BOT, True, "")]
