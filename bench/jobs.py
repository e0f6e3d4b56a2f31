"""Quick-command latency while 200 long jobs run, through the fake Mattermost server.

Starts the fake server and a real bot process with a policy that lets the test user run
the end-to-end tests' ``hold`` action, starts 200 jobs that each hold a different target
for ten minutes, then measures ``!echo`` round trips (websocket event in, REST reply out)
from 10 senders while they run. Then the audit store's append rate with its durability
guarantee (bench/audit.py measures that in detail).

    python bench/jobs.py [--jobs 200] [--commands 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import HEADER, Result, live_bot, run_senders, write_hold_policy

from bot.runtime.audit import AuditEvent, AuditStore

TEST_PLUGINS = Path(__file__).resolve().parents[1] / "tests" / "e2e" / "plugins"


def bench_quick_commands(jobs: int, commands: int, policy: Path) -> list[Result]:
    with live_bot(OPSROOM_POLICY=str(policy), OPSROOM_EXTRA_PLUGIN_DIRS=str(TEST_PLUGINS)) as live:
        for i in range(30):
            live.command(f"!echo warm-{i}", f"warm-{i}")
        idle = run_senders(
            commands,
            10,
            lambda s, i: live.command(f"!echo idle-{s}-{i}", f"idle-{s}-{i}", s),
            "quick command, no jobs running",
            think=0.05,
        )
        for n in range(jobs):
            live.mm.post_as(live.world.alice, live.world.infra, f"!hold env-{n} seconds=600")
        deadline = time.monotonic() + 120
        while len(live.mm.posts_by(live.world.bot)) < 30 + commands + jobs:
            if time.monotonic() > deadline:
                raise RuntimeError("the jobs were not all acknowledged")
            time.sleep(0.1)
        busy = run_senders(
            commands,
            10,
            lambda s, i: live.command(f"!echo busy-{s}-{i}", f"busy-{s}-{i}", s),
            f"quick command, {jobs} jobs running",
            think=0.05,
        )
        return [idle, busy]


def bench_audit(records: int) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        store = AuditStore(Path(tmp) / "audit.sqlite3")
        latencies = []
        started = time.perf_counter()
        for n in range(records):
            t0 = time.perf_counter()
            store.append(AuditEvent.REQUESTED, action="bench", correlation_id=f"C-{n}")
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        store.close()
    return Result("audit append (fsync'ed), sequential", latencies, elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--commands", type=int, default=500)
    parser.add_argument("--records", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        policy = write_hold_policy(Path(tmp) / "policy.yaml")
        results = bench_quick_commands(args.jobs, args.commands, policy)
    results.append(bench_audit(args.records))
    print(HEADER)
    for result in results:
        print(result.row())


if __name__ == "__main__":
    main()
