"""HTTPS and WSS with a private CA: the case where mattermostdriver's websocket breaks."""

from __future__ import annotations

import datetime
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot.testing.fake_mattermost import FakeMattermost
from tests.e2e.harness import BotProcess, seed


def self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opsroom test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_mm(tmp_path):
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = FakeMattermost(ssl_context=context)
    server.start()
    yield server, cert
    server.stop()


def test_bot_works_over_https_and_wss_with_a_private_ca(tls_mm, tmp_path):
    mm, cert = tls_mm
    world = seed(mm)
    bot = BotProcess(mm.url, world.token, tmp_path / "data", MATTERMOST_CA_FILE=str(cert))
    bot.start()
    try:
        mm.post_as(world.alice, world.ops, "!echo over tls")
        (answer,) = mm.wait_for_posts(world.bot, 1, timeout=15)
        assert answer["message"] == "over tls"
        assert mm.url.startswith("https://")
    finally:
        assert bot.stop() == 0
    assert mm.contract_violations == []


def test_unknown_certificate_is_refused(tls_mm, tmp_path):
    mm, _cert = tls_mm
    world = seed(mm)
    bot = BotProcess(mm.url, world.token, tmp_path / "data")
    bot.start(wait=False)
    try:
        bot.wait_for_log("CERTIFICATE_VERIFY_FAILED", timeout=20)
        assert mm.posts_by(world.bot) == []
    finally:
        bot.stop()
