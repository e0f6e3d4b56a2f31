"""Shared pieces of the benchmarks: latency tables and a real bot on the fake server."""

from __future__ import annotations

import contextlib
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.testing.fake_mattermost import FakeMattermost
from tests.e2e.harness import BotProcess, Seed, seed

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


@dataclass
class LiveBot:
    """A real bot process connected to a fake Mattermost, with reply timing."""

    mm: FakeMattermost
    world: Seed
    bot: BotProcess
    _arrivals: dict[str, float]
    _waiters: dict[str, threading.Event]
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
        return self._arrivals[reply] - started


@contextlib.contextmanager
def live_bot(**env: str) -> Iterator[LiveBot]:
    arrivals: dict[str, float] = {}
    waiters: dict[str, threading.Event] = {}
    lock = threading.Lock()

    def received(post: dict) -> None:
        now = time.perf_counter()
        with lock:
            arrivals[post["message"]] = now
            event = waiters.get(post["message"])
        if event:
            event.set()

    mm = FakeMattermost(strict=False, post_received=received)
    mm.start()
    world = seed(mm)
    with tempfile.TemporaryDirectory() as tmp:
        bot = BotProcess(mm.url, world.token, Path(tmp), **env)
        bot.start()
        try:
            yield LiveBot(mm, world, bot, arrivals, waiters, lock)
        finally:
            bot.stop()
            mm.stop()
