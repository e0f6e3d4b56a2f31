"""50 Jenkins builds triggered and followed at once, through the fake Mattermost and the
fake Jenkins: quick-command latency while they run, and the poll cost per followed build.

Starts the fake Jenkins (50 jobs ``bench/job-NN``, each building for ``--duration``
seconds), the fake Mattermost and a real bot process allowed to build them, triggers the 50
builds from chat at once, measures ``!echo`` round trips from 10 senders while the builds
run, counts the requests the bot sends to Jenkins while every build is running (requests per
followed build per minute), and waits until every build's message says it succeeded.

    python bench/jenkins.py [--builds 50] [--duration 40] [--commands 300]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml
from common import HEADER, live_bot, run_senders

from bot.testing.fake_jenkins import FakeJenkins


def write_files(tmp: Path, jenkins: FakeJenkins) -> tuple[Path, Path]:
    inventory, policy = tmp / "inventory.yaml", tmp / "policy.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "jenkins": {
                    "servers": {"ci": {"url": jenkins.url, "user": "opsbot", "token_env": "CI"}}
                },
                "environments": {
                    "staging": {
                        "hosts": {"web1": {"address": "127.0.0.1"}},
                        "jenkins": {"server": "ci", "jobs": ["bench"]},
                    }
                },
            }
        )
    )
    policy.write_text(
        yaml.safe_dump(
            {"roles": {"builder": {"members": ["@alice"], "grants": [{"action": "jenkins.*"}]}}}
        )
    )
    return inventory, policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=50)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--commands", type=int, default=300)
    args = parser.parse_args()
    jenkins = FakeJenkins()
    jenkins.start()
    for n in range(args.builds):
        jenkins.add_job(
            f"bench/job-{n:02d}",
            pipeline=n % 2 == 0,
            stages=["build", "test", "ship"],
            duration=args.duration,
            queue_seconds=0.5,
            console=[f"line {i}" for i in range(100)],
        )
    with tempfile.TemporaryDirectory() as tmp:
        inventory, policy = write_files(Path(tmp), jenkins)
        env = {
            "OPSROOM_INVENTORY": str(inventory),
            "OPSROOM_POLICY": str(policy),
            "CI": jenkins.token,
            "OPSROOM_JOB_WORKERS": str(args.builds + 14),
        }
        with live_bot(**env) as live:
            for i in range(20):
                live.command(f"!echo warm-{i}", f"warm-{i}")
            idle = run_senders(
                args.commands,
                10,
                lambda s, i: live.command(f"!echo idle-{s}-{i}", f"idle-{s}-{i}", s),
                "quick command, no builds",
                think=0.05,
            )
            started = time.monotonic()
            for n in range(args.builds):
                live.mm.post_as(
                    live.world.alice, live.world.ops, f"!jenkins build bench/job-{n:02d}"
                )
            deadline = started + 60
            while len(jenkins.builds) < args.builds:  # every build started in Jenkins
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(jenkins.builds)} builds started")
                time.sleep(0.1)
            all_started = time.monotonic() - started
            window_start, before = time.monotonic(), len(jenkins.requests)
            busy = run_senders(
                args.commands,
                10,
                lambda s, i: live.command(f"!echo busy-{s}-{i}", f"busy-{s}-{i}", s),
                f"quick command, {args.builds} builds followed",
                think=0.05,
            )
            end_of_builds = started + all_started + args.duration - 2
            time.sleep(max(0.0, end_of_builds - time.monotonic()))
            window = time.monotonic() - window_start
            polls = len(jenkins.requests) - before
            deadline = time.monotonic() + 60
            while True:
                done = [
                    p
                    for p in live.mm.posts_by(live.world.bot)
                    if p["channel_id"] == live.world.ops["id"]
                    and "jenkins build" in (m := live.mm.get_post(p["id"])["message"])
                    and "succeeded" in m
                ]
                if len(done) == args.builds or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            total = time.monotonic() - started
    jenkins.stop()
    print(HEADER)
    for result in (idle, busy):
        print(result.row())
    print()
    per_minute = polls / args.builds / (window / 60)
    rows = [
        ("builds triggered and followed at once", f"{args.builds}"),
        ("builds of", f"{args.duration:.0f}s each"),
        ("all started in Jenkins after", f"{all_started:.1f}s"),
        ("all reported succeeded in chat after", f"{total:.1f}s ({len(done)}/{args.builds})"),
        ("requests to Jenkins while running", f"{polls} in {window:.1f}s"),
        ("requests per followed build per minute", f"{per_minute:.1f}"),
    ]
    for name, value in rows:
        print(f"{name:<44} {value}")


if __name__ == "__main__":
    main()
