"""The action runtime: actions, policy, approvals, jobs and audit. Chat-free.

Nothing here imports Errbot or Mattermost code; the runtime talks to chat through
:class:`bot.runtime.surface.ChatSurface`. Plugin authors import from :mod:`bot.plugin`;
the Errbot glue is ``bot/backends/actions.py``.
"""
