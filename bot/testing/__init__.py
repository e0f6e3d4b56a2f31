"""Pytest helpers for testing Opsroom plugins on Errbot's test backend.

Use them together with Errbot's own ``testbot`` fixture. Bring both fixtures in from a
``conftest.py`` next to the tests (``examples/plugins/cache_flush/`` is a complete example)::

    # conftest.py
    from errbot.backends.test import testbot  # noqa: F401  (Errbot's fixture)

    from bot.testing import opsroom  # noqa: F401  (autouse)

and configure the bot at the top of the test module, where Errbot's ``testbot`` and
:func:`opsroom` read it::

    extra_plugin_dir = plugin_dirs(Path(__file__).parent)  # your plugin + Opsroom's own
    extra_config = errbot_config()  # messages come from TEST_USER, @alice
    opsroom_policy = {"roles": {"flusher": {"members": [TEST_USER], "grants": [...]}}}

    def test_flush(testbot):
        testbot.push_message("!cache flush sessions in staging")
        assert "flushed" in pop_until(testbot, "succeeded")

What each piece does:

- :func:`opsroom` (an *autouse* fixture, once imported into a conftest or test module) gives
  every test a fresh ``OPSROOM_DATA_DIR`` under ``tmp_path`` (so a fresh audit log) and
  writes the module's ``opsroom_policy`` dict to a YAML file named by ``OPSROOM_POLICY``, *before*
  Errbot's ``testbot`` starts, so the bot's runtime is built from them. Other ``OPSROOM_*``
  and ``MATTERMOST_*`` variables of the developer's shell are cleared for the test.
- :func:`plugin_dirs` is the ``extra_plugin_dir`` to give Errbot: your plugin's folder plus
  Opsroom's own plugins (``!confirm``, ``!approve``, ``!jobs``, ``!audit ...``, ``!echo``).
- :func:`errbot_config` is the ``extra_config`` to give Errbot: Opsroom's set of core
  plugins, and the identity the test messages come from (:data:`TEST_USER`). Errbot's test
  backend sends every message as ``BOT_ADMINS[0]``, ``gbin@localhost`` by default, a name a
  policy cannot grant anything to; this makes it ``@alice``.
- :func:`push_as` sends a message as somebody else (:data:`OTHER_USER`, ``@bob``), for
  denials and two-person approvals.
- :func:`pop_until`, :func:`audit_records`, :func:`request_id`, :func:`job_id` and
  :func:`audit_id` read what the bot answered and what it recorded.
- :func:`fake_mm` (a fixture, import it into a conftest) is a started
  :class:`~bot.testing.fake_mattermost.FakeMattermost`: Mattermost's REST API v4 and
  websocket on a real loopback socket, its traffic checked against the vendor's OpenAPI
  documents, for testing what your code does against a Mattermost server
  (``bot/testing/fake_mattermost/README.md`` lists its control API).

On Errbot's test backend messages cannot be edited, so a job's progress updates are not
shown; the answers are "accepted as job J-..." (or a confirmation/approval request) and,
when the job ends, its final line.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
import yaml

from bot.backends.actions import close_runtime, runtime_for
from bot.errbot_config import CORE_PLUGINS
from bot.runtime.audit import AuditRecord
from bot.runtime.runtime import Runtime
from bot.settings import get_settings
from bot.shipped import plugins_dir
from bot.testing.fake_jenkins import FakeJenkins
from bot.testing.fake_mattermost import FakeMattermost
from bot.testing.fake_mattermost.fixtures import fake_mm

__all__ = [
    "OPSROOM_PLUGINS_DIR",
    "OTHER_USER",
    "TEST_USER",
    "FakeJenkins",
    "FakeMattermost",
    "OpsroomTestEnv",
    "audit_id",
    "audit_records",
    "configure_opsroom",
    "errbot_config",
    "fake_mm",
    "job_id",
    "opsroom",
    "plugin_dirs",
    "pop_until",
    "push_as",
    "request_id",
    "runtime",
    "stop_runtime",
]

#: Who the test messages come from when :func:`errbot_config` is used (Errbot's test
#: backend sends as ``BOT_ADMINS[0]``). Name it in a policy as a role member.
TEST_USER = "@alice"
#: A second person, for :func:`push_as`: someone without your roles, or an approver.
OTHER_USER = "@bob"

#: Opsroom's own plugins (Runtime: !confirm, !approve, !jobs, !audit...; Opsroom: !echo).
OPSROOM_PLUGINS_DIR = plugins_dir()

_SETTINGS_PREFIXES = ("OPSROOM_", "MATTERMOST_")
_SENDER_EXTRA = "opsroom_test_sender"
_IDS = {
    "request": re.compile(r"\bR-[A-Z0-9]{5}\b"),
    "job": re.compile(r"\bJ-[0-9A-F]{5}\b"),
    "audit": re.compile(r"\bA-\d{6,}\b"),
}


# --- Errbot's test bot configuration --------------------------------------------------------------
def plugin_dirs(*dirs: str | os.PathLike[str]) -> list[str]:
    """``extra_plugin_dir`` for Errbot's ``testbot``: ``dirs`` plus Opsroom's plugins.

    Errbot loads every plugin (a ``.plug`` file and its module) found under these folders,
    as ``BOT_EXTRA_PLUGIN_DIR`` does in production (``OPSROOM_EXTRA_PLUGIN_DIRS``).
    """
    return [*(str(Path(d).resolve()) for d in dirs), str(OPSROOM_PLUGINS_DIR)]


def errbot_config(user: str = TEST_USER, **overrides: Any) -> dict[str, Any]:
    """``extra_config`` for Errbot's ``testbot``: Opsroom's core plugins, and ``user`` as
    the sender of the test messages (it must start with ``@`` for a policy to name it).

    ``overrides`` are more Errbot settings, e.g. ``BOT_PREFIX="."``.
    """
    if not user.startswith("@"):
        raise ValueError(f"the test user must look like @name, not {user!r}")
    # Errbot's test backend talks as BOT_ADMINS[0]; its TestBot.start() waits for the
    # answer to "!echo ready", which Opsroom's own plugin gives (Errbot's Utils is not loaded).
    return {"CORE_PLUGINS": CORE_PLUGINS, "BOT_ADMINS": (user,), **overrides}


# --- settings and policy --------------------------------------------------------------------------
@dataclass(frozen=True)
class OpsroomTestEnv:
    """Where one test's Opsroom keeps its state."""

    data_dir: Path  # OPSROOM_DATA_DIR: the audit log and anything your plugin writes
    policy_file: Path | None  # OPSROOM_POLICY, None when no policy was given (default deny)


def configure_opsroom(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    policy: Mapping[str, Any] | None = None,
    settings: Mapping[str, str] | None = None,
) -> OpsroomTestEnv:
    """Point Opsroom's settings at ``tmp_path`` and write ``policy`` there.

    Sets ``OPSROOM_DATA_DIR`` to ``tmp_path/data`` and, when ``policy`` is given, writes it
    as YAML to ``tmp_path/policy.yaml`` and sets ``OPSROOM_POLICY``; ``settings`` are more
    environment variables (``{"OPSROOM_JOB_WORKERS": "2"}``). Other ``OPSROOM_*`` and
    ``MATTERMOST_*`` variables are removed and ``./opsroom.env`` is ignored, so the test sees
    only these. ``monkeypatch`` undoes it all after the test.

    Call it before the bot starts: the runtime reads the settings once, when it is built
    (:func:`bot.backends.actions.runtime_for`). The :func:`opsroom` fixture calls it for you.
    """
    for name in list(os.environ):
        if name.upper().startswith(_SETTINGS_PREFIXES):
            monkeypatch.delenv(name)
    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    env_file = tmp_path / "opsroom.env"
    env_file.write_text("# settings of this test come from the environment\n", encoding="utf-8")
    monkeypatch.setenv("OPSROOM_ENV_FILE", str(env_file))
    monkeypatch.setenv("OPSROOM_DATA_DIR", str(data_dir))
    monkeypatch.setenv("OPSROOM_HTTP_LISTEN", "127.0.0.1:0")  # never a fixed port in tests
    policy_file = None
    if policy is not None:
        policy_file = tmp_path / "policy.yaml"
        policy_file.write_text(yaml.safe_dump(_plain(policy), sort_keys=False), encoding="utf-8")
        monkeypatch.setenv("OPSROOM_POLICY", str(policy_file))
    for name, value in (settings or {}).items():
        monkeypatch.setenv(name, str(value))
    get_settings.cache_clear()
    get_settings()  # fail here, naming the setting, rather than inside the bot
    return OpsroomTestEnv(data_dir=data_dir, policy_file=policy_file)


def _plain(value: Any) -> Any:
    """Tuples and other sequences as lists, so that ``yaml.safe_dump`` takes them."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(item) for item in value]
    return value


def _setting(request: pytest.FixtureRequest, name: str) -> Any:
    """A class attribute of the test, else a module attribute (as Errbot's testbot reads)."""
    instance = getattr(request, "instance", None)
    if instance is not None and getattr(instance, name, None) is not None:
        return getattr(instance, name)
    return getattr(request.module, name, None)


@pytest.fixture(autouse=True)
def opsroom(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[OpsroomTestEnv]:
    """Fresh Opsroom settings for each test, set before Errbot's ``testbot`` starts.

    Reads, from the test's class or else its module (like Errbot's ``extra_plugin_dir``):

    - ``opsroom_policy``: the policy as a dict (the schema of ``examples/policy.yaml``);
      without one, reads are open and every change is denied;
    - ``opsroom_settings``: more environment variables, e.g. ``{"OPSROOM_PREFIX": "."}``.

    Autouse: importing it into a test module (``from bot.testing import opsroom``) applies
    it to every test there, and autouse fixtures are set up before the ``testbot`` the test
    asks for. Yields an :class:`OpsroomTestEnv`; afterwards the runtime's job pool is shut
    down and its audit log closed.
    """
    env = configure_opsroom(
        monkeypatch,
        tmp_path,
        _setting(request, "opsroom_policy"),
        _setting(request, "opsroom_settings"),
    )
    yield env
    testbot = (getattr(request.node, "funcargs", None) or {}).get("testbot")
    if testbot is not None:
        stop_runtime(testbot)
    get_settings.cache_clear()


def stop_runtime(testbot: Any) -> None:
    """Shut down the runtime the test bot built, if any: cancel its jobs and close its
    audit log. The :func:`opsroom` fixture does this after each test that used
    ``testbot``."""
    bot = getattr(testbot, "bot", None)
    if bot is not None:
        close_runtime(bot)


# --- talking to the bot ---------------------------------------------------------------------------
def push_as(testbot: Any, user: str, text: str) -> None:
    """Send ``text`` to the bot as ``user`` (``@bob``) instead of the usual test user.

    Errbot's test backend gives every pushed message the same sender; this marks the
    message and swaps its sender just before Errbot handles it, so it is safe to call while
    other messages are in flight.
    """
    bot = testbot.bot
    if not getattr(bot, "_opsroom_push_as", False):
        handle = bot.callback_message

        def callback_message(msg: Any) -> Any:
            sender = (msg.extras or {}).get(_SENDER_EXTRA)
            if sender:
                msg.frm = bot.build_identifier(sender)
            return handle(msg)

        bot.callback_message = callback_message
        bot._opsroom_push_as = True
    bot.push_message(text, extras={_SENDER_EXTRA: user})


def pop_until(testbot: Any, text: str, timeout: float = 10.0) -> str:
    """Pop the bot's messages until one contains ``text`` and return it.

    Messages before it are dropped: use it to wait for the final message of a job
    (``pop_until(testbot, "succeeded")``) past "accepted" and other updates. Fails the test
    after ``timeout`` seconds, listing what the bot did say.
    """
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            message = testbot.pop_message(timeout=max(left, 0.01))
        except Empty:
            said = "\n".join(f"  {m!r}" for m in seen) or "  (nothing)"
            raise AssertionError(
                f"no message containing {text!r} within {timeout:g}s; the bot said:\n{said}"
            ) from None
        if text in message:
            return message
        seen.append(message)


def _find(kind: str, message: str) -> str:
    match = _IDS[kind].search(message)
    if match is None:
        raise AssertionError(f"no {kind} id in {message!r}")
    return match.group(0)


def request_id(message: str) -> str:
    """The confirmation or approval request id (``R-7KQ2M``) in a message of the bot."""
    return _find("request", message)


def job_id(message: str) -> str:
    """The job id (``J-1A2B3``) in a message of the bot."""
    return _find("job", message)


def audit_id(message: str) -> str:
    """The (last) audit record id (``A-000004``) in a message of the bot."""
    ids = _IDS["audit"].findall(message)
    if not ids:
        raise AssertionError(f"no audit id in {message!r}")
    return ids[-1]


# --- what the runtime did -------------------------------------------------------------------------
def runtime(testbot: Any) -> Runtime:
    """The test bot's action runtime (policy, audit store, jobs, approvals)."""
    return runtime_for(testbot.bot)


def audit_records(testbot: Any, correlation_id: str | None = None) -> list[AuditRecord]:
    """The audit records of this test, oldest first (each test has its own audit log);
    only those of one invocation with ``correlation_id``.

    ``[r.event for r in audit_records(testbot)]`` compares to ``AuditEvent`` members or
    their values (``"requested"``, ``"started"``, ``"succeeded"`` ...).
    """
    store = runtime(testbot).audit
    if correlation_id is not None:
        return store.by_correlation(correlation_id)
    return list(store.since(None))
