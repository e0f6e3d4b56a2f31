"""The ``kubernetes:`` section of an inventory environment: which cluster, which namespaces.

::

    environments:
      staging:
        kubernetes:
          context: staging-admin        # a context of the kubeconfig
          namespaces: [web, "team-*"]   # the allow-list; globs allowed
          max_replicas: 10              # !k8s scale refuses more
          impersonate: true             # act as the chat user (Impersonate-User/-Group)
          impersonate_group_prefix: "mattermost:"

The context is checked against the kubeconfig at start-up
(:func:`bot.connectors.kubernetes.check_contexts`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# A namespace is a DNS-1123 label; a pattern may add the glob characters * ? [ ].
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_NAMESPACE_GLOB = re.compile(r"[a-z0-9*?\[\]-]{1,63}")


def _namespace_pattern(value: str) -> str:
    if not _NAMESPACE_GLOB.fullmatch(value):
        raise ValueError(
            "expected a namespace name (lower-case letters, digits and '-') or a glob of one"
        )
    return value


NamespacePattern = Annotated[str, AfterValidator(_namespace_pattern)]


class KubernetesEntry(BaseModel):
    """One environment's cluster and what the bot may touch in it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    context: str = Field(min_length=1, max_length=253)
    namespaces: list[NamespacePattern] = Field(min_length=1)
    max_replicas: int = Field(10, ge=0, le=10000)
    impersonate: bool = False
    impersonate_group_prefix: str = Field("", max_length=63)

    def allows(self, namespace: str) -> bool:
        """Is ``namespace`` on the allow-list (a name or a glob of it)?"""
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.namespaces)

    @property
    def default_namespace(self) -> str | None:
        """The first allow-listed name that is not a glob: what commands use when none is
        given."""
        return next((n for n in self.namespaces if NAMESPACE.fullmatch(n)), None)


def kubernetes_contexts(environments: Mapping[str, Any]) -> dict[str, str]:
    """``{"environments.<env>.kubernetes.context": context}`` for each environment (a
    mapping of name to entry with a ``kubernetes`` attribute) that has a cluster."""
    return {
        f"environments.{env}.kubernetes.context": entry.kubernetes.context
        for env, entry in environments.items()
        if entry.kubernetes is not None
    }
