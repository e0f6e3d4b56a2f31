"""Command round trip through the real bot: websocket event in -> REST post out.

Starts the fake Mattermost server (bot/testing/fake_mattermost) and a real ``opsroom run`` process,
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
import threading
import time
from collections.abc import Callable

from common import HEADER, Result, live_bot, run_senders
from websockets.asyncio.server import serve
from websockets.sync.client import connect


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
    with live_bot() as live:
        for i in range(50):  # warm-up: imports, connections, caches
            live.command(f"!echo warm-{i}", f"warm-{i}")
        sent = iter(range(10**9))

        def one(sender: int, _i: int) -> float:
            n = next(sent)
            return live.command(f"!echo bench-{n}", f"bench-{n}", sender)

        return scenarios(total, concurrency, think, one, "bot")


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
    print(HEADER)
    for result in results:
        print(result.row())


if __name__ == "__main__":
    main()
