"""Shared pieces of the benchmarks: latency tables, a real bot on the fake server, the
policy that lets it run the test jobs, and the bot process's memory and descriptors."""

from __future__ import annotations

import contextlib
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.testing.fake_mattermost import FakeMattermost
from tests.e2e.harness import BotProcess, Seed, seed

JOB_DONE_MARKERS = ("succeeded", "failed", "cancelled", "timed out")

HEADER = f"{'scenario':<44} {'n':>6} {'per sec':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"


class Result:
    def __init__(self, name: str, latencies: list[float], elapsed: float) -> None:
        self.name, self.latencies, self.elapsed = name, sorted(latencies), elapsed

    def row(self) -> str:
        n = len(self.latencies)
        p50 = statistics.median(self.latencies) * 1000
        p99 = self.latencies[min(n - 1, int(n * 0.99))] * 1000
        worst = self.latencies[-1] * 1000
        rate = n / self.elapsed
        return f"{self.name:<44} {n:>6} {rate:>8.0f} {p50:>8.2f} {p99:>8.2f} {worst:>8.2f}"


def run_senders(
    total: int,
    senders: int,
    one: Callable[[int, int], float],
    name: str,
    think: float = 0.0,
) -> Result:
    """``one(sender, i)`` sends one request, waits for its answer and returns the latency;
    each sender pauses a random think time (exponential, mean ``think`` s) between requests."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_sender = total // senders

    def sender(s: int) -> None:
        rng = random.Random(s)
        mine = []
        for i in range(per_sender):
            if think:
                time.sleep(rng.expovariate(1 / think))
            mine.append(one(s, i))
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=sender, args=(s,)) for s in range(senders)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Result(name, latencies, time.perf_counter() - started)


def write_hold_policy(path: Path) -> Path:
    """A policy that lets @alice run the end-to-end tests' ``hold`` action anywhere."""
    path.write_text(
        yaml.safe_dump({"roles": {"ops": {"members": ["@alice"], "grants": [{"action": "hold"}]}}})
    )
    return path


@dataclass
class Usage:
    """What a process holds: resident memory (MiB), open file descriptors, threads."""

    rss_mib: float
    fds: int
    threads: int


def process_usage(pid: int) -> Usage:
    """Read /proc/<pid>/status (VmRSS, Threads) and count /proc/<pid>/fd."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return Usage(
        rss_mib=int(status["VmRSS"].split()[0]) / 1024,
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(status["Threads"]),
    )


@dataclass
class LiveBot:
    """A real bot process connected to a fake Mattermost, with reply timing."""

    mm: FakeMattermost
    world: Seed
    bot: BotProcess
    _arrivals: dict[str, float]
    _waiters: dict[str, threading.Event]
    _prefixed: dict[str, tuple[threading.Event, list[dict]]]
    _lock: threading.Lock

    def command(self, text: str, reply: str, sender: int = 0, timeout: float = 30) -> float:
        """Send ``text`` as a user, wait for a bot post reading ``reply``; the latency."""
        event = threading.Event()
        with self._lock:
            self._waiters[reply] = event
        channels = [self.world.ops, self.world.secret, self.world.infra]
        users = [self.world.alice, self.world.bob, self.world.admin]
        started = time.perf_counter()
        self.mm.post_as(users[sender % 3], channels[sender % 3], text)
        if not event.wait(timeout):
            raise RuntimeError(f"no reply {reply!r} to {text!r}")
        with self._lock:
            del self._waiters[reply]
            return self._arrivals.pop(reply) - started

    def job(self, text: str, ack_prefix: str, timeout: float = 60) -> tuple[float, str]:
        """Send ``text`` as @alice, wait for the bot's acknowledgement (a post starting
        with ``ack_prefix``) to be edited into the job's final line; (latency, that line).
        The prefix must be unique among the commands in flight."""
        event: threading.Event = threading.Event()
        found: list[dict] = []
        with self._lock:
            self._prefixed[ack_prefix] = (event, found)
        started = time.perf_counter()
        self.mm.post_as(self.world.alice, self.world.ops, text)
        if not event.wait(timeout):
            raise RuntimeError(f"no acknowledgement {ack_prefix!r} of {text!r}")
        deadline = time.monotonic() + timeout
        while True:
            message = self.mm.get_post(found[0]["id"])["message"]
            if any(marker in message for marker in JOB_DONE_MARKERS):
                return time.perf_counter() - started, message
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {text!r} did not finish: {message!r}")
            time.sleep(0.01)


@contextlib.contextmanager
def live_bot(**env: str) -> Iterator[LiveBot]:
    arrivals: dict[str, float] = {}
    waiters: dict[str, threading.Event] = {}
    prefixed: dict[str, tuple[threading.Event, list[dict]]] = {}
    lock = threading.Lock()

    def received(post: dict) -> None:
        now = time.perf_counter()
        message = post["message"]
        with lock:
            event = waiters.get(message)
            if event is not None:
                arrivals[message] = now
            else:
                prefix = next((p for p in prefixed if message.startswith(p)), None)
                if prefix is not None:
                    event, found = prefixed.pop(prefix)
                    found.append(post)
        if event:
            event.set()

    mm = FakeMattermost(strict=False, post_received=received)
    mm.start()
    world = seed(mm)
    with tempfile.TemporaryDirectory() as tmp:
        bot = BotProcess(mm.url, world.token, Path(tmp), **env)
        bot.start()
        try:
            yield LiveBot(mm, world, bot, arrivals, waiters, prefixed, lock)
        finally:
            bot.stop()
            mm.stop()
