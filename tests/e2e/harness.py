"""Run the real ``opsroom`` process against the fake Mattermost server."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPSROOM = Path(sys.executable).with_name("opsroom")
TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"
_sentinels = itertools.count(1)


@dataclass
class Seed:
    """The Mattermost world the end-to-end tests talk in."""

    bot: dict
    alice: dict
    bob: dict
    admin: dict
    alpha: dict
    beta: dict
    ops: dict  # alpha/ops, public
    secret: dict  # alpha/secret, private
    infra: dict  # beta/infra
    token: str
    extra: dict = field(default_factory=dict)


def wait_until(condition, timeout: float = 30.0, message: str = "condition"):
    """Poll ``condition`` until it returns something true (returned), or fail after
    ``timeout`` seconds naming ``message``. For what must happen; what must not happen is
    proven with :func:`barrier`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message}")


def seed(mm) -> Seed:
    bot = mm.add_user("opsbot", is_bot=True)
    alice, bob, admin = (mm.add_user(n) for n in ("alice", "bob", "admin"))
    alpha, beta = mm.add_team("alpha"), mm.add_team("beta")
    for team in (alpha, beta):
        for user in (bot, alice, bob, admin):
            mm.add_to_team(team, user)
    ops = mm.add_channel(alpha, "ops")
    secret = mm.add_channel(alpha, "secret", type="P")
    infra = mm.add_channel(beta, "infra")
    for channel in (ops, secret, infra):
        for user in (bot, alice, bob, admin):
            mm.add_member(channel, user)
    return Seed(bot, alice, bob, admin, alpha, beta, ops, secret, infra, mm.create_token(bot))


def barrier(mm, world: Seed, channel: dict | None = None, timeout: float = 15.0) -> str:
    """Post a sentinel command in ``channel`` (default ~ops) and wait for its answer.

    A test that something did *not* happen checks after this instead of sleeping: the bot's
    dispatcher takes events one at a time in order, so every post made before the sentinel has
    been dispatched (dropped, or handed to a command) before it; and posts to one channel are
    delivered in the order they were sent, so a reply or a retried post already queued for
    that channel is delivered before the sentinel's answer. Returns the sentinel's text, which
    the bot posted as its answer (leave it out of what the test compares).
    """
    text = f"sentinel-{next(_sentinels)}"
    channel = channel or world.ops
    mm.post_as(world.alice, channel, f"!echo {text}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(
            p["message"] == text and p["channel_id"] == channel["id"]
            for p in mm.posts_by(world.bot)
        ):
            return text
        time.sleep(0.05)
    raise AssertionError(f"the sentinel {text!r} was never answered")


class BotProcess:
    """One ``opsroom run`` process; logs go to ``<data_dir>/bot.log``."""

    def __init__(self, url: str, token: str, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir / "bot.log"
        self.env = {
            **{
                k: v for k, v in os.environ.items() if not k.startswith(("MATTERMOST_", "OPSROOM_"))
            },
            "MATTERMOST_URL": url,
            "MATTERMOST_TOKEN": token,
            "OPSROOM_DATA_DIR": str(data_dir),
            "OPSROOM_ADMINS": "admin",
            "OPSROOM_WS_PING_INTERVAL": "2s",
            "OPSROOM_RECONNECT_MAX_DELAY": "2s",
            "OPSROOM_EXTRA_PLUGIN_DIRS": str(TEST_PLUGINS),
            "OPSROOM_HTTP_LISTEN": "127.0.0.1:0",  # a free port: bots may run side by side
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> BotProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log_offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [str(OPSROOM), "run", "--config", str(ROOT / "config.py")],
            cwd=self.data_dir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_for_log("caught up after start")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 20.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.log_path.read_text(errors="replace")[self._log_offset :]
            if current.count(text) >= count:
                return
            if self.proc and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"bot log never showed {text!r} (x{count}):\n{self.log()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
            raise AssertionError(
                f"bot did not stop within {timeout}s:\n{self.log()[-4000:]}"
            ) from None
        finally:
            self._log.close()
        return code

    def wait_exit(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"bot still running after {timeout}s:\n{self.log()[-4000:]}"
            ) from None
