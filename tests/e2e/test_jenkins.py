"""Jenkins builds through the real bot, the fake Mattermost and the fake Jenkins."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from bot.testing.fake_jenkins import FakeJenkins
from tests.e2e.test_actions import audit, bot_posts, current, wait_until

PARAMS = [
    {"name": "VERSION", "type": "string", "default": "1.0"},
    {"name": "TARGET", "type": "choice", "choices": ["blue", "green"]},
    {"name": "DRY_RUN", "type": "boolean", "default": False},
    {"name": "DB_PASS", "type": "password"},
]


@pytest.fixture
def jenkins():
    server = FakeJenkins()
    server.start()
    server.add_job(
        "team/app/deploy",
        parameters=PARAMS,
        pipeline=True,
        stages=["checkout", "test", "ship"],
        duration=1.5,
        console=[f"deploying step {i}" for i in range(1, 40)],
    )
    server.add_job(
        "team/app/tests",
        duration=0.5,
        result="FAILURE",
        console=[f"test {i} ok" for i in range(1, 600)] + ["AssertionError: expected 3, got 4"],
    )
    server.add_job("team/app/slow", duration=60, queue_seconds=None)
    server.add_job("prod/release", duration=0.3)
    server.add_job("forbidden/nuke", duration=0.3)
    yield server
    server.stop()


@pytest.fixture
def files(tmp_path, jenkins):
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "jenkins": {
                    "servers": {
                        "ci": {
                            "url": jenkins.url,
                            "user": "opsbot",
                            "token_env": "CI_TOKEN",
                            "timeout": "3s",
                        }
                    }
                },
                "environments": {
                    "staging": {
                        "hosts": {"web1": {"address": "127.0.0.1"}},
                        "jenkins": {"server": "ci", "jobs": ["team/app"]},
                    },
                    "production": {
                        "hosts": {"web2": {"address": "127.0.0.1"}},
                        "jenkins": {"server": "ci", "jobs": ["prod/*"]},
                    },
                },
            }
        )
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "protected_environments": ["production"],
                "roles": {
                    "builder": {
                        "members": ["@alice"],
                        "grants": [{"action": "jenkins.*", "environments": ["*"]}],
                    },
                },
            }
        )
    )
    return inventory, policy


@pytest.fixture
def jbot(make_bot, files, jenkins):
    inventory, policy = files
    return make_bot(
        OPSROOM_INVENTORY=str(inventory),
        OPSROOM_POLICY=str(policy),
        CI_TOKEN=jenkins.token,
        OPSROOM_JENKINS_POLL_INTERVAL="0.3s",
    )


def say(mm, world, text):
    before = len(bot_posts(mm, world, world.ops))
    mm.post_as(world.alice, world.ops, text)
    posts = wait_until(
        lambda: bot_posts(mm, world, world.ops)[before:], message=f"answer to {text}"
    )
    return posts[0]


def final(mm, post, word, timeout=20):
    try:
        return wait_until(lambda: word in current(mm, post) and current(mm, post), timeout)
    except AssertionError:
        raise AssertionError(f"{word!r} never in the post: {current(mm, post)!r}") from None


def test_build_succeeds_with_parameters_in_a_form_body(fake_mm, world, jenkins, jbot):
    post = say(fake_mm, world, "!jenkins build team/app/deploy VERSION=2.4 TARGET=green")
    text = final(fake_mm, post, "succeeded")
    assert "team/app/deploy #1 SUCCESS" in text
    assert "/job/team/job/app/job/deploy/1/" in text
    (trigger,) = jenkins.requests_to("buildWithParameters", "POST")
    assert trigger.form == {"VERSION": "2.4", "TARGET": "green"} and trigger.query == {}
    assert jenkins.build_of("team/app/deploy", 1).params["TARGET"] == "green"
    assert jenkins.token not in jbot.log()


def test_progress_shows_the_pipeline_stage(fake_mm, world, jenkins, jbot):
    jenkins.jobs["team/app/deploy"].duration = 6
    post = say(fake_mm, world, "!jenkins build team/app/deploy")
    seen = wait_until(lambda: "stage" in current(fake_mm, post) and current(fake_mm, post))
    assert "running" in seen and " of ~6.0s" in seen
    final(fake_mm, post, "succeeded")


def test_failure_shows_the_console_tail_and_attaches_the_log(fake_mm, world, jenkins, jbot):
    post = say(fake_mm, world, "!jenkins build team/app/tests")
    text = final(fake_mm, post, "failed")
    assert "team/app/tests #1 FAILURE" in text
    assert "AssertionError: expected 3, got 4" in text
    assert "test 1 ok" not in text.replace("test 1 ok\n", "")  # a tail, not the whole log
    uploaded = fake_mm.uploaded_files
    assert any(f["name"] == "team_app_tests-1.log" for f in uploaded), uploaded


def test_unknown_job_in_an_allowed_folder(fake_mm, world, jenkins, jbot):
    post = say(fake_mm, world, "!jenkins build team/app/nope")
    assert "Jenkins ci: no job team/app/nope" in post["message"]
    assert jenkins.requests_to("build", "POST") == []


def test_job_not_in_the_allow_list_makes_no_request(fake_mm, world, jenkins, jbot):
    post = say(fake_mm, world, "!jenkins build forbidden/nuke")
    assert "is not allowed in any environment" in post["message"]
    assert jenkins.requests == []


def test_bad_parameters_trigger_nothing(fake_mm, world, jenkins, jbot):
    post = say(fake_mm, world, "!jenkins build team/app/deploy TARGET=red")
    assert "TARGET must be one of blue, green" in post["message"]
    assert "its parameters: VERSION (string), TARGET (one of blue|green)" in post["message"]
    post = say(fake_mm, world, "!jenkins build team/app/deploy DRY_RUN=perhaps")
    assert "DRY_RUN must be true or false" in post["message"]
    post = say(fake_mm, world, "!jenkins build team/app/deploy COLOUR=red")
    assert "has no parameter COLOUR" in post["message"]
    assert jenkins.requests_to("build", "POST") == []


def test_password_parameters_are_not_taken_from_chat(fake_mm, world, jenkins, jbot):
    post = say(fake_mm, world, "!jenkins build team/app/deploy DB_PASSWORD=hunter2-secret")
    assert "has no parameter DB_PASSWORD" in post["message"]
    post = say(fake_mm, world, "!jenkins build team/app/deploy DB_PASS=hunter2-secret")
    assert "DB_PASS is a password parameter" in post["message"]
    assert jenkins.requests_to("build", "POST") == []


def test_queue_item_cancelled_in_jenkins(fake_mm, world, jenkins, jbot):
    post = say(fake_mm, world, "!jenkins build team/app/slow")
    wait_until(lambda: "queued" in current(fake_mm, post), message="queued progress")
    (item,) = jenkins.triggered()
    jenkins.cancel_in_jenkins(item.id)
    text = final(fake_mm, post, "failed")
    assert f"queue item {item.id} of team/app/slow was cancelled in Jenkins" in text


def test_cancel_from_chat_cancels_the_queue_item_then_aborts_a_build(fake_mm, world, jenkins, jbot):
    post = say(fake_mm, world, "!jenkins build team/app/slow")
    wait_until(lambda: "queued" in current(fake_mm, post), message="queued progress")
    job_id = re.search(r"J-[0-9A-Za-z]+", current(fake_mm, post)).group(0)
    say(fake_mm, world, f"!cancel {job_id}")
    final(fake_mm, post, "cancelled")
    (item,) = jenkins.triggered()
    wait_until(lambda: jenkins.queue[item.id].cancelled, message="queue item cancelled")
    # A running build is stopped in Jenkins.
    jenkins.jobs["team/app/slow"].queue_seconds = 0
    post = say(fake_mm, world, "!jenkins build team/app/slow")
    wait_until(lambda: "#1 running" in current(fake_mm, post), message="the build running")
    job_id = re.search(r"J-[0-9A-Za-z]+", current(fake_mm, post)).group(0)
    say(fake_mm, world, f"!cancel {job_id}")
    final(fake_mm, post, "cancelled")
    wait_until(lambda: jenkins.requests_to("/1/stop", "POST"), message="stop request")
    assert jenkins.build_of("team/app/slow", 1).aborted_at is not None


def test_auth_failure_is_one_clear_line(fake_mm, world, jenkins, make_bot, files):
    inventory, policy = files
    make_bot(OPSROOM_INVENTORY=str(inventory), OPSROOM_POLICY=str(policy), CI_TOKEN="wrong-token")
    post = say(fake_mm, world, "!jenkins status team/app/deploy")
    text = final(fake_mm, post, "failed")
    assert "Jenkins ci refused the credentials of opsbot (401 Unauthorized)" in text
    assert "wrong-token" not in text


def test_jenkins_down_is_not_no_such_job(fake_mm, world, jenkins, jbot):
    jenkins.stop()
    post = say(fake_mm, world, "!jenkins build team/app/deploy")
    assert "cannot reach Jenkins ci" in post["message"] and "connection refused" in post["message"]
    assert "no job" not in post["message"]


def test_production_build_waits_for_confirmation(fake_mm, world, jenkins, jbot):
    post = say(fake_mm, world, "!jenkins build prod/release")
    assert "touches protected production" in post["message"]
    assert jenkins.requests_to("build", "POST") == []
    fake_mm.post_as(world.bob, world.ops, "!jenkins build prod/release")
    denied = wait_until(
        lambda: [
            p for p in bot_posts(fake_mm, world, world.ops) if "needs role builder" in p["message"]
        ]
    )
    assert denied
    request = next(w for w in post["message"].split() if w.startswith("R-")).strip("*`:,")
    say(fake_mm, world, f"!confirm {request}")
    wait_until(
        lambda: any(
            "prod/release #1 SUCCESS" in current(fake_mm, p)
            for p in bot_posts(fake_mm, world, world.ops)
        ),
        message="the confirmed build",
    )
    records = [
        json.loads(line) for line in audit(jbot, "export", "--format", "jsonl").stdout.splitlines()
    ]
    assert any(r["event"] == "succeeded" and r["action"] == "jenkins.build" for r in records)


def test_status_console_jobs_queue(fake_mm, world, jenkins, jbot):
    post = say(fake_mm, world, "!jenkins build team/app/deploy VERSION=3.0")
    final(fake_mm, post, "succeeded")
    status = final(fake_mm, say(fake_mm, world, "!jenkins status team/app/deploy"), "SUCCESS")
    assert "team/app/deploy #1: SUCCESS" in status and "3.0" in status
    console = final(
        fake_mm, say(fake_mm, world, "!jenkins console team/app/deploy 1 lines=3"), "Finished"
    )
    assert "deploying step 39" in console and "deploying step 30" not in console
    jobs = final(fake_mm, say(fake_mm, world, "!jenkins jobs app"), "job(s)")
    assert "team/app/deploy" in jobs and "forbidden/nuke" not in jobs and "prod/release" not in jobs
    say(fake_mm, world, "!jenkins build team/app/slow")
    queue = final(fake_mm, say(fake_mm, world, "!jenkins queue"), "queued build")
    assert "team/app/slow" in queue and "Waiting for next available executor" in queue


def test_abort_command_stops_a_running_build(fake_mm, world, jenkins, jbot):
    jenkins.jobs["team/app/slow"].queue_seconds = 0
    build = say(fake_mm, world, "!jenkins build team/app/slow")
    wait_until(lambda: "#1 running" in current(fake_mm, build), message="the build running")
    answer = final(fake_mm, say(fake_mm, world, "!jenkins abort team/app/slow 1"), "succeeded")
    assert "team/app/slow #1: abort requested" in answer
    text = final(fake_mm, build, "failed")
    assert "team/app/slow #1 ABORTED" in text and "Aborted by opsbot" in text
