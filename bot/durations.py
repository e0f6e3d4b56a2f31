"""Durations as people write them in settings and YAML: ``90``, ``"90s"``, ``"10m"``."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: object) -> object:
    """Accept ``90``, ``"90s"``, ``"10m"``, ``"1.5h"`` (plain numbers are seconds).

    Anything else that is not a string or a number is returned unchanged, so that this
    works as a pydantic ``BeforeValidator`` in front of ``timedelta``.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 10m, 1h or a number of seconds")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("expected a duration such as 30s, 10m, 1h or a number of seconds")
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    return value
