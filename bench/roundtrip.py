"""Command round trip through the real bot: websocket event in -> REST post out.

Starts the fake Mattermost server (tests/fake_mattermost) and a real ``opsroom run`` process,
then sends ``!echo`` commands and measures, for each, the time from the moment the server
emits the ``posted`` event to the moment it receives the bot's reply over REST. The floor is
a bare websocket echo on loopback, measured the same way.

Every sender waits for its answer before sending again. Three loads:

* sequential: one sender, back to back;
* N concurrent senders pausing a random think time between commands (exponential, mean
  ``--think`` seconds), like people in busy channels: the latency an operator sees;
* N concurrent senders back to back: saturation throughput (latency is then N / throughput).

    python bench/roundtrip.py [--commands 1000] [--concurrency 50] [--think 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.asyncio.server import serve
from websockets.sync.client import connect

from tests.e2e.harness import BotProcess, seed
from tests.fake_mattermost import FakeMattermost


class Result:
    def __init__(self, name: str, latencies: list[float], elapsed: float) -> None:
        self.name, self.latencies, self.elapsed = name, sorted(latencies), elapsed

    def row(self) -> str:
        n = len(self.latencies)
        p50 = statistics.median(self.latencies) * 1000
        p99 = self.latencies[min(n - 1, int(n * 0.99))] * 1000
        worst = self.latencies[-1] * 1000
        rate = n / self.elapsed
        return f"{self.name:<40} {n:>6} {rate:>8.0f} {p50:>8.2f} {p99:>8.2f} {worst:>8.2f}"


def run_senders(
    total: int,
    senders: int,
    one: Callable[[int, int], float],
    name: str,
    think: float = 0.0,
) -> Result:
    """``one(sender, i)`` sends one request, waits for its answer and returns the latency."""
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


def scenarios(
    total: int, concurrency: int, think: float, one: Callable[[int, int], float], label: str
) -> list[Result]:
    paced = min(total, concurrency * 20)
    return [
        run_senders(total // 2, 1, one, f"{label}, sequential"),
        run_senders(
            paced, concurrency, one, f"{label}, {concurrency} senders, {think:g}s think", think
        ),
        run_senders(total, concurrency, one, f"{label}, {concurrency} senders, no pause"),
    ]


def bench_bot(total: int, concurrency: int, think: float) -> list[Result]:
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
    channels = [world.ops, world.secret, world.infra]
    users = [world.alice, world.bob, world.admin]
    with tempfile.TemporaryDirectory() as tmp:
        bot = BotProcess(mm.url, world.token, Path(tmp))
        bot.start()

        def one(sender: int, i: int) -> float:
            text = f"bench-{sender}-{i}"
            event = threading.Event()
            with lock:
                waiters[text] = event
            started = time.perf_counter()
            mm.post_as(users[sender % 3], channels[sender % 3], f"!echo {text}")
            if not event.wait(30):
                raise RuntimeError(f"no reply to {text}")
            return arrivals[text] - started

        for i in range(50):  # warm-up: imports, connections, caches
            one(999, i)
        sent = iter(range(10**9))
        results = scenarios(total, concurrency, think, lambda s, i: one(s, next(sent)), "bot")
        bot.stop()
    mm.stop()
    return results


def bench_floor(total: int, concurrency: int, think: float) -> list[Result]:
    ready = threading.Event()
    holder: dict = {}

    async def echo(ws) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            holder["port"] = server.sockets[0].getsockname()[1]
            holder["stop"] = asyncio.get_running_loop().create_future()
            ready.set()
            await holder["stop"]

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait()
    url = f"ws://127.0.0.1:{holder['port']}"
    stack = contextlib.ExitStack()
    clients = {n: stack.enter_context(connect(url)) for n in range(concurrency)}

    def one(sender: int, i: int) -> float:
        ws = clients[sender]
        started = time.perf_counter()
        ws.send(f"{sender}-{i}")
        ws.recv()
        return time.perf_counter() - started

    with stack:
        results = scenarios(total, concurrency, think, one, "ws echo floor")
    loop.call_soon_threadsafe(holder["stop"].set_result, None)
    thread.join(5)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--think", type=float, default=1.0, help="mean pause between commands")
    args = parser.parse_args()
    results = bench_bot(args.commands, args.concurrency, args.think) + bench_floor(
        args.commands, args.concurrency, args.think
    )
    print(f"{'scenario':<40} {'n':>6} {'per sec':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for result in results:
        print(result.row())


if __name__ == "__main__":
    main()
