"""Real Prometheus and Alertmanager (Debian's packages) on loopback, for the tests and the
benchmark, with their data in temporary folders and short intervals (an alert goes from a
scraped sample to a webhook in a few seconds). Also a target exporter the test controls.

Imports nothing from pytest; the fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
import yaml

from bot.testing.sshd import free_port

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"


class Unavailable(RuntimeError):
    """Prometheus or Alertmanager is not installed here."""


def unavailable_reason() -> str | None:
    missing = [name for name in (PROMETHEUS, ALERTMANAGER) if shutil.which(name) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not installed (make test installs Debian's prometheus "
            "and prometheus-alertmanager as root)"
        )
    return None


class _Process(ABC):
    name = ""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = directory / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line."""

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise Unavailable(f"{self.name} did not start:\n{self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None


class Alertmanager(_Process):
    """Alertmanager 0.25 posting every group to ``webhook`` with a bearer token file."""

    name = "alertmanager"

    def __init__(
        self,
        directory: Path,
        webhook: str,
        token: str,
        *,
        group_by: tuple[str, ...] = ("alertname",),
        max_alerts: int = 0,
    ) -> None:
        super().__init__(directory)
        token_file = directory / "token"
        token_file.write_text(token)
        webhook_config: dict[str, object] = {
            "url": webhook,
            "send_resolved": True,
            "max_alerts": max_alerts,
            "http_config": {
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)}
            },
        }
        config = {
            "route": {
                "receiver": "opsroom",
                "group_by": list(group_by),
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "opsroom", "webhook_configs": [webhook_config]}],
        }
        (directory / "alertmanager.yml").write_text(yaml.safe_dump(config))

    def command(self) -> list[str]:
        return [
            ALERTMANAGER,
            f"--config.file={self.dir / 'alertmanager.yml'}",
            f"--storage.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ]

    def post_alerts(self, alerts: list[dict[str, object]]) -> None:
        """Push alerts as Prometheus would (``POST /api/v2/alerts``)."""
        requests.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=10).raise_for_status()

    def silences(self) -> list[dict[str, object]]:
        return list(requests.get(f"{self.url}/api/v2/silences", timeout=10).json())


class Prometheus(_Process):
    """Prometheus scraping ``targets`` every second and evaluating ``rules`` every second,
    sending alerts to ``alertmanager`` without the default one-minute resend delay."""

    name = "prometheus"

    def __init__(
        self, directory: Path, targets: list[str], rules: list[dict[str, object]], alertmanager: str
    ) -> None:
        super().__init__(directory)
        (directory / "rules.yml").write_text(
            yaml.safe_dump({"groups": [{"name": "test", "interval": "1s", "rules": rules}]})
        )
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(directory / "rules.yml")],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}
                ]
            },
            "scrape_configs": [{"job_name": "services", "static_configs": [{"targets": targets}]}],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))

    def command(self) -> list[str]:
        return [
            PROMETHEUS,
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--rules.alert.resend-delay=1s",
        ]


class Exporter:
    """A target Prometheus scrapes: ``service_up{service, host}`` as the test sets it."""

    def __init__(self) -> None:
        self.up: dict[tuple[str, str], int] = {}
        self.scrapes = 0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                lines = ["# TYPE service_up gauge"] + [
                    f'service_up{{service="{s}",host="{h}"}} {v}'
                    for (s, h), v in sorted(exporter.up.items())
                ]
                body = ("\n".join(lines) + "\n").encode()
                exporter.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def set(self, service: str, host: str, up: bool) -> None:
        self.up[(service, host)] = int(up)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


SERVICE_DOWN_RULE = {
    "alert": "ServiceDown",
    "expr": "service_up == 0",
    "labels": {"team": "web", "severity": "critical"},
    "annotations": {"summary": "{{ $labels.service }} is down on {{ $labels.host }}"},
}


def start_service_down_stack(
    directory: Path, exporter: Exporter, bot_port: int, token: str, started: list[_Process]
) -> tuple[Alertmanager, Prometheus]:
    """Alertmanager posting to the bot's receiver ``am`` on ``bot_port`` with ``token``, and
    Prometheus scraping ``exporter`` with SERVICE_DOWN_RULE; both appended to ``started``
    (the fixture that stops them)."""
    am = Alertmanager(directory / "am", f"http://127.0.0.1:{bot_port}/alerts/am", token)
    am.start()
    started.append(am)
    prom = Prometheus(directory / "prom", [exporter.target], [SERVICE_DOWN_RULE], am.url)
    prom.start()
    started.append(prom)
    return am, prom
