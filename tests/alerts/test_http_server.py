"""The bot's one HTTP server: health, readiness, mounted handlers, TLS, a busy port."""

from __future__ import annotations

import socket
import subprocess

import pytest
import requests
from aiohttp import web

from bot.errors import ConfigurationError
from bot.http import HttpServer
from bot.settings import SettingsError, load_settings


@pytest.fixture
def server():
    s = HttpServer("127.0.0.1:0")
    s.start()
    yield s
    s.stop()


def test_healthz_answers_and_readyz_names_the_failing_check(server):
    assert requests.get(f"{server.url}/healthz", timeout=5).text == "ok\n"
    server.add_check("chat", lambda: None)
    assert requests.get(f"{server.url}/readyz", timeout=5).status_code == 200
    server.add_check("store", lambda: "alert store is read-only")
    answer = requests.get(f"{server.url}/readyz", timeout=5)
    assert answer.status_code == 503
    assert answer.json() == {
        "ready": False,
        "checks": {"chat": "ok", "store": "alert store is read-only"},
    }


def test_a_check_that_raises_is_a_failing_check(server):
    server.add_check("broken", lambda: 1 / 0)
    answer = requests.get(f"{server.url}/readyz", timeout=5)
    assert answer.status_code == 503
    assert answer.json()["checks"]["broken"] == "check failed: ZeroDivisionError"


def test_handlers_mount_after_start_and_other_paths_are_404_or_405(server):
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    assert requests.post(f"{server.url}/alerts/x", timeout=5).status_code == 404
    server.mount("POST", "/alerts/x", hello)
    assert requests.post(f"{server.url}/alerts/x", timeout=5).text == "hi"
    assert requests.get(f"{server.url}/alerts/x", timeout=5).status_code == 405
    server.unmount("POST", "/alerts/x")
    assert requests.post(f"{server.url}/alerts/x", timeout=5).status_code == 404


def test_a_busy_port_is_a_configuration_error_naming_the_setting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match="OPSROOM_HTTP_LISTEN: cannot listen"):
            HttpServer(f"127.0.0.1:{port}").start()


def test_tls(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    s = HttpServer("127.0.0.1:0", tls_cert=cert, tls_key=key)
    s.start()
    try:
        assert s.url.startswith("https://")
        assert requests.get(f"{s.url}/healthz", verify=str(cert), timeout=5).text == "ok\n"
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{s.port}/healthz", timeout=5)
    finally:
        s.stop()


def test_settings_validate_the_listen_address_and_the_tls_pair(tmp_path):
    assert load_settings().opsroom_http_listen == "127.0.0.1:8080"
    with pytest.raises(SettingsError, match=r"OPSROOM_HTTP_LISTEN: .*host:port"):
        load_settings(opsroom_http_listen="8080")
    with pytest.raises(SettingsError, match="go together"):
        load_settings(opsroom_http_tls_cert=tmp_path / "c.pem")
