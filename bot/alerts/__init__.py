"""Alerts: receivers, routing to channels, remediation rules and their guardrails.

- :mod:`bot.alerts.model`: the one alert model every receiver normalises into;
- :mod:`bot.alerts.payloads`: Alertmanager v4, Grafana and generic JSON into that model;
- :mod:`bot.alerts.auth`: bearer tokens and HMAC-SHA256 signatures;
- :mod:`bot.alerts.receivers`: the HTTP handlers (authenticate, limit, validate, store);
- :mod:`bot.alerts.store`: SQLite: alerts, group posts, remediation runs and rule state;
- :mod:`bot.alerts.config`: the ``OPSROOM_ALERTS`` file (receivers, routes, rules);
- :mod:`bot.alerts.matchers`, :mod:`bot.alerts.templates`: label matchers, arguments;
- :mod:`bot.alerts.posts`: one post per alert group, edited in place; storm control;
- :mod:`bot.alerts.remediation`: rules acting through the runtime, with guardrails;
- :mod:`bot.alerts.engine`: the worker that turns stored alerts into posts and runs;
- :mod:`bot.alerts.clients`: Alertmanager API v2 and Prometheus HTTP API clients.
"""
