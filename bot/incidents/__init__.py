"""Incident response, chat-free: war rooms, roles, checklists, status updates, a timeline
that writes itself from the incident's events and the audit log, post-mortems and MTTx
metrics. See docs/incidents.md.

- ``config``: the ``OPSROOM_INCIDENTS`` YAML (validated at start-up, errors name file and key)
- ``model`` / ``store``: incidents and their events in SQLite under ``OPSROOM_DATA_DIR``
- ``chat``: the :class:`~bot.incidents.chat.IncidentChat` protocol and Mattermost's limits
- ``service``: the rules (declare, roles, checklist, updates, status, reminders)
- ``timeline`` / ``postmortem`` / ``metrics``: what is read back
- ``alerts``: how an alert rule declares an incident through the runtime
- ``cli``: ``opsroom incident export``
"""
