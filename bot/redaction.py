"""Keep secrets out of log output, chat replies and audit records.

A :class:`Redactor` removes two kinds of secret from text:

- the exact values the bot was configured with (its own tokens and passwords), and
- secrets it was never told about but that turn up in command output, URLs and logs:
  bearer tokens, private key blocks, passwords in URLs, ``password=``-style pairs, AWS,
  GitHub and Slack tokens.

Every match becomes ``[REDACTED]`` and the context around it stays (``password=[REDACTED]``,
``postgres://app:[REDACTED]@db``) so that the output still says what was there.

The patterns lean towards over-redaction where a secret's end is ambiguous: an unquoted
value runs to the next whitespace, quote, ``&``, ``;``, ``,`` or ``}``, so a password that
itself contains one of those characters is cut there, and a quoted one should be quoted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

MASK = "[REDACTED]"
MIN_SECRET_LENGTH = 4

T = TypeVar("T")

# Parts of a mapping key that mark its value as secret, compared after lower-casing and
# dropping "_", "-", "." and spaces (so "API-Key", "apiKey" and "api_key" all match).
_SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "privatekey",
    "authorization",
)
_KEY_NOISE = re.compile(r"[_\-. ]")

# A labelled value: "quoted with escapes", 'quoted', or bare up to a delimiter.
_VALUE = r"""(?P<val>"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s"'&;,}]+)"""


# The run of characters a label's word is part of: "DB_PASSWORD", "config.password".
_LABEL_CHARS = re.compile(r"[\w.\-]*\Z")


def _in_path(match: re.Match[str]) -> bool:
    """True if the matched label is the last component of a path (``/etc/passwd``,
    ``/run/secrets/db_token``, ``C:\\keys\\secret``): a file name, not a label."""
    start = match.start("key")
    before = match.string[max(0, start - 200) : start]
    lead = _LABEL_CHARS.search(before)
    head = before[: lead.start()] if lead else before
    return head.endswith(("/", "\\"))


def _mask_value(match: re.Match[str]) -> str:
    """Keep the label and separator of a match, and the quotes around a quoted value.

    A "label" that is the last component of a path is left alone: in ``'/etc/passwd':
    must match ^[0-9]{1,4}$`` the word after the colon is a message, not a password."""
    value = match.group("val")
    if _in_path(match):
        # The value may still hold a real label ("/etc/passwd: password=x"): scan it alone.
        return match.group("key") + match.group("sep") + match.re.sub(_mask_value, value)
    if len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]:
        value = value[0] + MASK + value[0] if len(value) > 2 else value
    else:
        value = MASK
    return match.group("key") + match.group("sep") + value


def _words(*words: str) -> str:
    """A case-insensitive alternation of ``words`` led by the class of their first letters.

    ``re`` skips ahead quickly to a leading character class, but tries a pattern that opens
    with a case-insensitive group at every position: about ten times slower on 1 MB.
    """
    firsts = sorted({c for w in words for c in (w[0].lower(), w[0].upper())})
    return f"(?=[{''.join(firsts)}])(?i:{'|'.join(words)})"


# (pattern, replacement, trigger substrings). A pattern runs only if one of its triggers
# occurs in the lower-cased text: most text contains none, and a substring test is far
# cheaper than a regex scan. Patterns open with a literal or a character class for the
# same reason (see _words). Order matters: the header pattern runs before the bare
# "Bearer" one; every pattern leaves "[REDACTED]", which the later ones at most mask again.
_Pattern = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str], tuple[str, ...]]
_PATTERNS: list[_Pattern] = [
    (  # PEM / OpenSSH / PGP private keys; a block cut off by truncated output runs to the end
        re.compile(
            r"(?P<begin>-----BEGIN (?P<kind>[A-Z0-9 ]*?)PRIVATE KEY(?: BLOCK)?-----)"
            r"(?P<body>.*?)(?P<end>-----END (?P=kind)PRIVATE KEY(?: BLOCK)?-----|\Z)",
            re.DOTALL,
        ),
        lambda m: (
            f"{m['begin']}\n{MASK}\n{m['end']}"
            if "\n" in m["body"]
            else f"{m['begin']}{MASK}{m['end']}"
        ),
        ("private key",),
    ),
    (  # Authorization: Bearer|Basic|Token ..., as a header, a JSON key or a Python dict key
        re.compile(
            "(?P<key>" + _words("authorization") + r"[\"']?[ \t]*[:=][ \t]*[\"']?"
            r"(?i:(?:bearer|basic|token|bot|apikey)[ \t]+)?)[^\s\"',;}]+"
        ),
        rf"\g<key>{MASK}",
        ("authorization",),
    ),
    (  # a bare "Bearer <token>": the token must look like one (8+ chars with a digit),
        # so that prose such as "Bearer authentication" is left alone
        re.compile("(?P<key>" + _words("bearer") + r"[ \t]+)(?=[\w\-.~+/]*\d)[\w\-.~+/]{8,}=*"),
        rf"\g<key>{MASK}",
        ("bearer",),
    ),
    (  # scheme://user:password@host; the password runs to the last "@" before the path
        re.compile(r"://(?P<user>[^\s:/@\"'<>]*):[^\s/\"'<>]+@"),
        rf"://\g<user>:{MASK}@",
        ("://",),
    ),
    (  # password=..., "token": "...", DB_PASSWORD=..., aws_secret_access_key = ...
        # (the shell's PWD=/path and OLDPWD=/path are a directory, not a password)
        re.compile(
            "(?!PWD=/)(?P<key>"
            + _words(
                "password",
                "passwd",
                "pwd",
                "token",
                "secret",
                r"api[_-]?key",
                r"access[_-]?key",
                r"private[_-]?key",
            )
            + r")(?P<sep>[\"']?[ \t]*[:=](?!=)[ \t]*)"
            + _VALUE
        ),
        _mask_value,
        ("pass", "pwd", "token", "secret", "key"),
    ),
    (  # command-line flags: --password xxx, --api-token "xxx"
        re.compile(
            r"(?P<key>--[A-Za-z0-9-]*(?i:password|passwd|token|secret|api-?key))"
            r"(?P<sep>[ \t]+)(?!-)" + _VALUE
        ),
        _mask_value,
        ("--",),
    ),
    (  # "token <26 lower-case alphanumerics>": a Mattermost token, only when labelled
        # (user, post and channel ids have the same shape and are not secret)
        re.compile("(?P<key>" + _words("token") + r"[ \t]+)[a-z0-9]{26}\b"),
        rf"\g<key>{MASK}",
        ("token",),
    ),
    (  # AWS access key ids (long-term AKIA, temporary ASIA), not inside a longer word
        re.compile(r"(?:AKIA|ASIA)(?<![A-Za-z0-9].{4})[A-Z0-9]{16}\b"),
        MASK,
        ("akia", "asia"),
    ),
    (  # GitHub tokens: personal, OAuth, user-to-server, server-to-server, refresh, fine-grained
        re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})\b"),
        MASK,
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    (  # Slack tokens: bot, user, app-level, legacy, refresh, workspace
        re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}"),
        MASK,
        ("xox",),
    ),
]


CUT_MARKER = "… [cut {n} chars]"


def cut(text: str, limit: int, marker: str = CUT_MARKER) -> str:
    """``text`` bounded to ``limit`` characters: when longer, its head and ``marker``
    (``{n}``: how many characters were dropped) fill exactly ``limit``.

    Call it on scrubbed text only (:meth:`Redactor.scrub_and_cut`): cutting first can leave
    a piece of a secret that no longer matches anything. A cut never splits ``[REDACTED]``.
    """
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    if len(text) <= limit:
        return text
    keep = limit
    while True:
        tail = marker.format(n=len(text) - keep)
        if keep + len(tail) <= limit or keep == 0:
            break
        keep = max(0, limit - len(tail))
    # A mask the cut would split goes whole.
    start = text.rfind(MASK, max(0, keep - len(MASK) + 1), keep + len(MASK) - 1)
    if start != -1 and start < keep < start + len(MASK):
        keep = start
        tail = marker.format(n=len(text) - keep)
    return (text[:keep] + tail)[:limit]


_ANY_TRIGGER = re.compile("|".join(re.escape(t) for _, _, ts in _PATTERNS for t in ts))


def is_secret_key(key: str) -> bool:
    """True if a mapping key names a secret (``password``, ``X-Auth-Token``, ``apiKey``...)."""
    normal = _KEY_NOISE.sub("", key.lower())
    return any(part in normal for part in _SECRET_KEY_PARTS)


class Redactor:
    """Scrub secrets from text and from nested data.

    ``secrets`` are exact values to remove wherever they appear; values shorter than
    four characters are ignored (masking every "abc" would destroy the output and hide
    nothing worth hiding). Instances are immutable and safe to share between threads.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so that a secret containing another is masked whole.
        self._secrets = sorted(
            {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True
        )

    def scrub(self, text: str) -> str:
        """Return ``text`` with configured secret values and known secret shapes masked."""
        if len(text) < MIN_SECRET_LENGTH:  # ids, flags, empty fields: nothing to find
            return text
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        lowered = text.lower()
        if not _ANY_TRIGGER.search(lowered):  # one scan instead of one per pattern
            return text
        for pattern, replacement, triggers in _PATTERNS:
            if any(t in lowered for t in triggers):
                text = pattern.sub(replacement, text)
        return text

    def with_secrets(self, secrets: Iterable[str]) -> Redactor:
        """A redactor that also masks ``secrets`` (values found secret at run time)."""
        extra = [s for s in secrets if s not in self._secrets]
        return self if not extra else Redactor([*self._secrets, *extra])

    def scrub_and_cut(self, text: str, limit: int, marker: str = CUT_MARKER) -> str:
        """Scrub ``text``, then bound it to ``limit`` characters (see :func:`cut`).

        The one safe order: a secret cut in half no longer matches its configured value or
        its pattern (a ``ghp_`` token shorter than 30 characters is not a token any more),
        so scrubbing after a cut lets most of it through.
        """
        return cut(self.scrub(text), limit, marker)

    def scrub_obj(self, obj: T) -> T:
        """Return a scrubbed copy of ``obj``; the input is never modified.

        Dicts, lists and tuples (named tuples included) are walked; every string in them,
        keys included, is scrubbed. The value of a key that names a secret
        (:func:`is_secret_key`) is replaced by ``[REDACTED]`` whatever its type, except
        ``None``, which reveals only that nothing is set. Other objects are returned as
        they are.
        """
        return self._walk(obj)

    def _walk(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return {
                self._walk(k): (
                    MASK
                    if isinstance(k, str) and is_secret_key(k) and v is not None
                    else self._walk(v)
                )
                for k, v in obj.items()
            }
        if isinstance(obj, list):
            return [self._walk(v) for v in obj]
        if isinstance(obj, tuple):
            items = [self._walk(v) for v in obj]
            return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
        return obj


class RedactingFilter(logging.Filter):
    """Scrub every log record's final message with a :class:`Redactor`.

    Filters run before formatting, so the record's message is rendered here once, scrubbed,
    and stored back with no arguments: a secret split across several arguments is caught
    once they are joined. Exception and stack text are scrubbed the same way.
    """

    def __init__(self, secrets: Iterable[str] = (), *, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # Arguments that do not fit the format: keep both, scrubbed, rather than let
            # logging's error report print the raw arguments.
            message = f"{record.msg} {record.args!r}"
        record.msg = self.redactor.scrub(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.scrub(record.stack_info)
        return True


def install(
    secrets: Iterable[str],
    logger: logging.Logger | None = None,
    extra_handlers: Iterable[logging.Handler] = (),
) -> RedactingFilter:
    """Attach a redacting filter to every handler of ``logger`` (default: the root logger)
    and to ``extra_handlers`` (handlers not attached yet). Safe to call again: a handler
    that already redacts is left alone."""
    target = logger or logging.getLogger()
    flt = RedactingFilter(secrets)
    for handler in [*target.handlers, *extra_handlers]:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
