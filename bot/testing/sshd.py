"""Real OpenSSH ``sshd`` processes on loopback, standing for the hosts of an inventory.

Each :class:`SSHDHost` is one non-daemon ``sshd -D -e -f <config>`` on 127.0.0.1 with its own
throwaway ed25519 host key, its own log file, and its own PATH directory holding a stand-in
``systemctl`` (no systemd runs here). Every host accepts one throwaway client key
(:class:`ClientKey`) for the current user, so the tests log in as whoever runs them.

The stand-in ``systemctl`` keeps unit state in ``<host dir>/units/<unit>`` (``active`` or
``inactive``; a missing file is inactive), appends each call as one tab-separated line to
``<host dir>/systemctl.calls``, fails ``start``/``restart`` of a unit when
``<host dir>/units/<unit>.fail`` exists, and sleeps ``<host dir>/delay`` seconds first when that
file exists (the benchmark makes a restart take 0.2 s this way).

Plugin authors get a session fixture from :mod:`bot.testing.ssh_fixtures` (``sshd_pool``);
``bench/ssh_fanout.py`` starts hosts with this module directly (it imports nothing from
pytest).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")

_SYSTEMCTL = r"""#!/bin/sh
# Stand-in systemctl for tests: records its calls, keeps unit state in files.
dir='{dir}'
line=""
for a in "$@"; do line="$line$a	"; done
printf '%s\n' "$line" >> "$dir/systemctl.calls"
[ -f "$dir/delay" ] && sleep "$(cat "$dir/delay")"
verb=""
unit=""
for a in "$@"; do
  case "$a" in
    -*) ;;
    *) if [ -z "$verb" ]; then verb="$a"; elif [ -z "$unit" ]; then unit="$a"; fi ;;
  esac
done
state() {{ cat "$dir/units/$unit" 2>/dev/null || echo inactive; }}
case "$verb" in
  is-active)
    s=$(state); echo "$s"; [ "$s" = active ] || exit 3 ;;
  status)
    s=$(state)
    echo "* $unit - stand-in unit on {name}"
    if [ "$s" = active ]; then echo "     Active: active (running)"; exit 0; fi
    echo "     Active: inactive (dead)"; exit 3 ;;
  start|restart)
    if [ -f "$dir/units/$unit.fail" ]; then
      echo "Job for $unit failed because the control process exited with error code." >&2
      exit 1
    fi
    echo active > "$dir/units/$unit" ;;
  stop)
    echo inactive > "$dir/units/$unit" ;;
  *)
    echo "stand-in systemctl: unknown operation '$verb'" >&2; exit 1 ;;
esac
"""


class SSHDUnavailable(RuntimeError):
    """sshd cannot run here (not installed, or no privilege-separation directory)."""


def sshd_unavailable_reason() -> str | None:
    """Why real sshd instances cannot be started on this machine, or None when they can.

    As root, a missing ``/run/sshd`` (sshd refuses to start without it) is created."""
    if not SSHD.exists():
        return (
            f"{SSHD} not found: install Debian's openssh-server "
            "(`make test` does it when run as root)"
        )
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not found: install openssh-client"
    if not PRIVSEP_DIR.is_dir():
        if os.geteuid() != 0:
            return f"{PRIVSEP_DIR} (sshd's privilege-separation directory) is missing"
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    return None


def keygen(path: Path, comment: str) -> None:
    """Write an unencrypted ed25519 key pair to ``path`` and ``path.pub``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RemoteProcess:
    """A process a test's remote command started, identified by the pid it wrote to a file.

    The test hosts run on this machine, so ``/proc`` shows their processes: checking one pid
    (with its start time, so a reused pid is not mistaken for it) sees only the test's own
    command, where matching command lines machine-wide (``pgrep -f``) would also see other
    tests' and other users' processes. Remote commands write their pid with
    ``echo $$ > <file>`` before they ``exec`` what they run.
    """

    pid: int
    start_time: str  # field 22 of /proc/<pid>/stat: clock ticks after boot

    @classmethod
    def from_pid_file(cls, path: Path, timeout: float = 10.0) -> RemoteProcess:
        """Wait up to ``timeout`` s for ``path`` to hold a pid, then identify that process."""
        deadline = time.monotonic() + timeout
        while not (path.exists() and path.read_text().endswith("\n")):
            if time.monotonic() > deadline:
                raise AssertionError(f"no pid in {path}: the remote command never started")
            time.sleep(0.02)
        pid = int(path.read_text())
        stat = _proc_stat(pid)
        return cls(pid, stat[19] if stat else "")  # fields after "(comm)" start at field 3

    def running(self) -> bool:
        """Whether it still runs: a zombie (killed, not yet reaped) does not count."""
        stat = _proc_stat(self.pid)
        return stat is not None and stat[19] == self.start_time and stat[0] not in "ZX"

    def gone_within(self, timeout: float = 10.0) -> bool:
        """Wait up to ``timeout`` s for it to end (a kill takes effect when it is scheduled)."""
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


@dataclass(frozen=True)
class ClientKey:
    """The throwaway user key every test host accepts."""

    path: Path
    public: str  # the ``.pub`` line

    @classmethod
    def create(cls, directory: Path) -> ClientKey:
        path = directory / "id_ed25519"
        keygen(path, "opsroom-tests")
        return cls(path=path, public=path.with_suffix(".pub").read_text().strip())


class SSHDHost:
    """One sshd instance: a host named ``name`` listening on 127.0.0.1:``port``."""

    address = "127.0.0.1"

    def __init__(self, name: str, directory: Path, client_key: ClientKey, port: int = 0) -> None:
        self.name = name
        self.dir = directory
        self.client_key = client_key
        self.port = port
        self.user = getpass.getuser()
        self.bin_dir = directory / "bin"
        self.units_dir = directory / "units"
        self.log_path = directory / "sshd.log"
        self.host_key_path = directory / "ssh_host_ed25519_key"
        self._process: subprocess.Popen[bytes] | None = None
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.units_dir.mkdir(exist_ok=True)
        systemctl = self.bin_dir / "systemctl"
        systemctl.write_text(_SYSTEMCTL.format(dir=directory, name=name))
        systemctl.chmod(0o755)
        (directory / "authorized_keys").write_text(client_key.public + "\n")
        keygen(self.host_key_path, f"host-{name}")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start sshd and wait until it answers with an SSH banner. A port of 0 picks a free
        one (retrying if another process takes it first)."""
        pick = self.port == 0
        for _ in range(5):
            if pick:
                self.port = free_port()
            self._write_config()
            log = self.log_path.open("ab")
            self._process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.dir / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
            log.close()
            if self._wait_ready(timeout):
                return
            self.stop()
            if not pick:
                break
        raise SSHDUnavailable(
            f"sshd for {self.name} did not start on port {self.port}; log:\n{self.log_text()}"
        )

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def regenerate_host_key(self) -> None:
        """Give the host a new host key (it takes effect at the next :meth:`start`)."""
        self.host_key_path.unlink()
        self.host_key_path.with_suffix(".pub").unlink()
        keygen(self.host_key_path, f"host-{self.name}")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> None:
        path = f"{self.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        (self.dir / "sshd_config").write_text(
            f"""\
Port {self.port}
ListenAddress {self.address}
HostKey {self.host_key_path}
PidFile {self.dir / "sshd.pid"}
AuthorizedKeysFile {self.dir / "authorized_keys"}
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PrintMotd no
LogLevel INFO
MaxStartups 100:30:200
MaxSessions 64
SetEnv PATH={path} HOME={self.dir} OPSROOM_TEST_HOST={self.name}
"""
        )

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with socket.create_connection((self.address, self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.02)
        return False

    # -- what tests look at ------------------------------------------------------------------

    def known_hosts_line(self) -> str:
        """This host's key in known_hosts format (``[127.0.0.1]:port type base64``)."""
        keytype, b64 = self.host_key_path.with_suffix(".pub").read_text().split()[:2]
        return f"[{self.address}]:{self.port} {keytype} {b64}\n"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def accepted_logins(self) -> int:
        """How many logins sshd accepted so far (one per TCP connection that authenticated)."""
        return self.log_text().count("Accepted publickey")

    def systemctl_calls(self) -> list[list[str]]:
        """The stand-in systemctl's calls on this host, oldest first, as argv lists."""
        path = self.dir / "systemctl.calls"
        if not path.exists():
            return []
        return [line.split("\t")[:-1] for line in path.read_text().splitlines()]

    def set_unit(self, unit: str, *, active: bool = True, fail: bool = False) -> None:
        """Preset a unit's state; ``fail`` makes its start/restart exit 1."""
        (self.units_dir / unit).write_text("active\n" if active else "inactive\n")
        marker = self.units_dir / f"{unit}.fail"
        if fail:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)

    def unit_state(self, unit: str) -> str:
        path = self.units_dir / unit
        return path.read_text().strip() if path.exists() else "inactive"

    def set_delay(self, seconds: float) -> None:
        """Make every stand-in systemctl call sleep ``seconds`` first (0 removes the delay)."""
        path = self.dir / "delay"
        if seconds:
            path.write_text(f"{seconds}\n")
        else:
            path.unlink(missing_ok=True)

    def reset(self) -> None:
        """Forget recorded calls, unit states and the delay (between tests)."""
        (self.dir / "systemctl.calls").unlink(missing_ok=True)
        (self.dir / "delay").unlink(missing_ok=True)
        shutil.rmtree(self.units_dir, ignore_errors=True)
        self.units_dir.mkdir()

    def __repr__(self) -> str:
        return f"SSHDHost({self.name!r}, port={self.port})"


class SSHDPool:
    """Hosts started on demand and kept until :meth:`close`, so tests share them."""

    def __init__(self, root: Path | None = None) -> None:
        reason = sshd_unavailable_reason()
        if reason:
            raise SSHDUnavailable(reason)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="opsroom-sshd-")
            root = Path(self._tmp.name)
        self.root = root
        self.client_key = ClientKey.create(self.root)
        self._hosts: list[SSHDHost] = []
        self._hosts_extra: list[SSHDHost] = []

    def hosts(self, n: int) -> list[SSHDHost]:
        """The first ``n`` pool hosts (``host01``, ``host02``, ...), starting any not yet up."""
        while len(self._hosts) < n:
            name = f"host{len(self._hosts) + 1:02d}"
            host = SSHDHost(name, self.root / name, self.client_key)
            host.start()
            self._hosts.append(host)
        for host in self._hosts[:n]:
            if not host.running:
                host.start()
        return self._hosts[:n]

    def new_host(self, name: str | None = None) -> SSHDHost:
        """A host outside the shared pool (for tests that stop or re-key it); closed with the
        pool, but the caller may stop it earlier."""
        name = name or f"extra{len(self._hosts_extra) + 1:02d}"
        host = SSHDHost(name, self.root / name, self.client_key)
        host.start()
        self._hosts_extra.append(host)
        return host

    def known_hosts_text(self, hosts: list[SSHDHost] | None = None) -> str:
        return "".join(h.known_hosts_line() for h in (hosts if hosts is not None else self._hosts))

    def close(self) -> None:
        for host in [*self._hosts, *self._hosts_extra]:
            host.stop()
        self._hosts.clear()
        self._hosts_extra.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
