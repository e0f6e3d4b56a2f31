"""Examples: the sample inventory and policy, a third-party plugin with its tests.

A package only so that the wheel can carry ``inventory.yaml`` and ``policy.yaml``:
pyproject.toml installs them as ``bot.shipped.examples`` (see bot/shipped/__init__.py).
"""
