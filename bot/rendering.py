"""Renderers: structured outcomes into the text one chat surface shows.

There is one table writer (``tabulate``) and two renderers: Mattermost Markdown (tables as
GitHub-style pipe tables, output in fenced blocks) and terminal text (aligned columns that
fit a width, output indented). Both render the same :mod:`bot.outcomes` data.
"""

from __future__ import annotations

import textwrap
from abc import ABC, abstractmethod
from typing import Protocol

from tabulate import tabulate

from bot.outcomes import Block, Code, Outcome, Table, Text

# Terminal output is kept readable at this width (columns are wrapped to fit).
TERMINAL_WIDTH = 100


def _cell(value: object) -> str:
    return "" if value is None else str(value)


class Renderer(Protocol):
    """Turns outcomes into the text of one surface."""

    def outcome(self, outcome: Outcome) -> str: ...

    def table(self, table: Table) -> str: ...

    def code(self, text: str) -> str: ...

    def command(self, text: str) -> str:
        """A command someone could type again (inline code in Markdown)."""
        ...


class _Base(ABC):
    def outcome(self, outcome: Outcome) -> str:
        parts = [outcome.summary] if outcome.summary else []
        parts += [self.block(block) for block in outcome.blocks]
        return "\n".join(part for part in parts if part)

    def block(self, block: Block) -> str:
        if isinstance(block, Table):
            return self.table(block)
        if isinstance(block, Code):
            body = self.code(block.text)
            return f"{block.title}:\n{body}" if block.title else body
        assert isinstance(block, Text)
        return block.text

    @abstractmethod
    def table(self, table: Table) -> str: ...

    @abstractmethod
    def code(self, text: str) -> str: ...

    @staticmethod
    def _more(table: Table) -> str:
        return f"… {table.hidden} more" if table.hidden else ""


class MarkdownRenderer(_Base):
    """Mattermost Markdown."""

    def table(self, table: Table) -> str:
        def cell(value: object) -> str:
            return _cell(value).replace("|", "\\|").replace("\n", " ")

        body = tabulate(
            [[cell(v) for v in row] for row in table.shown],
            headers=[cell(h) for h in table.headers],
            tablefmt="github",
            disable_numparse=True,
        )
        if not table.shown:
            body += "\n(none)"
        lines = [f"**{table.title}**"] if table.title else []
        lines.append(body)
        if table.hidden:
            lines.append(self._more(table))
        return "\n".join(lines)

    def code(self, text: str) -> str:
        fence = "````" if "```" in text else "```"
        return f"{fence}\n{text.rstrip()}\n{fence}"

    def command(self, text: str) -> str:
        return f"`{text}`"


class TextRenderer(_Base):
    """Plain terminal text: aligned columns wrapped to ``width`` (None: no wrapping)."""

    def __init__(self, width: int | None = TERMINAL_WIDTH) -> None:
        self.width = width

    def table(self, table: Table) -> str:
        rows = [[_cell(v) for v in row] for row in table.shown]
        headers = list(table.headers)
        widths = None
        if self.width and headers:
            # Share the width out: narrow columns keep their size, wide ones are wrapped.
            natural = [
                max([len(h), *(len(line) for r in rows for line in r[i].splitlines() or [""])])
                for i, h in enumerate(headers)
            ]
            budget = self.width - 2 * (len(headers) - 1)
            if sum(natural) > budget:
                fair = max(8, budget // len(headers))
                small = sum(w for w in natural if w <= fair)
                wide = [i for i, w in enumerate(natural) if w > fair]
                share = max(8, (budget - small) // max(1, len(wide)))
                widths = [w if w <= fair else share for w in natural]
        body = tabulate(
            rows,
            headers=headers,
            tablefmt="simple",
            disable_numparse=True,
            maxcolwidths=widths,
        )
        # The rule under the headers in box-drawing characters: a line of dashes is a
        # horizontal rule to the Markdown that Errbot's terminal backend applies.
        body = "\n".join(
            line.replace("-", "─") if line and not line.strip(" -") else line
            for line in body.splitlines()
        )
        if not rows:
            body += "\n(none)"
        lines = [table.title] if table.title else []
        lines.append(body)
        if table.hidden:
            lines.append(self._more(table))
        return "\n".join(lines)

    def code(self, text: str) -> str:
        return textwrap.indent(text.rstrip(), "  ")

    def command(self, text: str) -> str:
        return text
