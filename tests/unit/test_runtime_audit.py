"""Issue 9 at the runtime: secrets scrubbed before any cut, every decision recorded with the
decider's id, the job id in the records, abandoned requests, the channel as a witness."""

from __future__ import annotations

import re
import threading
from typing import Annotated

from bot.errors import Refusal
from bot.messages import render
from bot.redaction import Redactor
from bot.rendering import MarkdownRenderer
from bot.runtime.actions import Arg, spec_of
from bot.runtime.actions import declare as action
from bot.runtime.audit import AuditEvent, AuditStore
from bot.runtime.callers import Person
from bot.runtime.jobs import JobExecutor
from bot.runtime.policy import Policy, Principal, Risk
from bot.runtime.runtime import MAX_RESULT_CHARS, Runtime
from bot.runtime.surface import NoSurface, Place, Posted

SECRET = "zQxW-vRtY-uIoP-kLmN-jHgS-wXyZ-qq"  # 32 characters; no hex run: hashes cannot echo it
ALICE, BOB, DAVE = (Principal(c * 26, n) for c, n in (("a", "alice"), ("b", "bob"), ("d", "dave")))
OPS, AUDIT = Place("o" * 26), Place("x" * 26)
POLICY = {
    "roles": {
        "ops": {"members": [ALICE.user_id, BOB.user_id], "grants": [{"action": "*"}]},
        "approver": {"members": [DAVE.user_id], "approves": ["*"]},
    }
}


class Ops:
    @action(risk=Risk.CHANGE)
    def dump(self, ctx, pad: int):
        """Print a long result that ends with a secret."""
        return "x" * pad + SECRET

    @action(risk=Risk.DANGEROUS)
    def wipe(self, ctx, env: str):
        """Needs a second person."""
        return f"wiped {env}"


DUMP, WIPE = spec_of(Ops.dump), spec_of(Ops.wipe)


class Channels(NoSurface):
    def __init__(self):
        self.texts: dict[str, list[str]] = {}
        self.finals = threading.Semaphore(0)

    def post(self, place, message):
        self.texts.setdefault(place.channel, []).append(render(message, MarkdownRenderer()))
        return _At(place.channel, len(self.texts[place.channel]) - 1)

    def edit(self, posted, message, *, final):
        self.texts[posted.channel][posted.index] = render(message, MarkdownRenderer())
        if final:
            self.finals.release()


class _At(Posted):
    def __init__(self, channel, index):
        super().__init__(None)
        self.channel, self.index = channel, index


def make(tmp_path, surface):
    redactor = Redactor([SECRET])
    return Runtime(
        policy=Policy.from_mapping(POLICY),
        audit=AuditStore(tmp_path / "audit.sqlite3", redact=redactor.scrub_obj),
        executor=JobExecutor(max_workers=2),
        redactor=redactor,
        surface=surface,
        audit_place=AUDIT,
    )


def fragments(secret, n=4):
    return {secret[i : i + n] for i in range(len(secret) - n + 1)}


def test_a_secret_after_a_long_result_leaks_nowhere_in_part(tmp_path):
    channels = Channels()
    runtime = make(tmp_path, channels)
    for pad in range(MAX_RESULT_CHARS - 40, MAX_RESULT_CHARS + 8, 4):
        runtime.submit(DUMP, Ops(), {"pad": pad}, Person(ALICE), OPS)
        assert channels.finals.acquire(timeout=10)
    runtime.executor.shutdown(wait=5)
    runtime.audit.close()
    shown = "\n".join(channels.texts[OPS.channel] + channels.texts[AUDIT.channel])
    stored = "".join(  # the database and whatever its write-ahead log still holds
        path.read_bytes().decode("latin-1") for path in tmp_path.glob("audit.sqlite3*")
    )
    assert "x" * 100 in stored  # the results are there
    for piece in fragments(SECRET):
        assert piece not in shown and piece not in stored, piece


def test_every_decision_is_recorded_with_the_deciders_id(tmp_path):
    channels = Channels()
    runtime = make(tmp_path, channels)
    runtime.submit(WIPE, Ops(), {"env": "staging"}, Person(ALICE), OPS)
    request = runtime.book.pending()[0]
    runtime.decide(request.id, ALICE, True)  # own request
    runtime.decide(request.id, BOB, True)  # no approves role
    runtime.decide(request.id, DAVE, True)
    assert channels.finals.acquire(timeout=10)
    records = runtime.audit.by_correlation(runtime.audit.last(1)[0].correlation_id)
    decisions = [(r.event, r.decider_id, r.outcome) for r in records if r.decider_id]
    assert decisions == [
        (AuditEvent.REFUSED, ALICE.user_id, "you cannot approve your own request"),
        (AuditEvent.REFUSED, BOB.user_id, "you may not approve wipe"),
        (AuditEvent.GRANTED, DAVE.user_id, "approval granted by @dave"),
    ]
    granted = next(r for r in records if r.event is AuditEvent.GRANTED)
    assert granted.actor_id == ALICE.user_id  # the requester stays the actor


def test_the_job_id_is_in_every_record_from_authorization_on(tmp_path):
    channels = Channels()
    runtime = make(tmp_path, channels)
    runtime.submit(WIPE, Ops(), {"env": "staging"}, Person(ALICE), OPS)
    runtime.decide(runtime.book.pending()[0].id, DAVE, True)
    assert channels.finals.acquire(timeout=10)
    echo = channels.texts[OPS.channel][0]
    job_id = re.search(r"job (J-[0-9A-F]{5})", echo).group(1)
    records = runtime.audit.by_job(job_id)
    assert [r.event for r in records] == [
        "requested",
        "approval_requested",
        "granted",
        "started",
        "succeeded",
    ]
    assert {r.job_id for r in records[1:]} == {job_id}
    assert f"audit {records[-1].id} #{records[-1].hash[:12]}" in echo


def test_a_request_pending_at_a_crash_is_abandoned_at_the_next_start(tmp_path):
    first = make(tmp_path, Channels())
    first.submit(WIPE, Ops(), {"env": "staging"}, Person(ALICE), OPS)
    request_id = first.book.pending()[0].id
    first.executor.shutdown(wait=1)
    first.audit.close()  # the process dies with the request open
    channels = Channels()
    second = make(tmp_path, channels)
    ((channel, notice),) = second.abandon_pending()
    assert channel == OPS.channel and notice.request_id == request_id
    record = second.audit.last(1)[0]
    assert record.event is AuditEvent.ABANDONED and record.actor_id == ALICE.user_id
    assert "was still pending when the bot stopped" in render(notice, MarkdownRenderer())
    assert second.abandon_pending() == []  # once


def test_checkpoints_go_to_the_audit_channel_and_copies_carry_hashes(tmp_path):
    channels = Channels()
    runtime = make(tmp_path, channels)
    runtime.submit(DUMP, Ops(), {"pad": 1}, Person(ALICE), OPS)
    assert channels.finals.acquire(timeout=10)
    line = runtime.post_checkpoint()
    copies = channels.texts[AUDIT.channel]
    assert copies[-1] == line and line.startswith("audit checkpoint records=3 ")
    head = runtime.audit.last(1)[0]
    assert any(f"audit {head.id} #{head.hash[:12]}" in copy for copy in copies)


class Everything(Channels):
    """Keeps every text ever posted or edited in, progress included."""

    def __init__(self):
        super().__init__()
        self.history: list[str] = []

    def post(self, place, message):
        self.history.append(render(message, MarkdownRenderer()))
        return super().post(place, message)

    def edit(self, posted, message, *, final):
        self.history.append(render(message, MarkdownRenderer()))
        super().edit(posted, message, final=final)


class Chatty:
    @action(risk=Risk.CHANGE)
    def login(self, ctx, user: str, token: str):
        """Report progress that quotes a secret."""
        ctx.progress(f"logging in with {token}")
        ctx.wait(1.5)  # long enough for the progress edit to go out before the result
        return f"logged in as {user}"


def test_progress_commands_and_copies_never_show_a_secret(tmp_path):
    channels = Everything()
    runtime = make(tmp_path, channels)
    runtime.submit(spec_of(Chatty.login), Chatty(), f"bob token={SECRET}", Person(ALICE), OPS)
    assert channels.finals.acquire(timeout=10)
    assert any("logging in with" in text for text in channels.history)  # progress was shown
    for text in channels.history:
        assert not any(piece in text for piece in fragments(SECRET)), text


def _no_passwords_here(plugin, values):
    for name, value in values["params"].items():
        if name.endswith("_PASS"):
            raise Refusal(f"{name} is a password: not taken from chat", secrets=[value])


class Builds:
    @action(risk=Risk.CHANGE, check=_no_passwords_here)
    def build(self, ctx, job: str, params: Annotated[dict[str, str], Arg(keywords=True)]):
        """Trigger a build."""


def test_a_secret_found_by_a_check_is_scrubbed_from_the_refusal(tmp_path):
    channels = Channels()
    runtime = make(tmp_path, channels)
    password = "Hunter2-Very-Secret"
    runtime.submit(
        spec_of(Builds.build), Builds(), f"deploy DB_PASS={password}", Person(ALICE), OPS
    )
    (answer,) = channels.texts[OPS.channel]
    assert "DB_PASS is a password" in answer and password not in answer
    (record,) = runtime.audit.last(10)  # refused before the request was recorded
    assert record.event is AuditEvent.DENIED
    assert password not in record.to_json()
    assert password not in runtime.last_denial(ALICE.user_id)
