"""Split long messages into posts Mattermost accepts.

Mattermost rejects posts longer than 16383 characters (Unicode code points,
which is what ``len(str)`` counts).  :func:`split_message` cuts a long text
into chunks that each fit:

* Cuts happen between lines; the newline at a cut is dropped (each chunk is
  its own post).  A line that cannot fit in a chunk on its own is hard-split
  into pieces with nothing dropped.
* Code fences stay balanced: if a chunk ends inside a ```` ``` ```` / ``~~~``
  block, a closing fence line is appended to it and the next chunk starts by
  repeating the original opening line (same indentation, fence string and
  language tag), so every post renders as code.  The added lines count
  against the limit.

Fences are recognised with CommonMark's rules for top-level fences: up to
three spaces of indentation, three or more backticks or tildes, closed by a
line of the same character, at least as long, with nothing but whitespace
after it.  Fences nested in block quotes or lists are treated as text.  A
fence whose opening line is so long that repeating it would take more than
half a chunk is not re-balanced (the only way to keep making progress).
An unclosed fence at the very end of the input is left unclosed.  Trailing
blank lines that would end up alone in a last chunk are dropped: Mattermost
does not accept an empty post.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MATTERMOST_MAX_POST_LENGTH = 16383

_FENCE_RE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")


@dataclass(frozen=True)
class _Fence:
    opening: str  # the original opening line, repeated verbatim to reopen
    indent: str
    run: str  # the backticks or tildes, e.g. "````"

    @property
    def closing(self) -> str:
        return self.indent + self.run


def _fence_after(fence: _Fence | None, line: str) -> _Fence | None:
    """Return the fence open after ``line``, given the one open before it."""
    m = _FENCE_RE.match(line)
    if m is None:
        return fence
    indent, run, info = m.groups()
    if fence is None:
        if run[0] == "`" and "`" in info:
            return None  # e.g. ```inline``` is not a fence in CommonMark
        return _Fence(line, indent, run)
    closes = run[0] == fence.run[0] and len(run) >= len(fence.run) and not info.strip()
    return None if closes else fence


class _Splitter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[str] = []
        self.fence: _Fence | None = None  # fence open at the end of self.lines
        self._start()

    def _kept(self, fence: _Fence | None) -> _Fence | None:
        """The fence if it is re-balanced across cuts (see module docstring)."""
        if fence and len(fence.opening) + len(fence.closing) + 2 <= self.limit // 2:
            return fence
        return None

    def _tail(self, fence: _Fence | None) -> int:
        """Room to reserve for the closing line if a chunk ends inside ``fence``."""
        kept = self._kept(fence)
        return len(kept.closing) + 1 if kept else 0

    def _append(self, line: str) -> None:
        self.size += len(line) + (1 if self.lines else 0)
        self.lines.append(line)

    def _start(self) -> None:
        self.lines: list[str] = []
        self.size = 0  # == len("\n".join(self.lines))
        self.fresh = True  # nothing but a reopened fence and blank lines yet
        kept = self._kept(self.fence)
        if kept:
            self._append(kept.opening)

    def _flush(self) -> None:
        kept = self._kept(self.fence)
        if kept:
            self._append(kept.closing)
        self.chunks.append("\n".join(self.lines))
        self._start()

    def _room(self, tail: int) -> int:
        return self.limit - self.size - (1 if self.lines else 0) - tail

    def add_line(self, line: str) -> None:
        after = _fence_after(self.fence, line)
        if len(line) > self._room(self._tail(after)) and not self.fresh:
            self._flush()
        if len(line) > self._room(self._tail(after)):
            # Hard split, starting right after any blank lines already in the
            # chunk, so that they do not become a whitespace-only post.  Chunks
            # ending mid-line are still in the fence state from before the
            # line; only the last piece moves it to `after`.  Reserving the
            # larger tail for every piece keeps all chunks within the limit.
            tail = max(self._tail(self.fence), self._tail(after))
            while len(line) > (room := self._room(tail)):
                if room > 0:  # always true in a chunk without blank lines (see _kept)
                    self._append(line[:room])
                    line = line[room:]
                self._flush()
        self._append(line)
        self.fresh = self.fresh and not line.strip()
        self.fence = after

    def finish(self) -> list[str]:
        if not (self.fresh and self.chunks):
            self.chunks.append("\n".join(self.lines))
        # else: only trailing blank lines (and maybe a reopened fence) are left;
        # Mattermost rejects an empty post, so they are dropped.
        return self.chunks


def split_message(text: str, limit: int = MATTERMOST_MAX_POST_LENGTH) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters.

    Text that already fits (including the empty string) is returned as
    ``[text]`` unchanged.  Removing the fence lines added at the cuts and
    joining the chunks back with the newline dropped at each line-boundary
    cut (nothing at a hard split) gives back ``text`` (minus trailing blank
    lines that would have been a post of their own).  Raises ``ValueError``
    if ``limit`` < 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    if len(text) <= limit:
        return [text]
    splitter = _Splitter(limit)
    for line in text.split("\n"):
        splitter.add_line(line)
    return splitter.finish()
