"""Fake Kubernetes API server for Opsroom's tests (TLS, bearer token, the real client)."""

from .server import BOT_USER, FakeKubernetes, KubeRequest

__all__ = ["BOT_USER", "FakeKubernetes", "KubeRequest"]
