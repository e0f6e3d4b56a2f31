import logging
from collections import namedtuple

import pytest

from bot.redaction import MASK, RedactingFilter, Redactor, install, is_secret_key


def test_secret_values_are_scrubbed_from_messages_args_and_tracebacks(caplog):
    logger = logging.getLogger("test.redaction")
    handler = logging.Handler()
    records = []
    handler.emit = lambda record: records.append(handler.format(record))
    logger.addHandler(handler)
    install(["tok-123456"], logger)
    logger.error("token is %s", "tok-123456")
    try:
        raise RuntimeError("bad tok-123456")
    except RuntimeError:
        logger.exception("failed")
    logger.removeHandler(handler)
    text = "\n".join(records)
    assert "tok-123456" not in text
    assert text.count(MASK) >= 2


# (input, expected output): every built-in pattern, with the context that must survive.
POSITIVE = [
    ("Authorization: Bearer abc.def-ghi", f"Authorization: Bearer {MASK}"),
    ('curl -H "Authorization: Basic dXNlcjpwYXNz" x', f'curl -H "Authorization: Basic {MASK}" x'),
    (
        '{"Authorization": "Bearer eyJhbGciOiJI.eyJzdWIi.sig"}',
        f'{{"Authorization": "Bearer {MASK}"}}',
    ),
    ("{'authorization': 'token abc'}", f"{{'authorization': 'token {MASK}'}}"),
    ("sent Bearer eyJhbGciOiJIUzI1NiJ9.abc to api", f"sent Bearer {MASK} to api"),
    (
        "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\nAbC=\n"
        "-----END RSA PRIVATE KEY-----\ndone",
        f"key:\n-----BEGIN RSA PRIVATE KEY-----\n{MASK}\n-----END RSA PRIVATE KEY-----\ndone",
    ),
    (
        "-----BEGIN EC PRIVATE KEY-----MHcCAQEEIB-----END EC PRIVATE KEY-----",
        f"-----BEGIN EC PRIVATE KEY-----{MASK}-----END EC PRIVATE KEY-----",
    ),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----",
        f"-----BEGIN OPENSSH PRIVATE KEY-----\n{MASK}\n-----END OPENSSH PRIVATE KEY-----",
    ),
    (
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHzBJBgkqhk\n"
        "-----END ENCRYPTED PRIVATE KEY-----",
        f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{MASK}\n-----END ENCRYPTED PRIVATE KEY-----",
    ),
    (  # output cut off in the middle of a key
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
        f"-----BEGIN PRIVATE KEY-----\n{MASK}\n",
    ),
    ("postgres://app:hunter2@db:5432/app", f"postgres://app:{MASK}@db:5432/app"),
    ("redis://:p@ss@cache:6379/0", f"redis://:{MASK}@cache:6379/0"),
    ("GET /login?user=bob&password=hunter2&next=/", f"GET /login?user=bob&password={MASK}&next=/"),
    ("/cb?access_token=abc123&state=x", f"/cb?access_token={MASK}&state=x"),
    ("/x?pwd=abc&apikey=def&api_key=ghi", f"/x?pwd={MASK}&apikey={MASK}&api_key={MASK}"),
    ("DB_PASSWORD=hunter2", f"DB_PASSWORD={MASK}"),
    ("export PASSWD=hunter2 SECRET=s3", f"export PASSWD={MASK} SECRET={MASK}"),
    ("password: hunter2", f"password: {MASK}"),
    ("  token:   abc  # yaml", f"  token:   {MASK}  # yaml"),
    ('{"password": "hu\\"nter 2", "user": "bob"}', f'{{"password": "{MASK}", "user": "bob"}}'),
    ("{'secret': 'x y', 'n': 1}", f"{{'secret': '{MASK}', 'n': 1}}"),
    ("Server=db;Password=Sup3r;Database=x", f"Server=db;Password={MASK};Database=x"),
    ("mysql --password hunter2 -h db", f"mysql --password {MASK} -h db"),
    ("AKIAIOSFODNN7EXAMPLE", MASK),
    ("id=ASIAY34FZKBOKMUTVV7A,", f"id={MASK},"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCY", f"aws_secret_access_key = {MASK}"),
    ('"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG"', f'"SecretAccessKey": "{MASK}"'),
    ("use ghp_abcdefghijklmnopqrstuvwxyz0123456789 now", f"use {MASK} now"),
    ("gho_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", MASK),
    ("ghs_abcdefghijklmnopqrstuvwxyz0123456789", MASK),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzAB", MASK),
    ("slack xoxb-1234567890-0987654321-AbCdEfGhIjKl ok", f"slack {MASK} ok"),
    ("xoxp-1234567890-abcdef", MASK),
    ("mattermost token 8xk3j9q7wpbf3n1u6ds5ycm4ra", f"mattermost token {MASK}"),
    ("OPSROOM_MATTERMOST_TOKEN=8xk3j9q7wpbf3n1u6ds5ycm4ra", f"OPSROOM_MATTERMOST_TOKEN={MASK}"),
    # a path's last component is a file name, not a label; a real label after it still counts
    ("/etc/passwd: password=hunter2 x", f"/etc/passwd: password={MASK} x"),
    ("a config.password=hunter2", f"a config.password={MASK}"),
]


@pytest.mark.parametrize(("text", "expected"), POSITIVE)
def test_builtin_patterns_mask_the_secret_and_keep_the_context(text, expected):
    assert Redactor().scrub(text) == expected


NEGATIVE = [
    "Deployed web to prod in 42 s; 3 pods restarted.",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b (HEAD -> main)",
    "request 550e8400-e29b-41d4-a716-446655440000 done",
    "web-7d9f8c6b5-x2k4q   1/1   Running   0   4d   10.0.3.7   node-2",
    "user id 8xk3j9q7wpbf3n1u6ds5ycm4ra posted in channel 4yq1tb3kzjgzbm5jzmtbcg3e1w",
    "see https://example.com:8443/path?q=1&page=2 and https://bob@example.com/x",
    "git@github.com:org/repo.git",
    "The password policy requires 12 characters and a password manager.",
    "Use your token to log in; tokens expire after a day. Token rotation is weekly.",
    "Bearer authentication is required for the API.",
    "kubectl get secret db-creds -o yaml; secretName mounted",
    "PWD=/home/ops OLDPWD=/tmp",
    "base64 blob QUtJQUlPU0ZPRE5ON0VYQU1QTEVYWFhYWFhY and XAKIAIOSFODNN7EXAMPLE",
    "if token == expected:",
    'password=""',
]


@pytest.mark.parametrize("text", NEGATIVE)
def test_ordinary_text_is_left_untouched(text):
    assert Redactor().scrub(text) == text


def test_configured_values_are_masked_longest_first_and_short_ones_ignored():
    redactor = Redactor(["abc", "s3cr3t", "s3cr3t-long"])
    assert redactor.scrub("x s3cr3t-long y s3cr3t abc") == f"x {MASK} y {MASK} abc"


def test_scrub_is_idempotent():
    redactor = Redactor(["hunter2"])
    once = redactor.scrub("password=hunter2 Authorization: Bearer x1 postgres://a:b@c")
    assert redactor.scrub(once) == once


def test_is_secret_key_matches_spellings_of_secret_keys():
    for key in ["password", "DB_PASSWORD", "passwd", "client-secret", "X-Auth-Token", "apiKey"]:
        assert is_secret_key(key), key
    for key in ["api_key", "aws_access_key", "private_key", "Authorization"]:
        assert is_secret_key(key), key
    for key in ["user", "host", "namespace", "replicas", "key_name"]:
        assert not is_secret_key(key), key


def test_scrub_obj_walks_nested_data_and_masks_secret_keys_entirely():
    Point = namedtuple("Point", "host secret")
    data = {
        "host": "db1",
        "password": {"nested": "anything"},
        "api_key": 12345,
        "token": None,
        "args": ["--password=hunter2", "-v", "postgres://u:pw@db"],
        "env": ("A=1", "SECRET=abc"),
        "point": Point("web", "xyz"),
        "notes": "rotated with s3cr3t-value",
        "count": 3,
    }
    out = Redactor(["s3cr3t-value"]).scrub_obj(data)
    assert out == {
        "host": "db1",
        "password": MASK,
        "api_key": MASK,
        "token": None,
        "args": [f"--password={MASK}", "-v", f"postgres://u:{MASK}@db"],
        "env": ("A=1", f"SECRET={MASK}"),
        "point": Point("web", "xyz"),
        "notes": f"rotated with {MASK}",
        "count": 3,
    }
    assert isinstance(out["point"], Point)
    assert data["password"] == {"nested": "anything"}  # the input is not modified


def _capture(logger_name: str, secrets=()):
    logger = logging.getLogger(logger_name)
    logger.propagate = False
    handler = logging.Handler()
    lines: list[str] = []
    handler.emit = lambda record: lines.append(handler.format(record))
    handler.addFilter(RedactingFilter(secrets))
    logger.addHandler(handler)
    return logger, lines


def test_log_filter_applies_patterns_and_catches_secrets_split_across_args():
    logger, lines = _capture("test.redaction.split", ["tok-123456"])
    logger.warning("password=%s%s user=%s", "hun", "ter2", "bob")
    logger.warning("token %s%s", "tok-", "123456")
    logger.warning("url %s:%s@%s", "postgres://app", "pw", "db")
    assert lines == [
        f"password={MASK} user=bob",
        f"token {MASK}",
        f"url postgres://app:{MASK}@db",
    ]


def test_log_filter_scrubs_exception_text_and_bad_format_args():
    logger, lines = _capture("test.redaction.exc")
    try:
        raise ValueError("connect failed: postgres://app:hunter2@db/app")
    except ValueError:
        logger.exception("job failed with Authorization: Bearer abcdef123")
    logger.warning("two args %s %s", "api_key=zzz")  # does not fit the format
    text = "\n".join(lines)
    assert "hunter2" not in text and "abcdef123" not in text and "zzz" not in text
    assert "Traceback" in text and "ValueError" in text
    # message, the traceback's source line and exception line, the unformattable args
    assert text.count(MASK) == 4
