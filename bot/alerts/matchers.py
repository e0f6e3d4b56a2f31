"""Label matchers as Alertmanager writes them: ``name=value``, ``name!=value``,
``name=~regex``, ``name!~regex`` (the value optionally in double quotes). Regular
expressions are anchored, as in Alertmanager."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str  # "=", "!=", "=~", "!~"
    value: str

    @property
    def is_regex(self) -> bool:
        return self.op in ("=~", "!~")

    @property
    def is_equal(self) -> bool:
        return self.op in ("=", "=~")

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.is_regex:
            found = re.fullmatch(self.value, actual) is not None
        else:
            found = actual == self.value
        return found if self.is_equal else not found

    def api(self) -> dict[str, Any]:
        """As Alertmanager's API v2 takes it (a silence's matcher)."""
        return {
            "name": self.name,
            "value": self.value,
            "isRegex": self.is_regex,
            "isEqual": self.is_equal,
        }

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def parse_matcher(text: str) -> Matcher:
    """``'severity=~"crit.*"'`` -> Matcher; raises ValueError saying what is expected."""
    found = _MATCHER.match(text)
    if not found:
        raise ValueError(
            f"{text!r} is not a matcher: expected name=value, name!=value, name=~regex "
            "or name!~regex"
        )
    name, op, value = found.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{text!r}: bad regular expression: {exc}") from None
    return Matcher(name, op, value)


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
