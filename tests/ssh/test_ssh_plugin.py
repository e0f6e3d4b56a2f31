"""The SSH plugin end to end: fake Mattermost, the real bot process, real sshd hosts."""

from __future__ import annotations

import re
import time

import pytest
import yaml

from bot.testing.fake_mattermost.fixtures import fake_mm  # noqa: F401
from bot.testing.sshd import RemoteProcess
from tests.e2e.harness import BotProcess, seed

RELEASE_TOOL = """#!/bin/sh
echo "$@" >> "{dir}/release.log"
[ -e "{dir}/release.slow" ] && sh -c 'echo $$ > "{dir}/release.pid"; exec sleep 30'
[ -e "{dir}/release.fail" ] && {{ echo "release failed on purpose" >&2; exit 1; }}
exit 0
"""


@pytest.fixture
def hosts(sshd_pool):
    hosts = sshd_pool.hosts(4)
    for host in hosts:
        host.reset()
        host.set_unit("api", active=True)  # the deploy's health check asks systemctl
        for name in ("release.log", "release.fail", "release.slow", "release.pid"):
            (host.dir / name).unlink(missing_ok=True)
        tool = host.bin_dir / "app-release"
        tool.write_text(RELEASE_TOOL.format(dir=host.dir))
        tool.chmod(0o755)
    return hosts


@pytest.fixture
def inventory(tmp_path, sshd_pool, hosts):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd_pool.known_hosts_text(hosts))
    document = {
        "defaults": {
            "user": hosts[0].user,
            "key_file": str(sshd_pool.client_key.path),
            "known_hosts": str(known_hosts),
            "use_agent": False,
            "sudo": False,
        },
        "environments": {
            "staging": {
                "hosts": {
                    f"web{n}": {
                        "address": "127.0.0.1",
                        "port": host.port,
                        "services": ["nginx", "api"],
                        "groups": ["web"],
                    }
                    for n, host in enumerate(hosts)
                }
            }
        },
        "recipes": {
            "greet": {
                "params": {"name": {"pattern": "^[a-z]{1,16}$"}},
                "steps": [["printf", "hello %s", "{name}"]],
            },
            "count": {
                "params": {"n": {"pattern": "^[0-9]{1,5}$"}},
                "steps": [["seq", "1", "{n}"]],
            },
        },
        "deploys": {
            "api": {
                "hosts": {"staging": "web"},
                "batch_size": 1,
                # The inventory's own pattern decides what a version may look like.
                "params": {"version": {"pattern": r"^[0-9]+\.[0-9]+\.[0-9]+(\+[a-z0-9.]+)?$"}},
                "steps": [["app-release", "activate", "{version}"]],
                "health_check": {"command": ["systemctl", "is-active", "api"], "attempts": 1},
                "rollback": [["app-release", "rollback"]],
            }
        },
    }
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def opsbot(fake_mm, tmp_path, inventory):  # noqa: F811
    world = seed(fake_mm)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "roles": {
                    "ops": {
                        "members": ["@alice"],
                        "grants": [
                            {"action": "service.*"},
                            {"action": "deploy"},
                            {"action": "run"},
                        ],
                    }
                }
            }
        )
    )
    bot = BotProcess(
        fake_mm.url,
        world.token,
        tmp_path / "data",
        OPSROOM_POLICY=str(policy),
        OPSROOM_INVENTORY=str(inventory),
    )
    bot.start()
    yield world
    bot.stop()
    assert fake_mm.contract_violations == []


def final_message(mm, world, timeout=30):
    """The newest bot message in ~ops that shows a final outcome (results are edited into
    the acknowledgement, which other posts, like an attached file, may follow)."""
    deadline = time.monotonic() + timeout
    seen = len(getattr(world, "_finals", ()))
    while time.monotonic() < deadline:
        posts = [p for p in mm.posts_by(world.bot) if p["channel_id"] == world.ops["id"]]
        finals = [
            text
            for text in (mm.get_post(p["id"])["message"] for p in posts)
            if text.startswith(("✅", "❌", "🛑", "⌛", "⛔"))  # a final outcome
        ]
        if len(finals) > seen:
            world._finals = finals
            return finals[-1]
        time.sleep(0.05)
    raise AssertionError("no final message")


def test_restart_a_service_on_a_group(fake_mm, opsbot, hosts):  # noqa: F811
    fake_mm.post_as(opsbot.alice, opsbot.ops, "!service restart nginx on web")
    text = final_message(fake_mm, opsbot)
    assert "succeeded" in text and "restart nginx: 4/4 host(s) ok" in text
    assert len(re.findall(r"^\| web\d +\| ok +\| 0 ", text, re.M)) == 4  # one row per host
    assert all(["restart", "nginx"] in host.systemctl_calls() for host in hosts)


def test_hostile_values_are_refused_before_any_connection(fake_mm, opsbot, hosts):  # noqa: F811
    logins = [host.accepted_logins() for host in hosts]
    fake_mm.post_as(opsbot.alice, opsbot.ops, "!service restart 'nginx; rm -rf /' on web")
    text = final_message(fake_mm, opsbot)
    assert "⛔" in text and "nothing was run" in text
    fake_mm.post_as(opsbot.alice, opsbot.ops, "!run greet on web name=$(id)")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(fake_mm.posts_by(opsbot.bot)) < 2:
        time.sleep(0.05)
    assert "invalid name" in fake_mm.posts_by(opsbot.bot)[1]["message"]
    assert [host.accepted_logins() for host in hosts] == logins


def test_rolling_deploy_stops_at_the_failing_batch_and_rolls_it_back(fake_mm, opsbot, hosts):  # noqa: F811
    (hosts[1].dir / "release.fail").touch()
    fake_mm.post_as(opsbot.alice, opsbot.ops, "!deploy api 1.4.2 to staging")
    text = final_message(fake_mm, opsbot, timeout=60)
    assert "failed" in text and "stopped in batch 2/4" in text
    assert (hosts[0].dir / "release.log").read_text().split("\n")[0] == "activate 1.4.2"
    assert (hosts[1].dir / "release.log").read_text().splitlines() == [
        "activate 1.4.2",
        "rollback",
    ]
    assert not (hosts[2].dir / "release.log").exists()  # later batches untouched
    assert not (hosts[3].dir / "release.log").exists()


def test_rolling_deploy_success(fake_mm, opsbot, hosts):  # noqa: F811
    fake_mm.post_as(opsbot.alice, opsbot.ops, "!deploy api 2.0.0 to staging")
    text = final_message(fake_mm, opsbot, timeout=60)
    assert "succeeded" in text and "4/4 batches" in text
    assert all((h.dir / "release.log").read_text() == "activate 2.0.0\n" for h in hosts)


def test_a_version_the_deploys_pattern_allows_can_be_deployed_from_chat(fake_mm, opsbot, hosts):  # noqa: F811
    fake_mm.post_as(opsbot.alice, opsbot.ops, "!deploy api 1.2.3+build to staging")
    text = final_message(fake_mm, opsbot, timeout=60)
    assert "succeeded" in text and "deployed api 1.2.3+build to staging: 4/4 batches" in text
    assert all((h.dir / "release.log").read_text() == "activate 1.2.3+build\n" for h in hosts)


def test_status_on_one_host_and_long_output_as_a_file(fake_mm, opsbot, hosts):  # noqa: F811
    hosts[0].set_unit("nginx", active=False)
    fake_mm.post_as(opsbot.alice, opsbot.ops, "!service status nginx on web0")
    text = final_message(fake_mm, opsbot)
    assert "succeeded" in text and re.search(r"^\| web0 ", text, re.M)
    assert not re.search(r"^\| web1 ", text, re.M)
    assert "inactive" in text  # a stopped unit is reported, not an error
    assert ["status", "nginx"] in hosts[0].systemctl_calls()
    fake_mm.post_as(opsbot.alice, opsbot.ops, "!run count on web0 n=3000")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not fake_mm.uploaded_files:
        time.sleep(0.05)
    content = fake_mm.uploaded_files[-1]["content"].decode()
    assert "==> web0 (exit 0)" in content and "\n2999\n3000" in content
    text = final_message(fake_mm, opsbot)
    assert "full output attached as count.txt" in text


def test_cancel_mid_deploy_kills_the_remote_step(fake_mm, opsbot, hosts):  # noqa: F811
    (hosts[1].dir / "release.slow").touch()
    fake_mm.post_as(opsbot.alice, opsbot.ops, "!deploy api 3.0.0 to staging")
    remote_step = RemoteProcess.from_pid_file(hosts[1].dir / "release.pid", timeout=30)
    (ack,) = [p for p in fake_mm.posts_by(opsbot.bot) if p["channel_id"] == opsbot.ops["id"]]
    job_id = re.search(r"J-[0-9A-F]{5}", fake_mm.get_post(ack["id"])["message"]).group(0)
    fake_mm.post_as(opsbot.alice, opsbot.ops, f"!cancel {job_id}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = fake_mm.get_post(ack["id"])["message"]
        if text.startswith("🛑"):
            break
        time.sleep(0.05)
    assert text.startswith("🛑") and "cancelled by @alice" in text
    assert not (hosts[2].dir / "release.log").exists()  # later batches never started
    assert remote_step.gone_within(10)  # the remote step was killed, not left running
