"""Tests for the SQLite errbot storage plugin (bot/storage/sqlite.py)."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.storage.sqlite import (
    PICKLE_PROTOCOL,
    SQLiteStorage,
    SQLiteStoragePlugin,
    StorageClosedError,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
STORAGE_DIR = REPO_ROOT / "bot" / "storage"


@pytest.fixture
def plugin(tmp_path: Path) -> SQLiteStoragePlugin:
    return SQLiteStoragePlugin(SimpleNamespace(BOT_DATA_DIR=str(tmp_path)))


@pytest.fixture
def store(plugin: SQLiteStoragePlugin):
    s = plugin.open("core")
    yield s
    s.close()


def test_round_trip_of_picklable_values(store: SQLiteStorage) -> None:
    values = {
        "int": 42,
        "str": "héllo ✓",
        "nested": {"acl": ["alice", "bob"], "limits": (1, 2.5, None), "set": {1, 2}},
        "bytes": b"\x00\xff" * 100,
        "": "empty key is a key like any other",
    }
    for key, value in values.items():
        store.set(key, value)
    for key, value in values.items():
        assert store.get(key) == value


def test_set_overwrites(store: SQLiteStorage) -> None:
    store.set("k", 1)
    store.set("k", [2])
    assert store.get("k") == [2]
    assert store.len() == 1


def test_get_missing_key_raises_key_error(store: SQLiteStorage) -> None:
    with pytest.raises(KeyError):
        store.get("nope")


def test_len_keys_remove(store: SQLiteStorage) -> None:
    assert store.len() == 0
    assert store.keys() == []
    for key in ("b", "a", "c"):
        store.set(key, key.upper())
    assert store.len() == 3
    assert sorted(store.keys()) == ["a", "b", "c"]

    store.remove("b")
    assert store.len() == 2
    assert sorted(store.keys()) == ["a", "c"]
    with pytest.raises(KeyError):
        store.get("b")
    with pytest.raises(KeyError):
        store.remove("b")


def test_keys_is_a_snapshot_list(store: SQLiteStorage) -> None:
    for i in range(5):
        store.set(f"k{i}", i)
    keys = store.keys()
    assert isinstance(keys, list)
    for key in keys:  # mutating while iterating must be safe
        store.remove(key)
    assert len(keys) == 5
    assert store.len() == 0


def test_values_are_pickled_like_errbot_shelf(store: SQLiteStorage) -> None:
    store.set("k", {"a": 1})
    raw = store._conn.execute("SELECT value FROM kv WHERE key = 'k'").fetchone()[0]
    assert raw[:2] == bytes([0x80, PICKLE_PROTOCOL])  # pickle PROTO opcode + version


def test_persistence_across_close_and_reopen(plugin: SQLiteStoragePlugin) -> None:
    s = plugin.open("persist")
    s.set("config", {"channel": "ops", "level": 3})
    s.set("gone", 1)
    s.remove("gone")
    s.close()

    s = plugin.open("persist")
    try:
        assert s.keys() == ["config"]
        assert s.get("config") == {"channel": "ops", "level": 3}
    finally:
        s.close()


def test_close_is_idempotent_and_closed_store_refuses_use(plugin: SQLiteStoragePlugin) -> None:
    s = plugin.open("x")
    s.close()
    s.close()
    with pytest.raises(StorageClosedError):
        s.get("k")
    with pytest.raises(StorageClosedError):
        s.set("k", 1)


def test_namespaces_are_isolated_files(plugin: SQLiteStoragePlugin, tmp_path: Path) -> None:
    a, b = plugin.open("PluginA"), plugin.open("PluginB")
    try:
        a.set("k", "a")
        b.set("k", "b")
        a.close()  # closing one namespace leaves the others usable
        assert b.get("k") == "b"
    finally:
        a.close()
        b.close()
    assert (tmp_path / "PluginA.sqlite").is_file()
    assert (tmp_path / "PluginB.sqlite").is_file()


def test_hostile_namespace_stays_inside_basedir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    plugin = SQLiteStoragePlugin(SimpleNamespace(BOT_DATA_DIR=str(data)))
    s = plugin.open("../escape/evil")
    s.set("k", 1)
    s.close()
    assert [p.parent for p in data.glob("*.sqlite")] == [data]
    assert not (tmp_path / "escape").exists()
    with pytest.raises(ValueError):
        plugin.open("..")


def test_storage_config_basedir_overrides_data_dir(tmp_path: Path) -> None:
    cfg = SimpleNamespace(
        BOT_DATA_DIR=str(tmp_path / "a"), STORAGE_CONFIG={"basedir": str(tmp_path / "b")}
    )
    s = SQLiteStoragePlugin(cfg).open("core")
    s.close()
    assert (tmp_path / "b" / "core.sqlite").is_file()
    assert not (tmp_path / "a").exists()


def test_wal_full_sync_and_private_file(store: SQLiteStorage) -> None:
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_concurrent_writers_lose_nothing(store: SQLiteStorage) -> None:
    n_threads, per_thread = 20, 25
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                store.set(f"t{t:02d}-{i:03d}", (t, i))
                assert store.get(f"t{t:02d}-{i:03d}") == (t, i)
                store.keys()
                store.len()
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    assert errors == []
    assert store.len() == n_threads * per_thread
    for t in range(n_threads):
        for i in range(per_thread):
            assert store.get(f"t{t:02d}-{i:03d}") == (t, i)


def test_works_behind_errbot_store_mixin(plugin: SQLiteStoragePlugin) -> None:
    """Errbot plugins see the store through StoreMixin (self['x'], self.mutable...)."""
    from errbot.storage import StoreMixin

    mixin = StoreMixin()
    mixin.open_storage(plugin, "MyPlugin")
    mixin["acl"] = ["alice"]
    with mixin.mutable("acl") as acl:
        acl.append("bob")
    with mixin.mutable("counter", 0):
        pass
    assert dict(mixin) == {"acl": ["alice", "bob"], "counter": 0}
    del mixin["counter"]
    assert "counter" not in mixin
    mixin.close_storage()


def test_errbot_bootstrap_finds_the_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from errbot.bootstrap import get_storage_plugin

    # The loader appends the plugin dir to sys.path and registers the module.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "errbot.storage.sqlite", raising=False)

    config = SimpleNamespace(
        STORAGE="SQLite",
        BOT_EXTRA_STORAGE_PLUGINS_DIR=str(STORAGE_DIR),
        BOT_DATA_DIR=str(tmp_path),
    )
    plugin = get_storage_plugin(config)
    assert type(plugin).__name__ == "SQLiteStoragePlugin"
    s = plugin.open("core")
    s.set("configs", {"Webserver": {"PORT": 3141}})
    s.close()

    # Same file format as when imported as bot.storage.sqlite.
    s = SQLiteStoragePlugin(config).open("core")
    assert s.get("configs") == {"Webserver": {"PORT": 3141}}
    s.close()


# --- crash safety -----------------------------------------------------------------------------

# Writes forever; prints each key only after ``set`` returned (i.e. was acknowledged).
# Values grow to 64 KiB so a good share of the time is spent inside the write/fsync.
CHILD = r"""
import sys, types
sys.path.insert(0, sys.argv[1])
from bot.storage.sqlite import SQLiteStoragePlugin
store = SQLiteStoragePlugin(types.SimpleNamespace(BOT_DATA_DIR=sys.argv[2])).open("crash")
prefix = sys.argv[3]
i = 0
while True:
    key = f"{prefix}-{i:06d}"
    store.set(key, {"i": i, "pad": "x" * (4096 * (1 + i % 16))})
    store.set("last:" + prefix, i)
    print(key, flush=True)
    i += 1
"""


def _write_until_killed(data_dir: Path, prefix: str, sig: signal.Signals) -> list[str]:
    """Run CHILD, kill it with ``sig`` after it acknowledged >= 150 writes; return acked keys."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(REPO_ROOT), str(data_dir), prefix],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: list[str] = []
    try:
        while len(acked) < 150:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer died early: {proc.wait()} {proc.stderr.read()}")
            acked.append(line.rstrip("\n"))
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -sig, "writer must have been killed by the signal, not exited"
    # Lines written before death are still in the pipe; keep only complete ones.
    acked += [line[:-1] for line in out.splitlines(keepends=True) if line.endswith("\n")]
    return acked


def _check_store(data_dir: Path, acked_by_prefix: dict[str, list[str]]) -> None:
    path = data_dir / "crash.sqlite"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    store = SQLiteStoragePlugin(SimpleNamespace(BOT_DATA_DIR=str(data_dir))).open("crash")
    try:
        for prefix, acked in acked_by_prefix.items():
            for key in acked:
                i = int(key.rsplit("-", 1)[1])
                assert store.get(key) == {"i": i, "pad": "x" * (4096 * (1 + i % 16))}
            assert store.get("last:" + prefix) >= len(acked) - 1
    finally:
        store.close()


def test_acknowledged_writes_survive_sigterm_then_sigkill(tmp_path: Path) -> None:
    acked: dict[str, list[str]] = {}

    acked["term"] = _write_until_killed(tmp_path, "term", signal.SIGTERM)
    _check_store(tmp_path, acked)

    # Second writer on the store the first one was killed on, this time SIGKILL.
    acked["kill"] = _write_until_killed(tmp_path, "kill", signal.SIGKILL)
    _check_store(tmp_path, acked)

    assert sum(map(len, acked.values())) >= 300
