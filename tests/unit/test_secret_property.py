"""No piece of a secret survives a length limit (issue 9, item 1).

Every kind of secret (a configured value, and a sample of each built-in pattern of
bot/redaction.py) is planted at every offset around every length limit on the way to chat and
to the audit log: the store's own bounds, the runtime's MAX_RESULT_CHARS, Mattermost's post
limit and its splitter. No fragment of 4 or more characters of the secret may be left in any
output: scrub_and_cut, the stored record, the JSONL and CSV exports, the raw bytes of the
data directory. Ordinary text (paths, sentences, refusal reasons) must pass unchanged.
Deterministic and exhaustive over the offsets, rather than sampled.
"""

import io
import re

import pytest

from bot.mattermost.splitting import MATTERMOST_MAX_POST_LENGTH, split_message
from bot.redaction import Redactor
from bot.runtime.audit import (
    FILENAME,
    MAX_FIELD_CHARS,
    MAX_OUTCOME_CHARS,
    MAX_PARAMETER_CHARS,
    AuditStore,
)
from bot.runtime.audit_cli import write_csv, write_jsonl
from bot.runtime.runtime import MAX_RESULT_CHARS

CONFIGURED = "Zq9-conf1gured-S3cret-vAlue-77"  # 30 characters, as in the report

# (kind, planted text, the secret in it). No secret shares a 4-character piece with the
# labels, the mask, the cut marker or the filler, and none has 4 hex digits in a row (the
# database is full of hashes).
SECRETS = [
    ("configured value", f"DEPLOY_KEY_VALUE {CONFIGURED}", CONFIGURED),
    (
        "private key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpQIBAAKCAQEAzq9xWvTy\n-----END RSA PRIVATE KEY-----",
        "MIIEpQIBAAKCAQEAzq9xWvTy",
    ),
    ("authorization header", "Authorization: Bearer Zk4vQ9wLx2mNpRtS", "Zk4vQ9wLx2mNpRtS"),
    ("bare bearer", "sent Bearer Yj7uP3qKz8wMxNvL to api", "Yj7uP3qKz8wMxNvL"),
    ("url password", "postgres://app:Hq7pW2zKx9yTuV@db/app", "Hq7pW2zKx9yTuV"),
    ("labelled value", "DB_PASSWORD=Gw8rT5yUi2oPzXq", "Gw8rT5yUi2oPzXq"),
    ("command-line flag", "mysql --password Ns6kL9jHg3zXwQ -h db", "Ns6kL9jHg3zXwQ"),
    ("mattermost token", "token kq7wz2mx9pr4tv8ny3hs6jl5gu", "kq7wz2mx9pr4tv8ny3hs6jl5gu"),
    ("aws key id", "id AKIAZ7Q2M4K9P3W8R5T6 set", "AKIAZ7Q2M4K9P3W8R5T6"),
    (
        "github token",
        "use ghp_Zq9WkLmPQRstUVwxNy7MzKjHgTsRqPwXvYuT now",
        "ghp_Zq9WkLmPQRstUVwxNy7MzKjHgTsRqPwXvYuT",
    ),
    (
        "github fine-grained token",
        "github_pat_11ZQ9WKLMPQRSTUVWXNY7MZKJHGTSRQPWXVYUTzqwy",
        "github_pat_11ZQ9WKLMPQRSTUVWXNY7MZKJHGTSRQPWXVYUTzqwy",
    ),
    ("slack token", "slack xoxb-Zq9WkLmPQRstUVwx-Ny7M ok", "xoxb-Zq9WkLmPQRstUVwx-Ny7M"),
]
FILL = " ."  # ordinary text: ends every unquoted value, shares nothing with a secret
MARGIN = 24  # longer than the cut marker


def fragments(secret: str) -> set[str]:
    return {secret[i : i + 4] for i in range(len(secret) - 3)}


def leaks(secret: str, output: str) -> list[str]:
    return sorted(f for f in fragments(secret) if f in output)


def planted(text: str, offset: int, total: int) -> str:
    """``text`` starting at ``offset`` in filler, ``total`` characters long at least."""
    head = (FILL * (offset // 2 + 1))[:offset]
    tail_len = max(0, total - offset - len(text))
    return head + text + (FILL * (tail_len // 2 + 1))[:tail_len]


def offsets(limit: int, text: str) -> range:
    """Every start that puts the text across ``limit`` or across the cut marker before it,
    and a few either side."""
    return range(max(0, limit - len(text) - MARGIN), limit + 4)


@pytest.fixture(scope="module")
def redactor():
    return Redactor([CONFIGURED])


def test_the_secrets_cannot_collide_with_hashes_or_fixed_text():
    for _, text, secret in SECRETS:
        assert secret in text
        for fragment in fragments(secret):
            assert not re.fullmatch(r"[0-9a-f]{4}", fragment), fragment
            assert fragment not in "[REDACTED]… [cut 1234567890 chars] ." + FILL


def test_cutting_before_scrubbing_leaks_which_is_why_the_order_matters(redactor):
    """The bug of the report: cut to MAX_RESULT_CHARS, then scrubbed."""
    text = planted(CONFIGURED, MAX_RESULT_CHARS - 26, MAX_RESULT_CHARS + 100)
    assert len(leaks(CONFIGURED, redactor.scrub(text[:MAX_RESULT_CHARS]))) >= 20
    token = SECRETS[9][2]
    text = planted(token, MAX_RESULT_CHARS - 20, MAX_RESULT_CHARS + 100)
    assert leaks(token, redactor.scrub(text[:MAX_RESULT_CHARS]))  # too short for its pattern


LIMITS = [MAX_FIELD_CHARS, MAX_RESULT_CHARS, MAX_OUTCOME_CHARS, MATTERMOST_MAX_POST_LENGTH]


@pytest.mark.parametrize(("kind", "text", "secret"), SECRETS, ids=[s[0] for s in SECRETS])
def test_scrub_and_cut_and_split_leave_no_piece_at_any_offset(redactor, kind, text, secret):
    for limit in LIMITS:
        for offset in offsets(limit, text):
            source = planted(text, offset, limit + 40)
            out = redactor.scrub_and_cut(source, limit)
            assert len(out) <= limit
            assert not leaks(secret, out), (kind, limit, offset, out[-80:])
            for chunk in split_message(redactor.scrub(source), limit):
                assert not leaks(secret, chunk), (kind, limit, offset)


@pytest.mark.parametrize(("kind", "text", "secret"), SECRETS, ids=[s[0] for s in SECRETS])
def test_the_store_keeps_no_piece_in_records_exports_or_bytes(
    tmp_path, redactor, kind, text, secret
):
    """The store is handed raw text (as if a caller forgot to scrub) and text the runtime
    bounded to MAX_RESULT_CHARS; it scrubs before it bounds every field."""
    path = tmp_path / FILENAME
    store = AuditStore(path, redact=redactor.scrub_obj)
    records = []
    for step in range(len(text) + MARGIN + 4):
        outcome = planted(
            text, MAX_OUTCOME_CHARS - len(text) - MARGIN + step, MAX_OUTCOME_CHARS + 40
        )
        result = planted(text, MAX_RESULT_CHARS - len(text) - MARGIN + step, MAX_RESULT_CHARS + 40)
        field = planted(text, MAX_FIELD_CHARS - len(text) - MARGIN + step, MAX_FIELD_CHARS + 40)
        param = planted(
            text, MAX_PARAMETER_CHARS - len(text) - MARGIN + step, MAX_PARAMETER_CHARS + 9
        )
        records.append(
            store.append(
                "failed",
                action="deploy",
                target=field,
                actor_name=field,
                parameters={"args": param, "list": [param]},
                outcome=outcome,
                correlation_id=f"C-{step}",
                job_id=f"J-{step}",
            )
        )
        records.append(
            store.append(
                "succeeded",
                action="deploy",
                outcome=redactor.scrub_and_cut(result, MAX_RESULT_CHARS),
                correlation_id=f"C-{step}",
            )
        )
    for record in records:
        assert not leaks(secret, record.to_json()), (kind, record.id)
        assert len(record.outcome) <= MAX_OUTCOME_CHARS
        assert len(record.target) <= MAX_FIELD_CHARS
        assert store.get(record.id) == record
    jsonl, csv = io.StringIO(), io.StringIO()
    write_jsonl(store.since(None), jsonl)
    write_csv(store.since(None), csv)
    assert not leaks(secret, jsonl.getvalue())
    assert not leaks(secret, csv.getvalue())
    assert store.verify().ok
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"[REDACTED]" in raw  # the secret was there to scrub
    assert not [f for f in fragments(secret) if f.encode() in raw], kind


ORDINARY = [
    "invalid lines '/etc/passwd': must match ^[0-9]{1,4}$",
    "cat: /etc/passwd: Permission denied",
    "/run/secrets/db_token: no such file",
    "unknown host web-9 in prod; did you mean web-1?",
    "request R-12 is already granted",
    "you cannot approve your own request",
    "Deployed web to prod in 42 s; 3 pods restarted.",
    "The password policy requires 12 characters and a password manager.",
    "Rotate the token before Friday.",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b (HEAD -> main)",
    "see https://example.com:8443/path?q=1&page=2 and https://bob@example.com/x",
    "C:\\ops\\keys\\secret: access denied",
    "/var/lib/opsroom/api_key: 0600 root root",
    "restart nginx on web-1, web-2 — «ok» ✓",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_passes_unchanged(tmp_path, redactor, text):
    assert redactor.scrub(text) == text
    assert redactor.scrub_and_cut(text, MAX_RESULT_CHARS) == text
    with AuditStore(tmp_path / FILENAME, redact=redactor.scrub_obj) as store:
        record = store.append(
            "denied", action="tail", target=text, outcome=text, correlation_id="c"
        )
        assert (record.outcome, record.target) == (text, text)
