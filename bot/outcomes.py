"""What actions and the runtime return: data, never chat text.

An action returns ``None`` (done, nothing to say), a ``str`` (one plain sentence or
preformatted text), a :class:`Table`, or an :class:`Outcome` (a summary line followed by
blocks: text, tables and preformatted output). A renderer per chat surface
(:mod:`bot.rendering`) turns these into Mattermost Markdown or aligned terminal text; the
audit log stores their plain-text form (:meth:`Outcome.plain`), bounded.

Example::

    return Outcome(
        "2 of 3 hosts restarted nginx",
        Table(("host", "result", "exit"), [("web1", "ok", 0), ("web2", "failed", 1)]),
        Code("Job for nginx.service failed ...", title="web2"),
    )
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeAlias

Cell: TypeAlias = str | int | float | None


@dataclass(frozen=True)
class Table:
    """Rows under headers. ``limit`` shows at most that many rows and says how many more
    there are; ``title`` is a short caption above the table."""

    headers: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...] = ()
    title: str = ""
    limit: int | None = None

    def __init__(
        self,
        headers: Sequence[str],
        rows: Iterable[Sequence[Cell]] = (),
        title: str = "",
        limit: int | None = None,
    ) -> None:
        object.__setattr__(self, "headers", tuple(headers))
        object.__setattr__(self, "rows", tuple(tuple(row) for row in rows))
        object.__setattr__(self, "title", title)
        object.__setattr__(self, "limit", limit)
        for row in self.rows:
            if len(row) != len(self.headers):
                raise ValueError(
                    f"row {row!r} has {len(row)} cells for {len(self.headers)} headers"
                )

    @property
    def shown(self) -> tuple[tuple[Cell, ...], ...]:
        return self.rows if self.limit is None else self.rows[: self.limit]

    @property
    def hidden(self) -> int:
        """How many rows ``limit`` leaves out."""
        return len(self.rows) - len(self.shown)


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text (rendered as is, never interpreted as Markup)."""

    text: str


@dataclass(frozen=True)
class Code:
    """Preformatted output (command output, logs), shown in a fixed-width block."""

    text: str
    title: str = ""


Block: TypeAlias = Text | Table | Code


@dataclass(frozen=True)
class Outcome:
    """A result: a one-line summary, then blocks in order."""

    summary: str = ""
    blocks: tuple[Block, ...] = field(default=())

    def __init__(self, summary: str = "", *blocks: Block) -> None:
        object.__setattr__(self, "summary", summary)
        object.__setattr__(self, "blocks", tuple(blocks))

    def map_text(self, fn: Callable[[str], str]) -> Outcome:
        """The same outcome with ``fn`` applied to every piece of text (redaction)."""

        def cell(value: Cell) -> Cell:
            return fn(value) if isinstance(value, str) else value

        blocks: list[Block] = []
        for block in self.blocks:
            if isinstance(block, Table):
                blocks.append(
                    Table(
                        [fn(h) for h in block.headers],
                        [[cell(v) for v in row] for row in block.rows],
                        fn(block.title),
                        block.limit,
                    )
                )
            else:
                blocks.append(replace(block, text=fn(block.text)))
        return Outcome(fn(self.summary), *blocks)

    def plain(self) -> str:
        """A plain-text form for logs and the audit store (rendered by the text renderer)."""
        from bot.rendering import TextRenderer  # the one table writer, also for the log

        return TextRenderer(width=None).outcome(self)


Result: TypeAlias = Outcome | Table | str | None


def as_outcome(value: object) -> Outcome:
    """Normalise what an action returned into an Outcome."""
    if value is None:
        return Outcome("")
    if isinstance(value, Outcome):
        return value
    if isinstance(value, Table):
        return Outcome("", value)
    text = str(value)
    if "\n" in text:
        return Outcome("", Code(text))
    return Outcome(text)
