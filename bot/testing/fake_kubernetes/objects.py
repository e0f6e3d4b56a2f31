"""Kubernetes object shapes, selectors and patches, as the API server applies them.

Shapes follow the API reference (core/v1 Pod, Event, Namespace; apps/v1 Deployment,
ReplicaSet; autoscaling/v1 Scale; meta/v1 Status, List and WatchEvent); only the fields
Opsroom reads or writes are filled in.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import re
import uuid
from typing import Any

Obj = dict[str, Any]

REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"


def timestamp(at: float | None = None) -> str:
    """RFC 3339 in UTC with second precision, as the API server writes ``metav1.Time``."""
    moment = (
        datetime.datetime.now(datetime.UTC)
        if at is None
        else datetime.datetime.fromtimestamp(at, datetime.UTC)
    )
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def metadata(name: str, namespace: str | None, created: float, **extra: Any) -> Obj:
    meta: Obj = {
        "name": name,
        "uid": str(uuid.uuid4()),
        "resourceVersion": "0",
        "creationTimestamp": timestamp(created),
    }
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update({key: value for key, value in extra.items() if value is not None})
    return meta


def status(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    """A ``meta/v1 Status`` error body."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def object_list(kind: str, api_version: str, items: list[Obj], resource_version: int) -> Obj:
    return {
        "kind": f"{kind}List",
        "apiVersion": api_version,
        "metadata": {"resourceVersion": str(resource_version)},
        "items": items,
    }


def template_hash(template: Obj) -> str:
    """The pod-template-hash of a template (any stable hash of its JSON will do here)."""
    return hashlib.sha256(canonical(template).encode()).hexdigest()[:10]


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def without_hash_label(template: Obj) -> Obj:
    template = copy.deepcopy(template)
    labels = template.get("metadata", {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    return template


# --- label and field selectors ------------------------------------------------------------------
_SET_TERM = re.compile(r"^\s*(!?)([^\s!=,()]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")
_EQ_TERM = re.compile(r"^\s*([^\s!=,()]+)\s*(==|=|!=)\s*([^\s!=,()]*)\s*$")


def _terms(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [term for term in terms if term.strip()]


def matches_labels(selector: str | None, labels: dict[str, str]) -> bool:
    """Equality- and set-based label selectors (``a=b,c!=d,e in (f,g),!h``)."""
    for term in _terms(selector or ""):
        eq = _EQ_TERM.match(term)
        if eq:
            key, op, value = eq.groups()
            if (labels.get(key) == value) != (op != "!="):
                return False
            continue
        found = _SET_TERM.match(term)
        if not found:
            raise ValueError(f"unable to parse requirement: {term!r}")
        negate, key, op, values = found.groups()
        choices = {v.strip() for v in (values or "").split(",") if v.strip()}
        if op == "in" and labels.get(key) not in choices:
            return False
        if op == "notin" and key in labels and labels[key] in choices:
            return False
        if op is None and (key in labels) == bool(negate):
            return False
    return True


def field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def matches_fields(selector: str | None, obj: Obj) -> bool:
    """``metadata.name=x,status.phase!=Running,involvedObject.kind=Pod,type=Warning``."""
    for term in _terms(selector or ""):
        found = _EQ_TERM.match(term)
        if not found:
            raise ValueError(f"invalid field selector: {term!r}")
        path, op, value = found.groups()
        if (field_value(obj, path) == value) != (op != "!="):
            return False
    return True


# --- patches ------------------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386); for the maps Opsroom patches (annotations, replicas) a
    strategic-merge patch applies the same way."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def json_patch(target: Obj, operations: list[Obj]) -> Obj:
    """JSON patch (RFC 6902): add, replace, remove, test."""
    result = copy.deepcopy(target)
    for operation in operations:
        op, parts = operation.get("op"), _pointer(str(operation.get("path", "")))
        parent: Any = result
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        if op in ("add", "replace"):
            if op == "replace" and isinstance(parent, dict) and last not in parent:
                raise ValueError(f"replace operation does not apply: doc is missing path: /{last}")
            parent[last] = copy.deepcopy(operation.get("value"))
        elif op == "remove":
            parent.pop(last)
        elif op == "test":
            if parent.get(last) != operation.get("value"):
                raise ValueError(f"testing value /{last} failed")
        else:
            raise ValueError(f"unexpected operation {op!r}")
    return result
