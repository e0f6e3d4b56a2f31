"""Soak: does a long-running bot keep its memory and file descriptors flat?

Starts the fake Mattermost server and a real ``opsroom run`` process (as bench/roundtrip.py
and bench/jobs.py do), then sends ``--commands`` ``!echo`` commands from ``--senders``
concurrent senders and, alongside, ``--jobs`` quick jobs (the end-to-end tests' ``hold``
action with ``seconds=0``: audit records, a job, a progress edit and a result edit each),
``--job-senders`` at a time. Every ``--every`` commands it waits for the jobs of that round
to finish, then samples the bot process's resident memory (VmRSS), open file descriptors
and threads from /proc, and prints a row.

Verdict, over the samples split into quarters (the first quarter is warm-up): **flat** when
the last quarter's highest RSS is within +5 % and +8 MiB of the second quarter's highest,
and its highest descriptor count within ±2 of the second quarter's. The bot remembers its
last 1000 finished jobs (``!job <id>``), so memory rises until that many have run: keep at
least 1000 jobs in the first quarter.

``--trace-memory`` runs the bot with bench/memory_probe on its path: tracemalloc from the
end of the warm-up (slower), then a report of which source lines allocated the memory that
grew between the middle and the end of the run.

    python bench/soak.py [--commands 50000] [--jobs 5000] [--every 2500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from itertools import count
from pathlib import Path

from common import LiveBot, Usage, live_bot, process_usage, write_hold_policy

PROBE = Path(__file__).resolve().parent / "memory_probe"
RSS_TOLERANCE = 0.05  # of the second quarter's RSS
RSS_TOLERANCE_MIB = 8.0
FDS_TOLERANCE = 2


@dataclass
class Sample:
    commands: int
    jobs: int
    elapsed: float
    usage: Usage


def run_round(
    live: LiveBot,
    commands: int,
    jobs: int,
    senders: int,
    job_senders: int,
    numbers: count,
    failures: list[str],
) -> None:
    """Send ``commands`` echo commands and ``jobs`` hold jobs concurrently; return when all
    are answered and finished."""
    lock = threading.Lock()
    left = {"commands": commands, "jobs": jobs}

    def take(kind: str) -> int | None:
        with lock:
            if left[kind] == 0:
                return None
            left[kind] -= 1
            return next(numbers)

    def echo(sender: int) -> None:
        while (n := take("commands")) is not None:
            live.command(f"!echo soak-{n}", f"soak-{n}", sender)

    def hold(slot: int) -> None:
        while take("jobs") is not None:
            _, line = live.job(f"!hold env-{slot} seconds=0", f"⏳ `!hold env=env-{slot} ")
            if "succeeded" not in line:
                failures.append(line)

    threads = [threading.Thread(target=echo, args=(s,)) for s in range(senders)]
    threads += [threading.Thread(target=hold, args=(s,)) for s in range(job_senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def verdict(samples: list[Sample]) -> tuple[bool, str]:
    quarter = len(samples) // 4
    if quarter < 1:
        return False, "too few samples for a verdict (need 4 at least; lower --every)"
    second = samples[quarter : 2 * quarter]
    last = samples[-quarter:]
    rss2 = max(s.usage.rss_mib for s in second)
    rss4 = max(s.usage.rss_mib for s in last)
    fds2 = max(s.usage.fds for s in second)
    fds4 = max(s.usage.fds for s in last)
    allowed = min(rss2 * RSS_TOLERANCE, RSS_TOLERANCE_MIB)
    rss_flat = rss4 - rss2 <= allowed
    fds_flat = abs(fds4 - fds2) <= FDS_TOLERANCE
    commands = last[-1].commands - second[-1].commands
    per_10k = (rss4 - rss2) / commands * 10_000 if commands else 0.0
    text = (
        f"RSS: second quarter max {rss2:.1f} MiB, last quarter max {rss4:.1f} MiB "
        f"({rss4 - rss2:+.1f} MiB, allowed +{allowed:.1f}; {per_10k:+.2f} MiB per 10k "
        f"commands) -> {'flat' if rss_flat else 'GROWING'}\n"
        f"fds: second quarter max {fds2}, last quarter max {fds4} (allowed ±{FDS_TOLERANCE}) "
        f"-> {'flat' if fds_flat else 'GROWING'}"
    )
    return rss_flat and fds_flat, text


def soak(args: argparse.Namespace) -> bool:
    rounds = max(1, args.commands // args.every)
    env = {}
    snapshots = Path(tempfile.mkdtemp(prefix="opsroom-soak-"))
    if args.trace_memory:
        env = {"PYTHONPATH": str(PROBE), "OPSROOM_SOAK_SNAPSHOTS": str(snapshots)}
    with tempfile.TemporaryDirectory() as tmp:
        policy = write_hold_policy(Path(tmp) / "policy.yaml")
        with live_bot(OPSROOM_POLICY=str(policy), **env) as live:
            assert live.bot.proc is not None
            pid = live.bot.proc.pid
            numbers = count()
            failures: list[str] = []
            run_round(live, 50, 5, args.senders, args.job_senders, numbers, failures)  # warm
            if args.trace_memory:
                signal_probe(snapshots, "start")
            print(
                f"bot pid {pid}; {rounds} rounds of {args.every} commands and "
                f"{args.jobs // rounds} jobs; {args.senders} + {args.job_senders} senders"
            )
            print(
                f"{'commands':>9} {'jobs':>6} {'elapsed s':>9} {'RSS MiB':>8} {'fds':>5} "
                f"{'threads':>7}"
            )
            samples: list[Sample] = []
            started = time.perf_counter()
            for r in range(1, rounds + 1):
                commands = args.commands * r // rounds - args.commands * (r - 1) // rounds
                jobs = args.jobs * r // rounds - args.jobs * (r - 1) // rounds
                run_round(live, commands, jobs, args.senders, args.job_senders, numbers, failures)
                done_commands = args.commands * r // rounds
                sample = Sample(
                    done_commands,
                    args.jobs * r // rounds,
                    time.perf_counter() - started,
                    process_usage(pid),
                )
                samples.append(sample)
                u = sample.usage
                print(
                    f"{sample.commands:>9} {sample.jobs:>6} {sample.elapsed:>9.0f} "
                    f"{u.rss_mib:>8.1f} {u.fds:>5} {u.threads:>7}",
                    flush=True,
                )
                if args.trace_memory and r in (rounds // 2, rounds):
                    signal_probe(snapshots, f"round-{r}")
            if failures:
                print(f"{len(failures)} jobs did not succeed, e.g. {failures[0]!r}")
            flat, text = verdict(samples)
            elapsed = samples[-1].elapsed
            print(
                f"{args.commands} commands and {args.jobs} jobs in {elapsed:.0f} s "
                f"({args.commands / elapsed:.0f} commands/s)"
            )
            print(text)
            print(f"verdict: {'FLAT after warm-up' if flat else 'NOT FLAT'}")
            if args.trace_memory:
                report_growth(snapshots / f"round-{rounds // 2}", snapshots / f"round-{rounds}")
    return flat and not failures


def signal_probe(folder: Path, name: str) -> None:
    """Ask the memory probe in the bot process to start tracing or take a snapshot."""
    (folder / f"{name}.request").touch()
    deadline = time.monotonic() + 120
    while not (folder / name).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the bot's memory probe did not answer")
        time.sleep(0.2)


def report_growth(before: Path, after: Path, top: int = 25) -> None:
    import tracemalloc

    old = tracemalloc.Snapshot.load(str(before))
    new = tracemalloc.Snapshot.load(str(after))
    noise = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = new.filter_traces(noise).compare_to(old.filter_traces(noise), "traceback")
    print(f"\nallocations that grew most between {before.name} and {after.name}:")
    for stat in diff[:top]:
        print(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks")
        for line in stat.traceback.format(limit=6, most_recent_first=True):
            print("    " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=50_000)
    parser.add_argument("--jobs", type=int, default=5_000)
    parser.add_argument("--every", type=int, default=2_500, help="sample every N commands")
    parser.add_argument("--senders", type=int, default=8, help="concurrent command senders")
    parser.add_argument("--job-senders", type=int, default=4, help="jobs in flight at once")
    parser.add_argument("--trace-memory", action="store_true", help="tracemalloc the bot")
    args = parser.parse_args()
    sys.exit(0 if soak(args) else 1)


if __name__ == "__main__":
    main()
