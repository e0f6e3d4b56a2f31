"""SSH connector: run an argv list on hosts over paramiko, safely, with reuse and fan-out.

Chat-free: nothing here knows about the bot, so it is used and tested on its own::

    target = SSHTarget(name="web1", address="10.0.0.5", user="deploy",
                       key_file=Path("~/.ssh/id_ed25519").expanduser(),
                       known_hosts=Path("/etc/opsroom/known_hosts"))
    with SSHConnector(max_parallel=10) as ssh:
        result = ssh.run(target, ["systemctl", "restart", "nginx"], timeout=60)
        results = ssh.run_many([target, ...], ["systemctl", "is-active", "nginx"], timeout=10)

Safety rules built in:

* A command is an argv list, never a shell string. The line sent is ``shlex.join`` of a fixed
  wrapper plus the argv, so every argument reaches the remote program as one literal argument.
* Host keys are checked against the target's known_hosts file. An unknown key is refused
  (:class:`HostKeyUnknown`) unless trust-on-first-use was switched on explicitly; a changed key
  is always refused (:class:`HostKeyMismatch`).
* Timeout and cancellation kill the remote command, not just the channel. The wrapper
  ``sh -c 'echo $$; exec "$@"'`` reports the remote pid before exec'ing the command; sshd makes
  each session its own process group led by the login shell, which exec's into the wrapper when
  it runs a single command (bash, dash and zsh do), so on timeout or cancel we send
  ``kill -TERM -<pid>`` (the whole group: the command and its children) over a second channel,
  then ``kill -KILL`` after a grace period if it is still running. If the pid is not a group
  leader (an unusual login shell) only the command itself is signalled.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import select
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import paramiko

from bot.connectors import ConnectorError

__all__ = [
    "AuthenticationFailed",
    "CommandResult",
    "HostKeyError",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "HostUnreachable",
    "SSHConnector",
    "SSHError",
    "SSHTarget",
]

log = logging.getLogger(__name__)

# Prints the shell's pid, then becomes the command (same pid), so the pid can be killed later.
_WRAPPER = 'echo $$; exec "$@"'
_POLL = 0.05  # how often a running command checks its timeout and cancellation


class SSHError(ConnectorError):
    """Base of every error this connector raises; ``host`` names the target."""


class HostKeyError(SSHError):
    """The host's key could not be verified against known_hosts."""


class HostKeyUnknown(HostKeyError):
    """known_hosts has no key for the host (and trust-on-first-use is off)."""


class HostKeyMismatch(HostKeyError):
    """The host presented a different key than the one in known_hosts. Always refused."""


class AuthenticationFailed(SSHError):
    """The host refused our key or agent keys (or the key file is unusable)."""


class HostUnreachable(SSHError):
    """No SSH connection could be made: refused, timed out, no route, no SSH banner (a hung
    host or not an SSH server), or the handshake failed."""


@dataclass(frozen=True, kw_only=True)
class SSHTarget:
    """One host to run commands on. ``known_hosts`` is required: there is no default trust.

    Authenticates with ``key_file``, the SSH agent (``use_agent``), or both."""

    name: str
    address: str
    user: str
    known_hosts: Path
    port: int = 22
    key_file: Path | None = None
    use_agent: bool = False
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.key_file is None and not self.use_agent:
            raise ValueError(f"SSH target {self.name!r}: set key_file or use_agent")

    @property
    def host_key_alias(self) -> str:
        """The name the host is filed under in known_hosts (OpenSSH's convention)."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    """What one command on one host did.

    ``exit_code`` is None when the command did not finish on its own (timed out, cancelled,
    killed by a signal) or never ran (``error`` says why: connection, host key or auth
    failure). ``stdout``/``stderr`` hold at most the connector's ``output_cap`` bytes each,
    the tail of the output; ``truncated`` says the head was dropped."""

    host: str
    argv: list[str]
    exit_code: int | None
    stdout: str
    stderr: str
    duration: float
    truncated: bool = False
    timed_out: bool = False
    cancelled: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a key, e.g. ``SHA256:nThbg6kX...``."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode()
    return f"SHA256:{digest.rstrip('=')}"


class _Tail:
    """Keeps the last ``cap`` bytes of a stream."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.cap:
            del self.data[: len(self.data) - self.cap]
            self.truncated = True

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only when known_hosts has no key at all for the host (a changed
    key, of any type, is raised by paramiko itself as BadHostKeyException)."""

    def __init__(self, connector: SSHConnector, target: SSHTarget) -> None:
        self.connector = connector
        self.target = target

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if not self.connector.trust_on_first_use:
            raise HostKeyUnknown(
                self.target.name,
                f"host key of {self.target.name} ({hostname}) is not in "
                f"{self.target.known_hosts}: {key.get_name()} {fingerprint(key)}. "
                "Verify the fingerprint and add the key to known_hosts "
                "(or enable trust-on-first-use).",
            )
        self.connector._trust(self.target, hostname, key)
        client.get_host_keys().add(hostname, key.get_name(), key)


class SSHConnector:
    """Runs commands on :class:`SSHTarget` hosts, keeping one connection per target.

    Thread-safe: any number of threads may call :meth:`run` at once; commands on the same
    target share its connection (sshd's ``MaxSessions``, 10 by default, bounds how many run
    on one host at a time, and a timeout or cancel briefly needs one more for the kill)."""

    def __init__(
        self,
        max_parallel: int = 10,
        trust_on_first_use: bool = False,
        output_cap: int = 64 * 1024,
        kill_grace: float = 2.0,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.max_parallel = max_parallel
        self.trust_on_first_use = trust_on_first_use
        self.output_cap = output_cap
        self.kill_grace = kill_grace
        self._clients: dict[SSHTarget, paramiko.SSHClient] = {}
        self._connect_locks: dict[SSHTarget, threading.Lock] = {}
        self._lock = threading.Lock()
        self._known_hosts_lock = threading.Lock()

    # -- public API ------------------------------------------------------------------------

    def run(
        self,
        target: SSHTarget,
        argv: Sequence[str],
        *,
        timeout: float,
        cancel: threading.Event | None = None,
        on_cancel_register: Callable[[Callable[[], None]], object] | None = None,
    ) -> CommandResult:
        """Run ``argv`` on ``target`` and wait for it, at most ``timeout`` seconds.

        ``cancel`` is polled; ``on_cancel_register`` (e.g. a job's ``ctx.on_cancel``) is given
        a callback that cancels this run. On timeout or cancel the remote command is killed and
        the result says ``timed_out``/``cancelled``. Connecting is bounded by the target's
        ``connect_timeout`` and raises :class:`SSHError` subclasses; so does losing the
        connection mid-command."""
        argv = _checked_argv(argv)
        started = time.monotonic()
        stop = threading.Event()
        if on_cancel_register is not None:
            on_cancel_register(stop.set)

        def cancelled() -> bool:
            return stop.is_set() or (cancel is not None and cancel.is_set())

        if cancelled():
            return CommandResult(target.name, argv, None, "", "", 0.0, cancelled=True)
        client, channel = self._open_channel(target)
        try:
            channel.exec_command(shlex.join(["sh", "-c", _WRAPPER, "sh", *argv]))
            channel.shutdown_write()
            return self._collect(target, argv, client, channel, started, timeout, cancelled)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self._drop(target, client)
            raise SSHError(target.name, f"connection to {target.name} lost: {exc}") from exc
        finally:
            channel.close()

    def run_many(
        self,
        targets: Sequence[SSHTarget],
        argv: Sequence[str],
        *,
        timeout: float,
        max_parallel: int | None = None,
        cancel: threading.Event | None = None,
    ) -> list[CommandResult]:
        """Run the same ``argv`` on every target: :meth:`run_each` with one command."""
        argv = _checked_argv(argv)
        return self.run_each(
            [(target, argv) for target in targets],
            timeout=timeout,
            max_parallel=max_parallel,
            cancel=cancel,
        )

    def run_each(
        self,
        commands: Sequence[tuple[SSHTarget, Sequence[str]]],
        *,
        timeout: float,
        max_parallel: int | None = None,
        cancel: threading.Event | None = None,
    ) -> list[CommandResult]:
        """Run one argv per target (they may differ, e.g. with sudo), at most
        ``max_parallel`` hosts at once (default: the connector's), in one pool. Results come
        back in the order given; a host that fails to connect or authenticate gets a result
        with ``exit_code=None`` and ``error`` set, never an exception. Once ``cancel`` is set,
        running commands are killed and hosts not yet started are reported cancelled
        without connecting."""
        checked = [(target, _checked_argv(argv)) for target, argv in commands]
        if not checked:
            return []
        workers = max(1, min(max_parallel or self.max_parallel, len(checked)))

        def one(command: tuple[SSHTarget, list[str]]) -> CommandResult:
            target, argv = command
            started = time.monotonic()
            try:
                return self.run(target, argv, timeout=timeout, cancel=cancel)
            except SSHError as exc:
                elapsed = time.monotonic() - started
                return CommandResult(target.name, argv, None, "", "", elapsed, error=str(exc))

        with ThreadPoolExecutor(workers, thread_name_prefix="ssh-fanout") as pool:
            return list(pool.map(one, checked))

    def close(self) -> None:
        """Close every kept connection. The connector stays usable (it connects again)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- connections -----------------------------------------------------------------------

    def _open_channel(self, target: SSHTarget) -> tuple[paramiko.SSHClient, paramiko.Channel]:
        """A new session channel on the target's kept connection. A kept connection that
        turns out dead is replaced once."""
        for attempt in (1, 2):
            client = self._client(target)
            try:
                transport = client.get_transport()
                if transport is None:
                    raise paramiko.SSHException("no transport")
                return client, transport.open_session(timeout=target.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self._drop(target, client)
                if attempt == 2:
                    raise SSHError(
                        target.name, f"cannot open a session on {target.name}: {exc}"
                    ) from exc
        raise AssertionError("unreachable")

    def _client(self, target: SSHTarget) -> paramiko.SSHClient:
        with self._lock:
            lock = self._connect_locks.setdefault(target, threading.Lock())
        with lock:
            with self._lock:
                client = self._clients.get(target)
            if client is not None:
                transport = client.get_transport()
                if transport is not None and transport.is_active():
                    return client
                self._drop(target, client)
            client = self._connect(target)
            with self._lock:
                self._clients[target] = client
            return client

    def _drop(self, target: SSHTarget, client: paramiko.SSHClient | None = None) -> None:
        """Close ``client`` (default: the target's kept connection) and forget it if it is
        the one kept for the target."""
        with self._lock:
            current = self._clients.get(target)
            if current is not None and (client is None or current is client):
                del self._clients[target]
                client = current
        if client is not None:
            client.close()

    def _connect(self, target: SSHTarget) -> paramiko.SSHClient:
        if target.key_file is not None and not target.key_file.is_file():
            raise AuthenticationFailed(
                target.name, f"key file {target.key_file} for {target.name} does not exist"
            )
        client = paramiko.SSHClient()
        try:
            if target.known_hosts.exists():
                client.get_host_keys().load(str(target.known_hosts))
        except OSError as exc:
            raise HostKeyError(
                target.name, f"cannot read known_hosts {target.known_hosts}: {exc}"
            ) from exc
        client.set_missing_host_key_policy(_HostKeyPolicy(self, target))
        where = f"{target.name} ({target.user}@{target.address}:{target.port})"
        try:
            try:
                client.connect(
                    target.address,
                    port=target.port,
                    username=target.user,
                    key_filename=str(target.key_file) if target.key_file else None,
                    allow_agent=target.use_agent,
                    look_for_keys=False,
                    timeout=target.connect_timeout,
                    banner_timeout=target.connect_timeout,
                    auth_timeout=target.connect_timeout,
                )
            except paramiko.SSHException as exc:
                # paramiko stops waiting for the banner, then tries to authenticate on a dead
                # session ("No existing session"): say what happened, not "check your keys".
                transport = client.get_transport()
                if transport is None or not transport.remote_version:
                    raise HostUnreachable(
                        target.name,
                        f"no SSH banner from {where} within {target.connect_timeout:g}s "
                        "(host hung or not an SSH server)",
                    ) from exc
                raise
        except SSHError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyMismatch(
                target.name,
                f"host key of {where} has CHANGED: known_hosts {target.known_hosts} has "
                f"{exc.expected_key.get_name()} {fingerprint(exc.expected_key)}, the host "
                f"presented {exc.key.get_name()} {fingerprint(exc.key)}. Refusing to connect: "
                "this may be an attack; if the host was re-keyed, update known_hosts.",
            ) from exc
        except paramiko.PasswordRequiredException as exc:
            client.close()
            raise AuthenticationFailed(
                target.name, f"key file {target.key_file} for {where} is encrypted"
            ) from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise AuthenticationFailed(
                target.name, f"authentication as {target.user} failed on {where}: {exc}"
            ) from exc
        except (OSError, EOFError) as exc:  # refused, no route, timeouts (socket.timeout)
            client.close()
            raise HostUnreachable(target.name, f"cannot reach {where}: {exc}") from exc
        except paramiko.SSHException as exc:
            transport = client.get_transport()
            handshake_done = transport is not None and transport.is_active()
            client.close()
            if handshake_done:  # e.g. "No authentication methods available" (empty agent)
                raise AuthenticationFailed(
                    target.name, f"authentication as {target.user} failed on {where}: {exc}"
                ) from exc
            raise HostUnreachable(target.name, f"SSH handshake with {where} failed: {exc}") from exc
        log.debug("connected to %s", where)
        return client

    def _trust(self, target: SSHTarget, alias: str, key: paramiko.PKey) -> None:
        """Trust-on-first-use: append the key to known_hosts, unless another thread or
        process filed a key for the host meanwhile (then that key must match)."""
        with self._known_hosts_lock:
            path = target.known_hosts
            current = paramiko.HostKeys()
            if path.exists():
                current.load(str(path))
            filed = current.lookup(alias)
            if filed:
                if filed.get(key.get_name()) == key:
                    return
                raise HostKeyMismatch(
                    target.name,
                    f"host key of {target.name} ({alias}) does not match the key filed in "
                    f"{path} meanwhile; refusing {key.get_name()} {fingerprint(key)}",
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            text = path.read_text() if path.exists() else ""
            with path.open("a") as f:
                if text and not text.endswith("\n"):
                    f.write("\n")
                f.write(f"{alias} {key.get_name()} {key.get_base64()}\n")
        log.warning(
            "trusted new host key of %s (%s) on first use: %s %s",
            target.name,
            alias,
            key.get_name(),
            fingerprint(key),
        )

    # -- running ---------------------------------------------------------------------------

    def _collect(
        self,
        target: SSHTarget,
        argv: list[str],
        client: paramiko.SSHClient,
        channel: paramiko.Channel,
        started: float,
        timeout: float,
        cancelled: Callable[[], bool],
    ) -> CommandResult:
        """Read output until the command exits, times out or is cancelled."""
        out, err = _Tail(self.output_cap), _Tail(self.output_cap)
        head = bytearray()  # stdout before the wrapper's pid line is complete
        pid: int | None = None
        pid_seen = False
        deadline = time.monotonic() + timeout
        stopped_by = ""

        def drain() -> None:
            nonlocal pid, pid_seen
            while channel.recv_ready():
                chunk = channel.recv(65536)
                if pid_seen:
                    out.add(chunk)
                    continue
                head.extend(chunk)
                line, newline, rest = bytes(head).partition(b"\n")
                if newline:
                    pid_seen = True
                    if line.strip().isdigit():
                        pid = int(line)
                    else:  # not our wrapper's line: keep it as output
                        rest = bytes(head)
                    out.add(rest)
            while channel.recv_stderr_ready():
                err.add(channel.recv_stderr(65536))

        while True:
            drain()
            # Done once the command exited and its output is complete (EOF), as OpenSSH does.
            if (
                channel.exit_status_ready()
                and (channel.eof_received or channel.closed)
                and not (channel.recv_ready() or channel.recv_stderr_ready())
            ):
                break
            if cancelled():
                stopped_by = "cancel"
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stopped_by = "timeout"
                break
            wait = min(_POLL, remaining)
            if channel.eof_received:  # the pipe stays readable after EOF: wait on the status
                channel.status_event.wait(wait)
            else:
                select.select([channel], [], [], wait)

        exit_code: int | None = None
        error: str | None = None
        if stopped_by:
            if not pid_seen:  # the pid line is the first thing the wrapper prints
                until = time.monotonic() + self.kill_grace
                while not pid_seen and not channel.exit_status_ready() and time.monotonic() < until:
                    channel.status_event.wait(0.01)
                    drain()
            self._kill(target, client, channel, pid)
            drain()
        else:
            status = channel.recv_exit_status()
            if status >= 0:
                exit_code = status
            else:
                error = (
                    f"command on {target.name} ended without an exit status (killed by a signal?)"
                )
        return CommandResult(
            host=target.name,
            argv=argv,
            exit_code=exit_code,
            stdout=out.text(),
            stderr=err.text(),
            duration=time.monotonic() - started,
            truncated=out.truncated or err.truncated,
            timed_out=stopped_by == "timeout",
            cancelled=stopped_by == "cancel",
            error=error,
        )

    def _kill(
        self,
        target: SSHTarget,
        client: paramiko.SSHClient,
        channel: paramiko.Channel,
        pid: int | None,
    ) -> None:
        """Kill the remote command: TERM its process group, KILL after the grace period."""
        if channel.exit_status_ready():
            return
        if pid is None:
            log.warning(
                "no remote pid for the command on %s; only closing its channel", target.name
            )
            return
        for signal in ("TERM", "KILL"):
            self._signal(target, client, pid, signal)
            if channel.status_event.wait(self.kill_grace):
                return
        log.warning("command (pid %d) on %s survived SIGKILL", pid, target.name)

    @staticmethod
    def _signal(target: SSHTarget, client: paramiko.SSHClient, pid: int, signal: str) -> None:
        # dash's kill takes no "--", but "-SIG -PGID" works in every POSIX shell.
        command = f"kill -{signal} -{pid} 2>/dev/null || kill -{signal} {pid} 2>/dev/null; true"
        try:
            transport = client.get_transport()
            if transport is None:
                return
            killer = transport.open_session(timeout=target.connect_timeout)
            try:
                killer.exec_command(command)
                killer.status_event.wait(target.connect_timeout)
            finally:
                killer.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            log.warning("could not signal pid %d on %s: %s", pid, target.name, exc)


def _checked_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, str):
        raise TypeError("argv must be a list of arguments, not a string")
    argv = list(argv)
    if not argv:
        raise ValueError("argv is empty")
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(f"argv items must be str, got {type(arg).__name__}: {arg!r}")
        if "\0" in arg:
            raise ValueError(f"argument contains a NUL byte: {arg!r}")
    return argv
