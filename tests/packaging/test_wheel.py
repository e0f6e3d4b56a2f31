"""The wheel is a complete bot: built, installed into a fresh virtualenv and run with no
checkout anywhere in sight (an empty working directory, the installed package on sys.path).

The fresh virtualenv sees the dependencies already installed in the outer one through a
``.pth`` file (no network, a few seconds), and the wheel is installed with ``--no-index``, so
that a dependency the wheel declares but the outer virtualenv lacks fails the install.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# One worker builds the wheel once (module fixture) under pytest-xdist --dist loadgroup.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheel")]

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "data", "*.egg-info", "__pycache__", ".*_cache"
)


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    env: dict[str, str]  # no OPSROOM_*/MATTERMOST_*/PYTHONPATH from the developer's shell

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def opsroom(self) -> Path:
        return self.venv / "bin" / "opsroom"


def _run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, **kwargs
    )  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    built = _run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--quiet", "--wheel-dir", base / "dist", source,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = (base / "dist").glob("opsroom-*.whl")
    venv = base / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv)
    assert made.returncode == 0, made.stderr
    inner = _run(
        venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    )
    outer = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    (Path(inner.stdout.strip()) / "outer-dependencies.pth").write_text(
        "".join(f"{p}\n" for p in outer), encoding="utf-8"
    )
    install = _run(
        sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
        "--no-index", "--quiet", f"{wheel}[testing]",
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPSROOM_", "MATTERMOST_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env["OPSROOM_HTTP_LISTEN"] = "127.0.0.1:0"  # a free port for the bot's HTTP server
    yield Installed(wheel, venv, {**env, "PYTHONUNBUFFERED": "1"})


def test_the_wheel_carries_the_plugins_the_examples_and_every_module(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "bot").rglob("*.py")}
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "bot").rglob("*.plug")}
    for path in (ROOT / "plugins").rglob("*"):
        if path.suffix in (".py", ".plug"):
            expected.add(f"bot/shipped/plugins/{path.relative_to(ROOT / 'plugins')}")
    expected |= {"bot/shipped/examples/inventory.yaml", "bot/shipped/examples/policy.yaml"}
    expected |= {
        f"bot/testing/fake_mattermost/reference/mattermost-api-v4/{p.name}"
        for p in (ROOT / "bot/testing/fake_mattermost/reference/mattermost-api-v4").glob("*.yaml")
    }
    missing = sorted(expected - names)
    assert not missing, f"not in the wheel (list the package in pyproject.toml): {missing}"
    for plugin in ("opsroom", "runtime", "ssh_ops"):
        assert f"bot/shipped/plugins/{plugin}/{plugin}.plug" in names


def test_the_installed_package_is_used_not_the_checkout(installed, tmp_path):
    probe = _run(
        installed.python, "-c",
        "import bot, bot.testing; from bot.settings import sample_inventory_path as s; "
        "print(bot.__file__); print(bot.testing.OPSROOM_PLUGINS_DIR); print(s())",
        cwd=tmp_path, env=installed.env,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    for line in probe.stdout.splitlines():
        assert Path(line).is_relative_to(installed.venv), probe.stdout
        assert Path(line).exists()


class Terminal:
    """``opsroom run`` on the terminal backend, fed one command at a time."""

    def __init__(self, installed: Installed, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [str(installed.opsroom), "run"],
            cwd=cwd,
            env=installed.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: queue.Queue[str] = queue.Queue()
        self.seen = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.put(line)

    def wait_for(self, *texts: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.seen)
        while not all(t in self.seen[start:] for t in texts):
            try:
                self.seen += self.output.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"never saw {texts}; output:\n{self.seen[-3000:]}") from None

    def send(self, command: str, *answers: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        self.wait_for(*answers)

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def test_opsroom_run_from_an_empty_directory_answers_with_every_shipped_plugin(installed, tmp_path):
    bot = Terminal(installed, tmp_path)
    try:
        bot.wait_for("(SAMPLE: fake *.example.com hosts)", "policy: none")
        bot.send("!ping", "pong")  # plugins/opsroom
        bot.send("!whoami", "You are @localuser")  # plugins/runtime
        bot.send("!hosts", "prod-web1.internal.example.com")  # plugins/ssh_ops, sample inventory
        bot.send("!help", "Opsroom", "Runtime", "SSHOps")
    finally:
        code = bot.close()
    assert code == 0, bot.seen[-3000:]
    log = (tmp_path / "data" / "opsroom.log").read_text()
    assert "exceeds backends maximum message size" not in log
    assert "Error" not in log, log[-3000:]


def test_check_config_from_an_empty_directory(installed, tmp_path):
    result = _run(installed.opsroom, "check-config", cwd=tmp_path, env=installed.env)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    assert "Opsroom, Runtime, SSHOps" in result.stdout
    [inventory] = [line for line in result.stdout.splitlines() if line.startswith("inventory")]
    assert str(installed.venv) in inventory and "(SAMPLE: fake *.example.com hosts)" in inventory


def test_the_example_plugin_tests_pass_against_the_installed_package(installed, tmp_path):
    example = tmp_path / "cache_flush"
    shutil.copytree(ROOT / "examples" / "plugins" / "cache_flush", example, ignore=NOT_SOURCES)
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # not the checkout's
    where = _run(
        installed.python, "-c", "import bot; print(bot.__file__)", cwd=example, env=installed.env
    )
    assert Path(where.stdout.strip()).is_relative_to(installed.venv), where.stdout + where.stderr
    result = _run(
        installed.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", example,
        cwd=tmp_path, env=installed.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


def test_plugin_authors_get_the_fake_mattermost_from_the_installed_package(installed, tmp_path):
    """The example of docs/plugin-authoring.md, "Testing against a Mattermost server"."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    for name in ("conftest.py", "test_fake_mattermost.py"):
        shutil.copy(Path(__file__).parent / "plugin_author" / name, tmp_path / name)
    result = _run(
        installed.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", tmp_path,
        cwd=tmp_path, env=installed.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout
