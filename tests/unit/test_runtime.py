"""The action runtime end to end, without chat: real audit store, jobs, policy, redaction."""

from __future__ import annotations

import threading
import time
from typing import Annotated, Literal

import pytest

from bot.errors import Refusal
from bot.messages import render
from bot.redaction import Redactor
from bot.rendering import MarkdownRenderer
from bot.runtime.actions import Arg, spec_of
from bot.runtime.actions import declare as action
from bot.runtime.approvals import ApprovalBook
from bot.runtime.audit import AuditEvent, AuditStore
from bot.runtime.callers import Person
from bot.runtime.jobs import JobExecutor
from bot.runtime.policy import Policy, Principal, Risk
from bot.runtime.runtime import Runtime
from bot.runtime.surface import NoSurface, Place, Posted

ALICE = Principal("a" * 26, "alice")
BOB = Principal("b" * 26, "bob")
DAVE = Principal("d" * 26, "dave")
IDS = {"@alice": ALICE.user_id, "@bob": BOB.user_id, "@dave": DAVE.user_id}
Env = Literal["staging", "production"]
SECRET = "hunter2-super-secret"


class Ops:
    def __init__(self):
        self.ran = []
        self.gate = threading.Event()

    @action(risk=Risk.CHANGE, target="env", timeout=5)
    def deploy(self, ctx, app: str, env: Annotated[Env, Arg(after="to")]):
        """Deploy an app."""
        ctx.progress("halfway")
        self.ran.append(("deploy", app, env))
        return f"deployed {app} with password={SECRET}"

    @action("db.drop", risk=Risk.DANGEROUS, target="env")
    def drop(self, ctx, db: str, env: Annotated[Env, Arg(after="in")]):
        """Drop a database."""
        self.ran.append(("drop", db, env))

    @action(risk=Risk.CHANGE, target="env", timeout=0.5, lock="refuse")
    def slow(self, ctx, env: Env):
        """Wait until told."""
        while not self.gate.is_set():
            ctx.wait(0.05)
        self.ran.append(("slow", env))

    @action(
        "restart",
        risk=Risk.CHANGE,
        target="host",
        environment=lambda plugin, values: values["host"].split("-")[0],
    )
    def restart(self, ctx, host: str):
        """Restart a host: its environment is the host name's prefix."""
        self.ran.append(("restart", host))


DEPLOY, DROP, SLOW = spec_of(Ops.deploy), spec_of(Ops.drop), spec_of(Ops.slow)
RESTART = spec_of(Ops.restart)


PLACE = Place("c" * 26)


def text(notice):
    return render(notice, MarkdownRenderer())


class _Index(Posted):
    def __init__(self, index):
        super().__init__(None)
        self.index = index


class Chat(NoSurface):
    """A channel: every message posted, and edits applied in place (a ChatSurface)."""

    name = "test"

    def __init__(self):
        self.messages: list[str] = []
        self.lock = threading.Lock()

    def post(self, place, message):
        with self.lock:
            self.messages.append(text(message))
            return _Index(len(self.messages) - 1)

    def edit(self, posted, message, *, final):
        with self.lock:
            self.messages[posted.index] = text(message)

    def wait_for(self, needle, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(needle in m for m in self.messages):
                    return
            time.sleep(0.02)
        raise AssertionError(f"{needle!r} never said: {self.messages}")


def ask(rt, chat, spec, plugin, values, who=ALICE):
    """A request from chat by ``who``, answered in ``chat``."""
    rt.surface = chat
    rt.submit(spec, plugin, values, Person(who), PLACE, "p" * 26)


class Clock:
    """The approval book's clock, moved by the test."""

    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def runtime(tmp_path, clock):
    policy = Policy.from_mapping(
        {
            "protected_environments": ["production"],
            "approvals": {"expire_after": "1s"},
            "roles": {
                "deployer": {
                    "members": ["@alice", "@bob"],
                    "grants": [
                        {"action": "deploy", "environments": "*"},
                        {"action": "slow"},
                        {"action": "db.*"},
                    ],
                },
                "approver": {"members": ["@dave"], "approves": ["db.*"]},
            },
        },
        IDS.get,
    )
    audit = AuditStore(tmp_path / "audit.sqlite3", redact=Redactor([SECRET]).scrub_obj)
    executor = JobExecutor(max_workers=4)
    rt = Runtime(
        policy=policy,
        audit=audit,
        executor=executor,
        redactor=Redactor([SECRET]),
        book=ApprovalBook(clock),
    )
    yield rt
    executor.shutdown(wait=1)
    audit.close()


def events(rt):
    return [r.event for r in rt.audit.last(100)]


def wait_event(rt, event, timeout=5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event in events(rt):
            return
        time.sleep(0.02)
    raise AssertionError(f"{event} never recorded: {events(rt)}")


def test_denied_without_a_grant_and_explained(runtime):
    chat, plugin = Chat(), Ops()
    outsider = Principal("e" * 26, "eve")
    ask(runtime, chat, DEPLOY, plugin, {"app": "api", "env": "staging"}, outsider)
    assert "denied: deploy in staging needs role deployer (you have: no role)" in chat.messages[0]
    assert events(runtime) == [AuditEvent.REQUESTED, AuditEvent.DENIED]
    assert "needs role deployer" in runtime.last_denial(outsider.user_id)
    assert plugin.ran == []


def test_allowed_action_runs_as_a_job_and_the_echo_carries_the_audit_id(runtime):
    chat, plugin = Chat(), Ops()
    ask(runtime, chat, DEPLOY, plugin, {"app": "api", "env": "staging"})
    wait_event(runtime, AuditEvent.SUCCEEDED)
    chat.wait_for("succeeded")
    final = runtime.audit.last(1)[0]
    assert len(chat.messages) == 1  # one message, edited in place
    assert f"audit {final.id}" in chat.messages[0] and "@alice" in chat.messages[0]
    assert plugin.ran == [("deploy", "api", "staging")]
    assert [r.event for r in runtime.audit.by_correlation(final.correlation_id)] == [
        AuditEvent.REQUESTED,
        AuditEvent.STARTED,
        AuditEvent.SUCCEEDED,
    ]


def test_secrets_in_output_never_reach_chat_or_audit(runtime, tmp_path):
    chat = Chat()
    ask(runtime, chat, DEPLOY, Ops(), {"app": "api", "env": "staging"})
    wait_event(runtime, AuditEvent.SUCCEEDED)
    chat.wait_for("succeeded")
    assert SECRET not in "".join(chat.messages)
    assert all(SECRET not in r.outcome for r in runtime.audit.last(10))
    assert SECRET.encode() not in (tmp_path / "audit.sqlite3").read_bytes()


def test_protected_environment_needs_the_requesters_confirmation(runtime):
    chat, plugin = Chat(), Ops()
    ask(runtime, chat, DEPLOY, plugin, {"app": "api", "env": "production"})
    request_id = runtime.book.pending()[0].id
    assert f"confirm {request_id}" in chat.messages[0]
    assert "only @alice can confirm" in text(runtime.decide(request_id, BOB, True))
    assert plugin.ran == []
    assert "granted by @alice" in text(runtime.decide(request_id, ALICE, True))
    wait_event(runtime, AuditEvent.SUCCEEDED)
    assert plugin.ran == [("deploy", "api", "production")]
    assert AuditEvent.CONFIRMATION_REQUESTED in events(runtime)


def test_dangerous_action_needs_another_approver(runtime):
    chat, plugin = Chat(), Ops()
    ask(runtime, chat, DROP, plugin, {"db": "orders", "env": "staging"})
    request_id = runtime.book.pending()[0].id
    assert "role approver" in chat.messages[0]
    assert "cannot approve your own" in text(runtime.decide(request_id, ALICE, True))
    assert "may not approve" in text(runtime.decide(request_id, BOB, True))
    assert plugin.ran == []
    assert "granted by @dave" in text(runtime.decide(request_id, DAVE, True))
    wait_event(runtime, AuditEvent.SUCCEEDED)
    assert plugin.ran == [("drop", "orders", "staging")]


def test_approval_is_bound_to_the_exact_arguments(runtime):
    chat, plugin = Chat(), Ops()
    ask(runtime, chat, DROP, plugin, {"db": "orders", "env": "staging"})
    request = runtime.book.pending()[0]
    runtime._pending[request.id].values["db"] = "customers"  # changed after asking
    answer = text(runtime.decide(request.id, DAVE, True))
    assert "granted for different arguments; nothing was run" in answer
    assert plugin.ran == []
    assert events(runtime)[-1] is AuditEvent.DENIED


def test_reaction_approval_and_rejection(runtime):
    chat, plugin = Chat(), Ops()
    ask(runtime, chat, DROP, plugin, {"db": "a", "env": "staging"})
    first = runtime.book.pending()[0]
    first.post_id = "q" * 26
    assert runtime.decide_by_reaction("q" * 26, DAVE, "heart") is None
    assert "rejected by @dave" in text(runtime.decide_by_reaction("q" * 26, DAVE, "-1"))
    ask(runtime, chat, DROP, plugin, {"db": "b", "env": "staging"})
    second = runtime.book.pending()[0]
    second.post_id = "r" * 26
    assert "granted by @dave" in text(runtime.decide_by_reaction("r" * 26, DAVE, "+1"))
    wait_event(runtime, AuditEvent.SUCCEEDED)
    assert plugin.ran == [("drop", "b", "staging")]


def test_requests_expire(runtime, clock):
    chat, plugin = Chat(), Ops()
    ask(runtime, chat, DROP, plugin, {"db": "a", "env": "staging"})
    request_id = runtime.book.pending()[0].id
    clock.now += 0.9
    assert runtime.book.pending()[0].id == request_id  # not before its time (1 s)
    clock.now += 0.1
    assert "expired" in text(runtime.decide(request_id, DAVE, True))
    assert events(runtime)[-2:] == [AuditEvent.EXPIRED, AuditEvent.REFUSED]
    refusal = runtime.audit.last(1)[0]
    assert refusal.decider_id == DAVE.user_id and "expired" in refusal.outcome
    assert any("expired; nothing was run" in m for m in chat.messages)
    assert plugin.ran == []


def test_cancel_timeout_and_busy_target(runtime):
    chat, plugin = Chat(), Ops()
    ask(runtime, chat, SLOW, plugin, {"env": "staging"})
    wait_event(runtime, AuditEvent.STARTED)
    ask(runtime, chat, SLOW, plugin, {"env": "staging"}, BOB)
    assert any("busy" in m for m in chat.messages)
    job = runtime.jobs()[0]
    outsider = Principal("e" * 26, "eve")
    with pytest.raises(Refusal, match="may cancel"):
        runtime.cancel(job.id, outsider)
    assert runtime.cancel(job.id, ALICE) is job
    wait_event(runtime, AuditEvent.CANCELLED)
    ask(runtime, chat, SLOW, plugin, {"env": "production"})
    runtime.decide(runtime.book.pending()[0].id, ALICE, True)
    wait_event(runtime, AuditEvent.TIMED_OUT)
    assert plugin.ran == []


def test_recover_marks_unfinished_actions_interrupted(runtime):
    chat = Chat()
    ask(runtime, chat, SLOW, Ops(), {"env": "staging"})
    wait_event(runtime, AuditEvent.STARTED)
    # a new process would find the STARTED record without an end
    interrupted = runtime.recover()
    assert [r.event for r in interrupted] == [AuditEvent.INTERRUPTED]
    assert interrupted[0].action == "slow" and interrupted[0].trigger == "startup"
    assert runtime.audit.verify().ok


def test_a_job_that_ends_at_once_does_not_race_its_acknowledgement(runtime):
    class SlowChat(Chat):
        def post(self, place, message):
            # The job has started before its acknowledgement is posted: what it reports
            # must wait for the acknowledgement, to edit it rather than overtake it.
            wait_event(runtime, AuditEvent.STARTED)
            return super().post(place, message)

    chat, plugin = SlowChat(), Ops()
    ask(runtime, chat, DEPLOY, plugin, {"app": "api", "env": "staging"})
    chat.wait_for("succeeded")
    assert len(chat.messages) == 1 and "succeeded" in chat.messages[0]


def test_policy_decides_on_the_derived_environment(runtime):
    runtime.policy = Policy.from_mapping(
        {
            "roles": {
                "ops": {
                    "members": ["@alice"],
                    "grants": [{"action": "restart", "environments": ["staging"]}],
                }
            }
        },
        IDS.get,
    )
    chat, plugin = Chat(), Ops()
    ask(runtime, chat, RESTART, plugin, {"host": "production-web1"})
    assert "restart in production is not granted" in chat.messages[0]
    ask(runtime, chat, RESTART, plugin, {"host": "staging-web1"})
    wait_event(runtime, AuditEvent.SUCCEEDED)
    assert plugin.ran == [("restart", "staging-web1")]
    assert runtime.audit.last(1)[0].target == "staging-web1"  # the lock and record target
