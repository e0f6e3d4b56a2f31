"""The SSH connector against real OpenSSH sshd instances on loopback (see conftest.py)."""

from __future__ import annotations

import itertools
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.connectors import ConnectorError
from bot.connectors.ssh import (
    AuthenticationFailed,
    CommandResult,
    HostKeyMismatch,
    HostKeyUnknown,
    HostUnreachable,
    SSHConnector,
    SSHTarget,
)
from bot.errors import ActionFailed
from bot.testing.sshd import RemoteProcess, SSHDHost, SSHDPool, free_port, keygen


@pytest.fixture
def ssh() -> Iterator[SSHConnector]:
    with SSHConnector(kill_grace=1.0) as connector:
        yield connector


def sleeper(pid_file: Path) -> list[str]:
    """A remote command that sleeps 37 s in a child process, which writes its pid to
    ``pid_file`` (see :class:`RemoteProcess`)."""
    return ["sh", "-c", f"sh -c 'echo $$ > {pid_file}; exec sleep 37'; echo never"]


def fingerprint_of(host: SSHDHost) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{host.host_key_path}.pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


# -- running commands ------------------------------------------------------------------------


def test_exit_code_stdout_and_stderr(ssh: SSHConnector, ssh_hosts, make_target) -> None:
    target = make_target(ssh_hosts[0])
    result = ssh.run(target, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.host == "host01" and not result.ok
    assert not (result.truncated or result.timed_out or result.cancelled or result.error)
    ok = ssh.run(target, ["true"], timeout=10)
    assert ok.ok and ok.exit_code == 0 and ok.stdout == ""
    missing = ssh.run(target, ["no-such-command-opsroom"], timeout=10)
    assert missing.exit_code == 127 and "no-such-command-opsroom" in missing.stderr


@pytest.mark.parametrize(
    "value",
    [
        "two words",
        'it\'s "quoted"',
        "nginx; rm -rf /tmp/opsroom-nonexistent",
        "$(id)",
        "`id`",
        "a | b && c",
        "line\nbreak",
        "--help",
        "* ?",
        "",
    ],
)
def test_every_argument_arrives_as_one_literal(
    ssh: SSHConnector, ssh_hosts, make_target, value: str
) -> None:
    target = make_target(ssh_hosts[0])
    echoed = ssh.run(target, ["printf", "%s", value], timeout=10)
    assert echoed.exit_code == 0 and echoed.stdout == value
    count = ssh.run(target, ["sh", "-c", 'printf %s "$#"', "sh", value, value], timeout=10)
    assert count.stdout == "2"


def test_a_shell_string_is_not_accepted(ssh: SSHConnector, ssh_hosts, make_target) -> None:
    with pytest.raises(TypeError):
        ssh.run(make_target(ssh_hosts[0]), "echo hi; id", timeout=10)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ssh.run(make_target(ssh_hosts[0]), [], timeout=10)


def test_output_over_the_cap_keeps_the_tail(ssh_hosts, make_target) -> None:
    with SSHConnector(output_cap=1000) as ssh:
        result = ssh.run(make_target(ssh_hosts[0]), ["seq", "1", "20000"], timeout=10)
        small = ssh.run(make_target(ssh_hosts[0]), ["seq", "1", "10"], timeout=10)
    assert result.exit_code == 0 and result.truncated
    assert len(result.stdout) == 1000 and result.stdout.endswith("19999\n20000\n")
    assert not small.truncated and small.stdout == "".join(f"{i}\n" for i in range(1, 11))


# -- host keys -------------------------------------------------------------------------------


def test_unknown_host_key_is_refused_with_its_fingerprint(
    ssh: SSHConnector, ssh_hosts, make_target, tmp_path: Path
) -> None:
    host = ssh_hosts[1]
    empty = tmp_path / "empty_known_hosts"
    empty.write_text(ssh_hosts[0].known_hosts_line())  # another host's key only
    with pytest.raises(HostKeyUnknown) as caught:
        ssh.run(make_target(host, known_hosts=empty), ["true"], timeout=10)
    message = str(caught.value)
    assert host.name in message and fingerprint_of(host) in message
    assert f"[127.0.0.1]:{host.port}" in message and "not in" in message
    assert empty.read_text() == ssh_hosts[0].known_hosts_line()  # nothing was added
    missing = tmp_path / "no" / "known_hosts"
    with pytest.raises(HostKeyUnknown):
        ssh.run(make_target(host, known_hosts=missing), ["true"], timeout=10)
    assert not missing.exists()


def test_trust_on_first_use_saves_the_key_when_enabled(ssh_hosts, make_target, tmp_path) -> None:
    host = ssh_hosts[2]
    path = tmp_path / "tofu" / "known_hosts"
    with SSHConnector(trust_on_first_use=True) as ssh:
        assert ssh.run(make_target(host, known_hosts=path), ["true"], timeout=10).ok
    assert path.read_text() == host.known_hosts_line()
    with SSHConnector() as strict:  # the saved key is now trusted without TOFU
        assert strict.run(make_target(host, known_hosts=path), ["true"], timeout=10).ok
    assert path.read_text() == host.known_hosts_line()  # not added twice


def test_changed_host_key_is_refused_even_with_tofu(sshd_pool: SSHDPool, make_target, tmp_path):
    host = sshd_pool.new_host()
    try:
        path = tmp_path / "known_hosts"
        path.write_text(host.known_hosts_line())
        with SSHConnector() as ssh:
            assert ssh.run(make_target(host, known_hosts=path), ["true"], timeout=10).ok
        old = fingerprint_of(host)
        host.stop()
        host.regenerate_host_key()
        host.start()  # same address and port, new key
        new = fingerprint_of(host)
        for tofu in (False, True):
            with (
                SSHConnector(trust_on_first_use=tofu) as ssh,
                pytest.raises(HostKeyMismatch) as caught,
            ):
                ssh.run(make_target(host, known_hosts=path), ["true"], timeout=10)
            assert old in str(caught.value) and new in str(caught.value)
            assert "CHANGED" in str(caught.value)
        assert path.read_text().count("\n") == 1  # TOFU did not replace the filed key
    finally:
        host.stop()


# -- authentication and reachability ---------------------------------------------------------


def test_authentication_failure(ssh: SSHConnector, ssh_hosts, make_target, tmp_path) -> None:
    stranger = tmp_path / "stranger_key"
    keygen(stranger, "not-authorized")
    with pytest.raises(AuthenticationFailed) as caught:
        ssh.run(make_target(ssh_hosts[0], key_file=stranger), ["true"], timeout=10)
    assert "host01" in str(caught.value) and ssh_hosts[0].user in str(caught.value)
    with pytest.raises(AuthenticationFailed, match="does not exist"):
        ssh.run(make_target(ssh_hosts[0], key_file=tmp_path / "nope"), ["true"], timeout=10)


def test_host_down_is_unreachable_quickly(ssh: SSHConnector, ssh_hosts, make_target) -> None:
    down = make_target(ssh_hosts[0], name="down", port=free_port(), connect_timeout=60.0)
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as caught:
        ssh.run(down, ["true"], timeout=60)
    assert time.monotonic() - started < 30  # refused at once: not retried until a timeout
    assert "down" in str(caught.value) and str(down.port) in str(caught.value)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and then says nothing: a hung host."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_hung_host_is_reported_as_such_after_one_connect_timeout(
    ssh: SSHConnector, make_target, silent_port: int, ssh_hosts
) -> None:
    hung = make_target(ssh_hosts[0], name="hung", port=silent_port, connect_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(HostUnreachable) as caught:
        ssh.run(hung, ["true"], timeout=10)
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert message.startswith("no SSH banner from hung (")
    assert "within 1.5s (host hung or not an SSH server)" in message
    assert "authentication" not in message
    assert 1.5 <= elapsed < 2.9  # one connect_timeout, not two (3 s)


def test_connector_errors_are_action_failures(ssh: SSHConnector, ssh_hosts, make_target) -> None:
    """An SSH failure that escapes an action is its one-line outcome, not a traceback."""
    down = make_target(ssh_hosts[0], name="down", port=free_port())
    with pytest.raises(ConnectorError) as caught:
        ssh.run(down, ["true"], timeout=10)
    assert isinstance(caught.value, ActionFailed) and caught.value.host == "down"


def test_target_needs_a_key_or_the_agent(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key_file or use_agent"):
        SSHTarget(name="x", address="127.0.0.1", user="u", known_hosts=tmp_path / "kh")


# -- timeouts and cancellation ---------------------------------------------------------------


def test_timeout_kills_the_remote_command(
    ssh: SSHConnector, ssh_hosts, make_target, tmp_path: Path
) -> None:
    pid_file = tmp_path / "sleeper.pid"
    result = ssh.run(make_target(ssh_hosts[0]), sleeper(pid_file), timeout=1.0)
    assert result.timed_out and not result.cancelled and result.exit_code is None
    assert 1.0 <= result.duration < 30 and "never" not in result.stdout  # not the whole 37 s
    remote = RemoteProcess.from_pid_file(pid_file)
    assert remote.gone_within(10), "the sleep still runs on the host"


def _run_in_thread(fn: Callable[[], CommandResult]) -> tuple[threading.Thread, list]:
    box: list[CommandResult] = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    return thread, box


def test_cancel_mid_command_kills_the_remote_command(
    ssh: SSHConnector, ssh_hosts, make_target, tmp_path: Path
) -> None:
    pid_file = tmp_path / "sleeper.pid"
    cancel = threading.Event()
    thread, box = _run_in_thread(
        lambda: ssh.run(make_target(ssh_hosts[0]), sleeper(pid_file), timeout=60, cancel=cancel)
    )
    remote = RemoteProcess.from_pid_file(pid_file)
    assert remote.running()
    cancel.set()
    thread.join(30)
    [result] = box
    assert result.cancelled and not result.timed_out and result.exit_code is None
    assert result.duration < 30  # not the whole 37 s
    assert remote.gone_within(10), "the sleep still runs on the host"


def test_cancel_through_a_registered_callback(
    ssh: SSHConnector, ssh_hosts, make_target, tmp_path: Path
) -> None:
    """The job runtime's ``ctx.on_cancel`` style: the connector registers what cancels it."""
    pid_file = tmp_path / "sleeper.pid"
    callbacks: list[Callable[[], None]] = []
    thread, box = _run_in_thread(
        lambda: ssh.run(
            make_target(ssh_hosts[1]),
            sleeper(pid_file),
            timeout=60,
            on_cancel_register=callbacks.append,
        )
    )
    remote = RemoteProcess.from_pid_file(pid_file)
    for callback in callbacks:
        callback()
    thread.join(30)
    assert box and box[0].cancelled
    assert remote.gone_within(10), "the sleep still runs on the host"


# -- connections -----------------------------------------------------------------------------


def test_connection_is_reused_and_replaced_when_dead(
    ssh: SSHConnector, ssh_hosts, make_target
) -> None:
    host = ssh_hosts[3]
    target = make_target(host)
    before = host.accepted_logins()
    for _ in range(3):
        assert ssh.run(target, ["true"], timeout=10).ok
    assert host.accepted_logins() - before == 1  # one TCP connection for three commands
    ssh._clients[target].get_transport().close()  # the connection dies
    assert ssh.run(target, ["true"], timeout=10).ok
    assert host.accepted_logins() - before == 2


def test_fan_out_is_bounded_and_ordered(
    ssh: SSHConnector, ssh_hosts, make_target, tmp_path: Path
) -> None:
    targets = [make_target(h) for h in ssh_hosts]
    targets.insert(2, make_target(ssh_hosts[0], name="down", port=free_port()))
    # Each command notes that it runs, then waits (at most 10 s) until two have: the first two
    # wait for each other, so they overlap however loaded the machine is; a third running at
    # once would show in the timestamps.
    started = tmp_path / "started"
    started.mkdir()
    script = (
        f'date +%s.%N; touch "{started}/$$"; i=0; '
        f'while [ "$(ls "{started}" | wc -l)" -lt 2 ] && [ $i -lt 200 ]; do '
        "sleep 0.05; i=$((i+1)); done; sleep 0.3; date +%s.%N"
    )
    argv = ["sh", "-c", script]
    results = ssh.run_many(targets, argv, timeout=10, max_parallel=2)
    assert [r.host for r in results] == [t.name for t in targets]
    down = results.pop(2)
    assert down.exit_code is None and "cannot reach down" in (down.error or "")
    assert all(r.ok for r in results), results
    spans = [tuple(float(x) for x in r.stdout.split()) for r in results]
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    overlap = max(itertools.accumulate(delta for _, delta in events))
    assert overlap == 2  # never more than max_parallel hosts at once, and it did run in parallel


def test_fan_out_of_different_commands_is_one_bounded_pool(
    ssh: SSHConnector, ssh_hosts, make_target, monkeypatch
) -> None:
    """One argv per host (sudo may differ), run by one pool of at most max_parallel threads:
    no pool per host inside the pool of hosts."""
    threads: set[str] = set()
    run = SSHConnector.run

    def recording(self, target, argv, **kwargs):  # type: ignore[no-untyped-def]
        threads.add(threading.current_thread().name)
        return run(self, target, argv, **kwargs)

    monkeypatch.setattr(SSHConnector, "run", recording)
    commands = [(make_target(h), ["echo", h.name]) for h in ssh_hosts]
    results = ssh.run_each(commands, timeout=10, max_parallel=2)
    assert [r.stdout for r in results] == [f"{h.name}\n" for h in ssh_hosts]
    assert len(threads) == 2


def test_fan_out_cancelled_before_start_connects_nowhere(
    ssh: SSHConnector, ssh_hosts, make_target
) -> None:
    cancel = threading.Event()
    cancel.set()
    before = [h.accepted_logins() for h in ssh_hosts]
    results = ssh.run_many([make_target(h) for h in ssh_hosts], ["true"], timeout=5, cancel=cancel)
    assert all(r.cancelled and r.exit_code is None for r in results)
    assert [h.accepted_logins() for h in ssh_hosts] == before


# -- the stand-in systemctl ------------------------------------------------------------------


def test_standin_systemctl_records_calls_and_keeps_state(
    ssh: SSHConnector, ssh_hosts, make_target
) -> None:
    host = ssh_hosts[4]
    target = make_target(host)
    assert ssh.run(target, ["systemctl", "is-active", "nginx"], timeout=10).exit_code == 3
    assert ssh.run(target, ["systemctl", "restart", "nginx.service"], timeout=10).ok
    active = ssh.run(target, ["systemctl", "is-active", "nginx.service"], timeout=10)
    assert active.ok and active.stdout == "active\n"
    host.set_unit("api", fail=True)
    failed = ssh.run(target, ["systemctl", "restart", "api"], timeout=10)
    assert failed.exit_code == 1 and "api failed" in failed.stderr
    status = ssh.run(target, ["systemctl", "--no-pager", "status", "api"], timeout=10)
    assert status.ok and "active (running)" in status.stdout
    assert host.systemctl_calls() == [
        ["is-active", "nginx"],
        ["restart", "nginx.service"],
        ["is-active", "nginx.service"],
        ["restart", "api"],
        ["--no-pager", "status", "api"],
    ]
    assert ssh_hosts[0].systemctl_calls() == []  # each host has its own systemctl
