"""Connectors: thin, typed, chat-free clients for the systems actions act on."""
