"""Issue 9 at the runtime: secrets scrubbed before any cut, every decision recorded with the
decider's id, the job id in the records, abandoned requests, the channel as a witness."""

from __future__ import annotations

import re
import threading

from bot.messages import render
from bot.redaction import Redactor
from bot.rendering import MarkdownRenderer
from bot.runtime.actions import declare as action
from bot.runtime.actions import spec_of
from bot.runtime.audit import AuditEvent, AuditStore
from bot.runtime.callers import Person
from bot.runtime.jobs import JobExecutor
from bot.runtime.policy import Policy, Principal, Risk
from bot.runtime.runtime import MAX_RESULT_CHARS, Runtime
from bot.runtime.surface import NoSurface, Place, Posted

# 32 characters, as OPSROOM_REDACT_ENV gives it. No 4 characters of it in a row are all hex
# digits: the hashes and ids around it would contain such fragments by chance.
SECRET = "s3cr3t-Value-Qx7Kp2Wz-Jm9Rt4NyH5"
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
    stored = (tmp_path / "audit.sqlite3").read_bytes().decode("latin-1")
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
