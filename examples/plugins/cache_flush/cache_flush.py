"""Flush an application cache in an environment: a complete third-party Opsroom action.

The work is simulated: it waits, then notes the flush in OPSROOM_DATA_DIR/cache-flushes.log.
"""

from typing import Annotated, Literal

from errbot import BotPlugin
from pydantic import StringConstraints

from bot.plugin import ActionContext, Arg, Risk, action
from bot.settings import get_settings

CacheName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{1,39}$")]
Env = Annotated[Literal["staging", "production"], Arg(after="in")]


class CacheFlush(BotPlugin):
    """Application caches."""

    @action("cache.flush", risk=Risk.CHANGE, target="env", timeout=60)
    def flush(self, ctx: ActionContext, cache: CacheName, env: Env) -> str:
        """Flush a named cache in an environment."""
        ctx.progress(f"draining {cache} in {env}")
        ctx.wait(0.2)  # the real work goes here; wait() ends at once on !cancel or timeout
        ctx.progress(f"flushing {cache} in {env}")
        ctx.wait(0.2)
        ledger = get_settings().opsroom_data_dir / "cache-flushes.log"
        with ledger.open("a", encoding="utf-8") as file:
            file.write(f"{env} {cache}\n")
        return f"flushed {cache} in {env}"
