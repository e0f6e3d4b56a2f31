"""Opsroom's own Errbot plugins, one folder each.

A package only so that the wheel can carry them: pyproject.toml installs this folder as
``bot.shipped.plugins`` (see bot/shipped/__init__.py). Errbot loads the plugins from their
``.plug`` files, not through this package.
"""
