"""The runtime as a chat-free platform: no Errbot needed, triggers other than chat, data
outcomes, bounded memory, and the messages people see."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import threading
from typing import Annotated

import pytest
from pydantic import StringConstraints

from bot.messages import render
from bot.outcomes import Outcome, Table
from bot.redaction import Redactor
from bot.rendering import MarkdownRenderer, TextRenderer
from bot.runtime.actions import Arg, spec_of
from bot.runtime.actions import declare as action
from bot.runtime.audit import AuditEvent, AuditStore
from bot.runtime.callers import Operator, Person, Rule
from bot.runtime.jobs import JobExecutor
from bot.runtime.policy import Policy, Principal, Risk
from bot.runtime.runtime import Runtime
from bot.runtime.surface import NoSurface, Place, Posted

ALICE = Principal("a" * 26, "alice")
OPS = Place("o" * 26)
Service = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z][a-z0-9-]*$"),
    Arg(help="a service name such as nginx"),
]


class Plugin:
    @action("service.restart", risk=Risk.CHANGE, target="host")
    def restart(self, ctx, service: Service, host: Annotated[str, Arg(after="on")], note: str = ""):
        """Restart a service."""
        return f"restarted {service} on {host}"

    @action(risk=Risk.READ)
    def hosts(self, ctx, env: str = ""):
        """List hosts."""
        return Table(("host", "env"), [(f"web{i}", env or "prod") for i in range(40)])


RESTART, HOSTS = spec_of(Plugin.restart), spec_of(Plugin.hosts)


class Channel(NoSurface):
    """A surface that keeps the final text of every message, by place."""

    name = "test"

    def __init__(self):
        self.said: dict[str, list[str]] = {}
        self.done = threading.Event()

    def post(self, place, message):
        text = render(message, MarkdownRenderer())
        self.said.setdefault(place.channel, []).append(text)
        return _Handle(place.channel, len(self.said[place.channel]) - 1)

    def edit(self, posted, message, *, final):
        self.said[posted.channel][posted.index] = render(message, MarkdownRenderer())
        if final:
            self.done.set()


class _Handle(Posted):
    def __init__(self, channel, index):
        super().__init__(None)
        self.channel, self.index = channel, index


def make_runtime(tmp_path, policy, surface=None):
    return Runtime(
        policy=policy,
        audit=AuditStore(tmp_path / "audit.sqlite3", redact=Redactor([]).scrub_obj),
        executor=JobExecutor(max_workers=2),
        redactor=Redactor([]),
        surface=surface or NoSurface(),
    )


REMEDIATION_POLICY = {
    "roles": {
        "remediator": {"members": [], "grants": [{"action": "service.restart"}]},
        "human": {"members": [ALICE.user_id], "grants": [{"action": "service.restart"}]},
    }
}


def test_the_runtime_runs_an_action_with_no_errbot_or_mattermost_importable(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("errbot", "mattermostdriver", "websockets",
                                          "pydantic_settings"):
                    raise ImportError(f"{{name}} must not be imported by the runtime")
                return None

        sys.meta_path.insert(0, Block())
        from bot.redaction import Redactor
        from bot.runtime.actions import declare
        from bot.runtime.audit import AuditEvent, AuditStore
        from bot.runtime.callers import Operator
        from bot.runtime.jobs import JobExecutor
        from bot.runtime.policy import Policy, Risk
        from bot.runtime.runtime import Runtime

        class Ops:
            @declare(risk=Risk.CHANGE)
            def touch(self, ctx, name: str):
                return "touched " + name

        policy = Policy.from_mapping(
            {{"roles": {{"ops": {{"members": [], "grants": [{{"action": "touch"}}]}}}}}}
        )
        audit = AuditStore({str(tmp_path / "audit.sqlite3")!r})
        executor = JobExecutor()
        runtime = Runtime(policy=policy, audit=audit, executor=executor, redactor=Redactor([]))
        runtime.submit(Ops.touch._opsroom_action, Ops(), {{"name": "x"}},
                       Operator("root", frozenset({{"ops"}})))
        import time
        deadline = time.monotonic() + 30
        while audit.last(1)[0].event != AuditEvent.SUCCEEDED and time.monotonic() < deadline:
            time.sleep(0.01)
        print([r.event.value for r in audit.last(10)], audit.last(1)[0].outcome)
        assert not [m for m in sys.modules if m.startswith(("errbot", "mattermostdriver"))]
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "['requested', 'started', 'succeeded'] touched x" in result.stdout


def test_an_alert_rule_acts_as_a_role_is_audited_with_its_trigger_and_echoed(tmp_path):
    channel = Channel()
    runtime = make_runtime(tmp_path, Policy.from_mapping(REMEDIATION_POLICY), channel)
    rule = Rule("restart-on-down", role="remediator", alert="9f3c2a", alert_name="ServiceDown")
    runtime.submit(RESTART, Plugin(), {"service": "nginx", "host": "web1"}, rule, OPS)
    assert channel.done.wait(5)
    (echo,) = channel.said[OPS.channel]
    assert "by rule restart-on-down for alert ServiceDown" in echo
    assert "restarted nginx on web1" in echo
    records = runtime.audit.last(10)
    assert [r.event for r in records] == ["requested", "started", "succeeded"]
    assert {(r.actor_id, r.trigger) for r in records} == {("rule:restart-on-down", "alert:9f3c2a")}
    assert f"audit {records[-1].id} #{records[-1].hash[:12]}" in echo
    runtime.executor.shutdown(wait=1)


def test_a_rule_whose_role_lacks_the_grant_is_denied_and_nothing_runs(tmp_path):
    channel = Channel()
    runtime = make_runtime(tmp_path, Policy.from_mapping(REMEDIATION_POLICY), channel)
    rule = Rule("rogue", role="not-a-role", alert="1234")
    runtime.submit(RESTART, Plugin(), {"service": "nginx", "host": "web1"}, rule, OPS)
    (answer,) = channel.said[OPS.channel]
    assert "denied: service.restart in web1 needs role human or remediator" in answer
    assert [r.event for r in runtime.audit.last(10)] == ["requested", "denied"]
    assert runtime.jobs() == []


def test_chat_text_and_bound_values_take_the_same_path(tmp_path):
    channel = Channel()
    runtime = make_runtime(tmp_path, Policy.from_mapping(REMEDIATION_POLICY), channel)
    runtime.submit(RESTART, Plugin(), "nginx on web1", Person(ALICE), OPS)
    assert channel.done.wait(5)
    assert "restarted nginx on web1" in channel.said[OPS.channel][0]
    assert runtime.audit.last(1)[0].trigger == "chat"


def test_a_read_is_one_record_holding_a_summary_not_the_data(tmp_path):
    channel = Channel()
    runtime = make_runtime(tmp_path, Policy.from_mapping({}), channel)
    runtime.submit(HOSTS, Plugin(), "", Person(ALICE), OPS)
    assert channel.done.wait(5)
    (record,) = runtime.audit.last(10)
    assert record.event is AuditEvent.SUCCEEDED
    assert record.outcome == "40 rows shown"
    assert "web39" in channel.said[OPS.channel][0]  # the channel gets the data


def test_messages_show_no_empty_parameters(tmp_path):
    channel = Channel()
    runtime = make_runtime(tmp_path, Policy.from_mapping(REMEDIATION_POLICY), channel)
    runtime.submit(RESTART, Plugin(), "nginx on web1", Person(ALICE), OPS)
    assert channel.done.wait(5)
    text = channel.said[OPS.channel][0]
    assert "`!service restart service=nginx host=web1` for @alice succeeded" in text
    assert "note=" not in text


def test_a_bad_value_is_explained_with_the_parameters_description(tmp_path):
    channel = Channel()
    runtime = make_runtime(tmp_path, Policy.from_mapping(REMEDIATION_POLICY), channel)
    runtime.submit(RESTART, Plugin(), "Nginx! on web1", Person(ALICE), OPS)
    (answer,) = channel.said[OPS.channel]
    assert "service: expected a service name such as nginx (got 'Nginx!')" in answer
    assert "String should match" not in answer
    assert "usage: `!service restart <service> on <host> [<note>]`" in answer


def test_without_a_policy_a_denial_says_how_to_grant(tmp_path):
    channel = Channel()
    runtime = make_runtime(tmp_path, Policy.none(), channel)
    runtime.submit(RESTART, Plugin(), "nginx on web1", Person(ALICE), OPS)
    (answer,) = channel.said[OPS.channel]
    assert "no policy is loaded" in answer and "OPSROOM_POLICY" in answer
    assert "examples/policy.yaml" in answer


def test_finished_runs_and_old_denials_are_not_kept(tmp_path, monkeypatch):
    import bot.runtime.runtime as core

    monkeypatch.setattr(core, "MAX_REMEMBERED_DENIALS", 3)
    channel = Channel()
    runtime = make_runtime(tmp_path, Policy.from_mapping(REMEDIATION_POLICY), channel)
    runtime.submit(RESTART, Plugin(), "nginx on web1", Person(ALICE), OPS)
    assert channel.done.wait(5)
    job_id = re.search(r"job (J-[0-9A-F]{5})", channel.said[OPS.channel][0]).group(1)
    runtime.executor.get(job_id).wait(5)  # returns once the completion work is done
    assert runtime._runs == {}
    for n in range(10):
        runtime.submit(RESTART, Plugin(), "nginx on web1", Person(Principal(f"u{n}", "x")), OPS)
    assert len(runtime._denials) == 3
    assert runtime.last_denial("u9") and runtime.last_denial("u0") is None


def test_terminal_tables_stay_within_100_columns():
    rows = [
        (f"A-{n:06d}", "14:03:37", "succeeded", "service.restart web1", "@alice", "x" * 200)
        for n in range(5)
    ]
    table = Table(("id", "time", "event", "action", "who", "outcome"), rows)
    text = TextRenderer().outcome(Outcome("", table))
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "| " not in text  # aligned text, not Markdown


def test_markdown_tables_escape_pipes_and_say_how_many_more():
    table = Table(("a",), [("x|y",), ("z",)], limit=1)
    text = MarkdownRenderer().table(table)
    assert "x\\|y" in text and "… 1 more" in text and "z" not in text


@pytest.mark.parametrize("caller", [Rule("r", "ops", "fp"), Operator("root")])
def test_non_chat_callers_are_never_people(caller):
    assert not caller.principal.user_id.isalnum()  # "rule:r", "operator:root": no user id


@pytest.mark.parametrize(
    "text",
    [
        "nginx\ud800 on web1",  # a lone surrogate
        "ngi\x00nx on web1",  # NUL
        "nginx\x1b[31m on web1",  # a terminal escape
        "x" * 1_000_000 + " on web1",  # 1 MB
    ],
    ids=["surrogate", "nul", "control", "1MB"],
)
def test_malformed_input_is_refused_with_a_reason_and_audited(tmp_path, text):
    channel = Channel()
    runtime = make_runtime(tmp_path, Policy.from_mapping(REMEDIATION_POLICY), channel)
    runtime.submit(RESTART, Plugin(), text, Person(ALICE), OPS)
    (answer,) = channel.said[OPS.channel]
    assert answer.startswith(("⛔ service: ", "⛔ the arguments are 1000008 characters long"))
    assert "nothing was run" in answer
    answer.encode("utf-8")  # postable: no lone surrogate, and no raw control character
    assert not any(ord(c) < 32 and c != "\n" for c in answer)
    assert len(answer) < 2000
    (record,) = runtime.audit.last(10)
    assert record.event is AuditEvent.DENIED and runtime.audit.verify().ok
    assert runtime.jobs() == []
    why = runtime.last_denial(ALICE.user_id)
    why.encode("utf-8")
    assert not any(ord(c) < 32 for c in why) and len(why) < 2000


def test_the_policy_can_require_a_second_person_for_changes_in_an_environment(tmp_path):
    channel = Channel()
    policy = Policy.from_mapping(
        {
            **REMEDIATION_POLICY,
            "approvals": {"required_in": ["prod*"]},
            "roles": {
                **REMEDIATION_POLICY["roles"],
                "approver": {"members": ["d" * 26], "approves": ["*"]},
            },
        }
    )
    runtime = make_runtime(tmp_path, policy, channel)
    runtime.submit(RESTART, Plugin(), "nginx on prod-web1", Person(ALICE), OPS)
    (asked,) = channel.said[OPS.channel]
    assert "needs approval by someone else with role approver" in asked
    runtime.submit(RESTART, Plugin(), "nginx on stg-web1", Person(ALICE), OPS)
    assert channel.done.wait(5)  # staging: no question asked
    runtime.submit(HOSTS, Plugin(), "", Person(ALICE), OPS)  # reads are never gated
    assert "approval" not in channel.said[OPS.channel][-1]


def test_submit_says_what_became_of_the_request(tmp_path):
    channel = Channel()
    policy = Policy.from_mapping({**REMEDIATION_POLICY, "approvals": {"required_in": ["prod*"]}})
    runtime = make_runtime(tmp_path, policy, channel)
    refused = runtime.submit(RESTART, Plugin(), "Nginx! on web1", Person(ALICE), OPS)
    assert (refused.status, refused.job_id) == ("refused", "")
    assert "expected a service name" in refused.reason and refused.audit_id.startswith("A-")
    outsider = Person(Principal("e" * 26, "eve"))
    denied = runtime.submit(RESTART, Plugin(), "nginx on web1", outsider, OPS)
    assert denied.status == "denied" and "needs role" in denied.reason
    asked = runtime.submit(RESTART, Plugin(), "nginx on prod-web1", Person(ALICE), OPS)
    assert asked.status == "asked" and asked.job_id.startswith("J-")
    accepted = runtime.submit(RESTART, Plugin(), "nginx on web1", Person(ALICE), OPS)
    assert accepted.status == "accepted" and runtime.executor.get(accepted.job_id) is not None
