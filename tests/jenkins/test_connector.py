"""The Jenkins connector against recorded HTTP answers (responses): one test per pitfall."""

from __future__ import annotations

import re
import time

import pytest
import requests
import responses
from responses import matchers

from bot.connectors.jenkins import (
    BuildHandle,
    JenkinsClient,
    JenkinsError,
    JenkinsNotFound,
    JenkinsServer,
    JenkinsUnavailable,
    JobInfo,
    ParameterDefinition,
    QueueItemCancelled,
    check_parameters,
    follow,
)
from bot.errors import ActionFailed, InvalidArgument
from bot.testing.fake_jenkins import FakeJenkins

URL = "http://ci.test/"
CRUMB = {"crumb": "c1", "crumbRequestField": "Jenkins-Crumb"}
JOB = f"{URL}job/team/job/app/"


def client(**options):
    server = JenkinsServer("ci", URL, "opsbot", "tok-123456", timeout=2)
    return JenkinsClient(server, retry_wait=0, **options)


@responses.activate
def test_the_crumb_is_fetched_again_after_no_valid_crumb_and_the_post_retried_once():
    responses.get(f"{URL}crumbIssuer/api/json", json=CRUMB)
    responses.get(f"{URL}crumbIssuer/api/json", json={**CRUMB, "crumb": "c2"})
    responses.post(
        f"{JOB}build",
        status=201,
        headers={"Location": f"{URL}queue/item/7/"},
        match=[matchers.header_matcher({"Jenkins-Crumb": "c1"})],
    )
    responses.post(
        f"{JOB}build",
        status=403,
        body="No valid crumb was included in the request",
        match=[matchers.header_matcher({"Jenkins-Crumb": "c1"})],
    )
    responses.post(
        f"{JOB}build",
        status=201,
        headers={"Location": f"{URL}queue/item/8/"},
        match=[matchers.header_matcher({"Jenkins-Crumb": "c2"})],
    )
    c = client()
    assert c.trigger("team/app", None).queue_id == 7
    assert c.trigger("team/app", None).queue_id == 8  # Jenkins restarted in between
    assert [r.request.method for r in responses.calls].count("GET") == 2


@responses.activate
def test_a_second_403_is_an_error_not_a_loop():
    responses.get(f"{URL}crumbIssuer/api/json", json=CRUMB)
    responses.post(f"{JOB}build", status=403, body="No valid crumb was included in the request")
    with pytest.raises(JenkinsError, match="opsbot is not allowed to trigger job team/app"):
        client().trigger("team/app", None)
    assert len([c for c in responses.calls if c.request.method == "POST"]) == 2


@responses.activate
def test_no_crumb_issuer_means_no_crumb():
    responses.get(f"{URL}crumbIssuer/api/json", status=404)
    responses.post(f"{JOB}build", status=201, headers={"Location": f"{URL}queue/item/9/"})
    assert client().trigger("team/app", None).queue_id == 9
    assert "Jenkins-Crumb" not in responses.calls[-1].request.headers


@responses.activate
def test_credentials_go_with_the_first_request():
    responses.get(f"{URL}me/api/json", json={"id": "opsbot"}, headers={"X-Jenkins": "2.479.1"})
    assert client().whoami() == ("opsbot", "2.479.1")
    assert responses.calls[0].request.headers["Authorization"].startswith("Basic ")


@responses.activate
def test_parameters_go_in_a_form_body_never_in_the_url():
    responses.get(f"{URL}crumbIssuer/api/json", status=404)
    responses.post(
        f"{JOB}buildWithParameters", status=201, headers={"Location": f"{URL}queue/item/3/"}
    )
    client().trigger("team/app", {"VERSION": "1.2", "SECRET_THING": "s3cr3t"})
    request = responses.calls[-1].request
    assert "?" not in request.url and "s3cr3t" not in request.url
    assert request.body == "VERSION=1.2&SECRET_THING=s3cr3t"


@responses.activate
def test_a_parameterised_job_without_parameters_uses_build_with_parameters():
    responses.get(f"{URL}crumbIssuer/api/json", status=404)
    responses.post(
        f"{JOB}buildWithParameters", status=201, headers={"Location": f"{URL}queue/item/4/"}
    )
    assert client().trigger("team/app", {}).queue_id == 4  # /build would answer 400


@responses.activate
def test_a_merged_trigger_is_found_in_the_queue():
    responses.get(f"{URL}crumbIssuer/api/json", status=404)
    responses.post(f"{JOB}buildWithParameters", status=303, headers={"Location": JOB})
    responses.get(
        f"{URL}queue/api/json",
        json={
            "items": [
                {"id": 41, "task": {"url": f"{URL}job/other/"}, "actions": []},
                {
                    "id": 42,
                    "task": {"url": JOB},
                    "actions": [{"parameters": [{"name": "VERSION", "value": "1.2"}]}],
                },
            ]
        },
    )
    triggered = client().trigger("team/app", {"VERSION": "1.2"})
    assert (triggered.queue_id, triggered.merged) == (42, True)


@pytest.mark.parametrize(
    ("status", "kind", "text"),
    [
        (401, JenkinsError, "refused the credentials of opsbot (401"),
        (403, JenkinsError, "opsbot is not allowed to read job team/app (403"),
        (404, JenkinsNotFound, "Jenkins ci: no job team/app"),
        (400, JenkinsError, "refused to read job team/app (400"),
        (409, JenkinsError, "refused to read job team/app (409"),
        (500, JenkinsUnavailable, "failed to read job team/app (500"),
        (502, JenkinsUnavailable, "failed to read job team/app (502"),
    ],
)
@responses.activate
def test_each_status_is_one_clear_line(status, kind, text):
    responses.get(f"{JOB}api/json", status=status)
    with pytest.raises(kind, match=re.escape(text)) as caught:
        client().job("team/app")
    assert isinstance(caught.value, ActionFailed) and "\n" not in str(caught.value)
    if status >= 500:
        assert "no job" not in str(caught.value)  # an outage is not "no such job"


@responses.activate
def test_reads_are_retried_on_a_transient_failure_writes_never():
    responses.get(f"{JOB}api/json", status=502)
    responses.get(f"{JOB}api/json", json={"url": JOB, "buildable": True})
    assert client().job("team/app").buildable
    responses.get(f"{URL}crumbIssuer/api/json", status=404)
    responses.post(f"{JOB}build", status=503)
    with pytest.raises(JenkinsUnavailable):
        client().trigger("team/app", None)
    assert len([c for c in responses.calls if c.request.method == "POST"]) == 1


def test_connection_refused_is_unavailable_not_unknown():
    with FakeJenkins() as fake:
        url = fake.url
    c = JenkinsClient(JenkinsServer("ci", url, "opsbot", "t0ken", timeout=2), retry_wait=0)
    with pytest.raises(
        JenkinsUnavailable, match=r"cannot reach Jenkins ci at .*connection refused"
    ):
        c.job("team/app")


def test_a_hung_jenkins_times_out(fake_jenkins):
    fake_jenkins.add_job("app")
    fake_jenkins.delay_next(3, count=3)
    c = JenkinsClient(
        JenkinsServer("ci", fake_jenkins.url, "opsbot", fake_jenkins.token, timeout=0.5),
        retry_wait=0,
        read_attempts=1,
    )
    started = time.monotonic()
    with pytest.raises(JenkinsUnavailable, match=r"did not answer within 0.5s \(to read job app\)"):
        c.job("app")
    assert time.monotonic() - started < 2.5


def test_listing_goes_through_folders(fake_jenkins):
    for path in ("top", "team/app/deploy", "team/app/tests", "a/b/c/d/e/f/deep"):
        fake_jenkins.add_job(path)
    c = JenkinsClient(JenkinsServer("ci", fake_jenkins.url, "opsbot", fake_jenkins.token))
    assert [j.path for j in c.jobs()] == [
        "a/b/c/d/e/f/deep",
        "team/app/deploy",
        "team/app/tests",
        "top",
    ]
    assert [j.path for j in c.jobs("team")] == ["team/app/deploy", "team/app/tests"]


def test_a_left_item_without_executable_is_still_starting(fake_jenkins):
    fake_jenkins.add_job("app", queue_seconds=0, start_gap=0.6, duration=0.1)
    c = JenkinsClient(JenkinsServer("ci", fake_jenkins.url, "opsbot", fake_jenkins.token))
    handle = BuildHandle(c, "app", c.trigger("app", None).queue_id)
    seen = []
    build = follow(handle, wait=time.sleep, report=seen.append, interval=0.1, max_interval=0.1)
    assert build.result == "SUCCESS"
    assert "starting" in [p.why for p in seen]  # the LeftItem with executable null


def test_cancel_queue_reads_the_item_back(fake_jenkins):
    fake_jenkins.add_job("held", queue_seconds=None)
    fake_jenkins.add_job("quick", queue_seconds=0, start_gap=0, duration=5)
    c = JenkinsClient(JenkinsServer("ci", fake_jenkins.url, "opsbot", fake_jenkins.token))
    held = c.trigger("held", None).queue_id
    assert c.cancel_queue(held).cancelled
    quick = c.trigger("quick", None).queue_id
    c.queue_item(quick)  # it starts
    result = c.cancel_queue(quick)  # Jenkins answers 404: too late
    assert (result.cancelled, result.build) == (False, 1)


def test_a_queue_item_cancelled_in_jenkins_ends_the_follow(fake_jenkins):
    fake_jenkins.add_job("held", queue_seconds=None)
    c = JenkinsClient(JenkinsServer("ci", fake_jenkins.url, "opsbot", fake_jenkins.token))
    handle = BuildHandle(c, "held", c.trigger("held", None).queue_id)
    fake_jenkins.cancel_in_jenkins(handle.queue_id)
    with pytest.raises(QueueItemCancelled, match="was cancelled in Jenkins before it started"):
        follow(handle, wait=time.sleep, report=lambda p: None, interval=0.05)


def test_progressive_console_headers(fake_jenkins):
    fake_jenkins.add_job("app", queue_seconds=0, start_gap=0, duration=0.4, console=["a", "b"])
    c = JenkinsClient(JenkinsServer("ci", fake_jenkins.url, "opsbot", fake_jenkins.token))
    c.queue_item(c.trigger("app", None).queue_id)
    first = c.console("app", 1)
    assert first.more
    build = fake_jenkins.build_of("app", 1)
    deadline = time.monotonic() + 30  # wait for the build to end (0.4 s, longer when loaded)
    while not build.ended(time.monotonic()) and time.monotonic() < deadline:
        time.sleep(0.05)
    rest = c.console("app", 1, first.size)
    assert not rest.more and rest.text.endswith("Finished: SUCCESS\n")
    assert c.console_text("app", 1) == first.text + rest.text


JOB_INFO = JobInfo(
    "team/app",
    JOB,
    True,
    False,
    False,
    (
        ParameterDefinition("VERSION", "string", "1.0"),
        ParameterDefinition("TARGET", "choice", "blue", ("blue", "green")),
        ParameterDefinition("DRY_RUN", "boolean", "false"),
        ParameterDefinition("DB_PASS", "password"),
    ),
    None,
    False,
    "blue",
)


def test_parameters_are_checked_against_the_definitions():
    assert check_parameters(JOB_INFO, {"TARGET": "green", "DRY_RUN": "YES"}) == {
        "TARGET": "green",
        "DRY_RUN": "true",
    }
    for given, text in [
        ({"COLOUR": "red"}, "has no parameter COLOUR (its parameters: VERSION (string), TARGET"),
        ({"TARGET": "red"}, "TARGET must be one of blue, green"),
        ({"DRY_RUN": "maybe"}, "DRY_RUN must be true or false"),
        ({"DB_PASS": "x"}, "DB_PASS is a password parameter"),
    ]:
        with pytest.raises(InvalidArgument, match=re.escape(text)):
            check_parameters(JOB_INFO, given)
    plain = JobInfo("plain", JOB, True, False, False, None, None, False, "blue")
    assert check_parameters(plain, {}) is None
    with pytest.raises(InvalidArgument, match="it takes no parameters"):
        check_parameters(plain, {"A": "b"})


def test_requests_get_a_timeout(monkeypatch):
    seen = []
    original = requests.Session.request

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("timeout"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    with responses.RequestsMock() as mock:
        mock.get(f"{JOB}api/json", json={"url": JOB})
        client().job("team/app")
    assert seen == [2]
