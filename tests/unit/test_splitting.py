"""Tests for bot/mattermost/splitting.py."""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Iterator

import pytest

from bot.mattermost.splitting import MATTERMOST_MAX_POST_LENGTH, split_message

# --- an independent reference model of what the chunks must look like ---------------------------

_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_OPEN = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")


Fence = tuple[str, str]  # (opening line, closing line)


def _step(state: Fence | None, line: str) -> Fence | None:
    m = _OPEN.match(line)
    if not m:
        return state
    indent, run, info = m.groups()
    if state is None:
        return None if run[0] == "`" and "`" in info else (line, indent + run)
    run_open = state[1].lstrip(" ")
    closes = run[0] == run_open[0] and len(run) >= len(run_open) and not info.strip()
    return None if closes else state


def explains(text: str, chunks: list[str], limit: int) -> bool:
    """True if ``chunks`` are ``text`` cut into consecutive pieces, where

    * a cut between lines drops that newline, a cut inside a line drops nothing;
    * a chunk gets a closing fence line appended iff the original is inside a
      fence at the cut, and the next chunk then starts with that fence's
      opening line repeated -- unless the opening and closing lines together
      need more than half the limit (documented fallback);
    * whitespace after the last chunk may be missing (a blank post is dropped).

    Several readings of a chunk can be possible (an added closing fence looks
    like an original one), so this searches them all.
    """
    lines = text.split("\n")
    starts, before, after = [], [], []
    pos, state = 0, None
    for line in lines:
        starts.append(pos)
        before.append(state)
        state = _step(state, line)
        after.append(state)
        pos += len(line) + 1

    def rebalanced(pos: int) -> Fence | None:
        """Fence open at ``pos`` (a partial line does not count), if rebalanced."""
        k = bisect.bisect_right(starts, pos) - 1
        fence = after[k] if pos == starts[k] + len(lines[k]) else before[k]
        if fence and len(fence[0]) + len(fence[1]) + 2 <= limit // 2:
            return fence
        return None

    def readings(i: int, pos: int) -> Iterator[int]:
        """Positions in ``text`` where chunk ``i`` may end when it starts at ``pos``."""
        body_lines = chunks[i].split("\n")
        opened = rebalanced(pos) if i > 0 else None
        if opened:
            if body_lines[0] != opened[0]:
                return
            body_lines = body_lines[1:]
        last = i == len(chunks) - 1
        for closed in (False, True):
            if closed and not body_lines:
                continue
            body = "\n".join(body_lines[:-1] if closed else body_lines)
            end = pos + len(body)
            if not text.startswith(body, pos):
                continue
            cut = end < len(text)
            if last and cut and text[end:].strip():
                continue  # only trailing whitespace may be left over (dropped)
            if not last and not cut:
                continue
            open_at_end = rebalanced(end)
            if closed != (open_at_end is not None and cut):
                continue
            if closed and body_lines[-1] != open_at_end[1]:
                continue
            yield end

    stack, seen = [(0, 0)], set()
    while stack:
        i, pos = stack.pop()
        if (i, pos) in seen:
            continue
        seen.add((i, pos))
        for end in readings(i, pos):
            if i == len(chunks) - 1:
                return True
            stack.append((i + 1, end + 1 if text[end] == "\n" else end))
    return False


def fence_lines(chunk: str) -> int:
    return sum(1 for line in chunk.split("\n") if _FENCE_LINE.match(line))


def check(text: str, limit: int) -> list[str]:
    chunks = split_message(text, limit)
    assert all(len(c) <= limit for c in chunks), [len(c) for c in chunks]
    assert explains(text, chunks, limit), chunks
    return chunks


# --- examples --------------------------------------------------------------------------------


def test_default_limit_is_mattermost_max() -> None:
    assert MATTERMOST_MAX_POST_LENGTH == 16383
    assert split_message("x" * 16383) == ["x" * 16383]
    assert [len(c) for c in split_message("x" * 16384)] == [16383, 1]


@pytest.mark.parametrize("text", ["", "short", "a\nb\n", "```\nunclosed", "x" * 50])
def test_text_within_limit_is_returned_unchanged(text: str) -> None:
    result = split_message(text, 50)
    assert result == [text]
    assert result[0] is text


def test_invalid_limit() -> None:
    with pytest.raises(ValueError):
        split_message("abc", 0)


def test_splits_on_line_boundaries() -> None:
    text = "\n".join(f"line {i:02d}" for i in range(10))  # 7 chars per line
    chunks = check(text, 20)
    assert chunks == ["line 00\nline 01", "line 02\nline 03", "line 04\nline 05",
                      "line 06\nline 07", "line 08\nline 09"]  # fmt: skip


def test_long_line_is_hard_split() -> None:
    text = "head\n" + "y" * 45 + "\ntail"
    assert check(text, 20) == ["head", "y" * 20, "y" * 20, "y" * 5 + "\ntail"]


def test_open_fence_is_closed_and_reopened_with_language() -> None:
    code = "\n".join(f"print({i})" for i in range(6))  # 8 chars per line
    text = f"Result:\n```python\n{code}\n```\ndone"
    chunks = check(text, 40)
    assert chunks == [
        "Result:\n```python\nprint(0)\nprint(1)\n```",
        "```python\nprint(2)\nprint(3)\nprint(4)\n```",
        "```python\nprint(5)\n```\ndone",
    ]


def test_tilde_and_indented_long_fences_are_reopened_verbatim() -> None:
    text = "  ~~~~ yaml\n" + "\n".join(f"k{i}: v" for i in range(12)) + "\n  ~~~~"
    chunks = check(text, 50)
    assert len(chunks) > 2
    for chunk in chunks:
        lines = chunk.split("\n")
        assert lines[0] == "  ~~~~ yaml"
        assert lines[-1] == "  ~~~~"


def test_lines_that_look_like_fences_inside_a_fence() -> None:
    # ``` inside ~~~ is content, and ```python cannot close a ``` fence.
    text = "~~~\n```\n" + "a\n" * 10 + "~~~\n```\n" + "```python\n" * 10 + "```"
    chunks = check(text, 25)
    assert chunks[0].startswith("~~~\n```\n") and chunks[0].endswith("\n~~~")
    assert all(c.startswith("```") and c.endswith("```") for c in chunks[-3:])


def test_backticks_with_backtick_info_string_do_not_open_a_fence() -> None:
    text = "```inline``` code\n" + "\n".join(["abc"] * 40)
    chunks = check(text, 60)
    assert "\n".join(chunks) == text  # nothing was added


def test_hard_split_inside_fence_keeps_it_balanced() -> None:
    text = "```\n" + "z" * 100 + "\n```"
    chunks = check(text, 30)
    assert all(c.startswith("```\n") and c.endswith("\n```") for c in chunks)
    assert "".join(c[4:-4] for c in chunks) == "z" * 100


def test_unclosed_fence_at_end_stays_unclosed() -> None:
    text = "```sh\n" + "\n".join(["echo hi"] * 10)
    chunks = check(text, 40)
    assert all(c.startswith("```sh\n") for c in chunks)
    assert all(c.endswith("\n```") for c in chunks[:-1])
    assert chunks[-1].endswith("echo hi")


def test_fence_with_huge_info_string_is_not_rebalanced() -> None:
    # Repeating a 30-char opening line would eat most of a 40-char chunk.
    text = "```" + "x" * 27 + "\n" + "\n".join(["abc"] * 30) + "\n```"
    chunks = split_message(text, 40)
    assert all(len(c) <= 40 for c in chunks)
    assert "\n".join(chunks) == text  # plain line splitting


def test_realistic_log_dump_at_default_limit() -> None:
    log = "\n".join(f"12:00:{i % 60:02d} INFO worker-{i % 7} job {i} ok" for i in range(5000))
    text = "Deploy log:\n```text\n" + log + "\n```\nAll good."
    chunks = check(text, MATTERMOST_MAX_POST_LENGTH)
    assert len(chunks) > 5
    assert all(len(c) <= MATTERMOST_MAX_POST_LENGTH for c in chunks)
    assert all(fence_lines(c) % 2 == 0 for c in chunks)
    assert all(c.startswith("```text\n") for c in chunks[1:])


def test_unicode_is_counted_in_code_points() -> None:
    text = "é" * 30 + "\n" + "🚀" * 30
    assert check(text, 20) == ["é" * 20, "é" * 10, "🚀" * 20, "🚀" * 10]


# --- property-style tests --------------------------------------------------------------------

_WORDS = ["deploy", "ok", "", "rollback", "kubectl get pods", "  indented", "`inline`", "~", "``"]
_FENCES = ["```", "````", "~~~", "~~~~~"]
_LANGS = ["", "python", "yaml", " bash", "json {.numberLines}"]


def _random_text(rng: random.Random, limit: int) -> str:
    """Balanced markdown-ish text: prose, fenced blocks, blank lines, overlong lines."""
    lines: list[str] = []
    for _ in range(rng.randint(1, 60)):
        roll = rng.random()
        if roll < 0.25:
            indent = " " * rng.randint(0, 3)
            fence = rng.choice(_FENCES)
            lines.append(indent + fence + rng.choice(_LANGS))
            lines += [_random_line(rng, limit) for _ in range(rng.randint(0, 25))]
            lines.append(" " * rng.randint(0, 3) + fence + rng.choice(["", "`" * 0, "  "]))
        else:
            lines.append(_random_line(rng, limit))
    return "\n".join(lines) + rng.choice(["", "\n", "\n\n"])


def _random_line(rng: random.Random, limit: int) -> str:
    if rng.random() < 0.05:  # longer than a whole chunk
        return "".join(rng.choice("abc xyz") for _ in range(rng.randint(limit, 3 * limit)))
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 12)))


@pytest.mark.parametrize("seed", range(400))
def test_random_texts(seed: int) -> None:
    rng = random.Random(seed)
    # >= 80 so every generated fence (at most 36 chars of overhead) is rebalanced.
    limit = rng.randint(80, 400)
    text = _random_text(rng, limit)
    chunks = check(text, limit)  # limit + content preservation + fence placement
    if len(text) > limit:
        for chunk in chunks:
            assert fence_lines(chunk) % 2 == 0, chunk
            assert chunk.strip(), "whitespace-only post"
    else:
        assert chunks == [text]


@pytest.mark.parametrize("seed", range(200))
def test_random_small_limits(seed: int) -> None:
    """Some fences are now too long to rebalance; everything else must still hold."""
    rng = random.Random(5_000 + seed)
    check(_random_text(rng, limit := rng.randint(13, 79)), limit)


@pytest.mark.parametrize("seed", range(100))
def test_random_tiny_limits(seed: int) -> None:
    """Absurdly small limits: no fence is rebalanced, limit and content still hold."""
    rng = random.Random(10_000 + seed)
    check(_random_text(rng, limit := rng.randint(1, 12)), limit)


def test_trailing_blank_lines_do_not_become_an_empty_post() -> None:
    assert split_message("a" * 10 + "\n\n\n", 10) == ["a" * 10]
    # An unclosed fence followed by blank lines: the reopened fence is dropped too.
    assert split_message("```\n" + "a" * 8 + "\n" * 5, 16) == ["```\n" + "a" * 8 + "\n```"]


def test_blank_line_at_a_cut_does_not_become_an_empty_post() -> None:
    text = "a" * 10 + "\n\n" + "b" * 25
    chunks = check(text, 10)
    assert all(c.strip() for c in chunks)
    assert chunks == ["a" * 10, "\n" + "b" * 9, "b" * 10, "b" * 6]
