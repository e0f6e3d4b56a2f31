"""Mattermost REST API v4 shape checking against the vendor's OpenAPI documents.

The documents in ``reference/mattermost-api-v4/`` (package data next to this module) are the
split sources of the mattermost-api-reference project: ``introduction.yaml`` holds the document
head (ending in ``paths:``), every other file but ``definitions.yaml`` is a fragment of that
``paths`` mapping, and ``definitions.yaml`` holds ``components``.  They are loaded file by file
and merged, so a path described in two files keeps the methods of both.

The documents omit ``additionalProperties: false``, so validation checks types and required
fields only, which is what the docs can promise.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator

REFERENCE_DIR = Path(__file__).resolve().parent / "reference" / "mattermost-api-v4"
WEBSOCKET_PATH = "/api/v4/websocket"
_APP_ERROR_SCHEMA = {"$ref": "#/components/schemas/AppError"}
# What the server's strconv.ParseBool accepts for boolean query parameters.
_GO_PARSE_BOOL = frozenset(
    ["1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"]
)

# Places where the docs contradict what real Mattermost servers and clients exchange.  Each entry
# is (method, path template, JSON-pointer-ish key path inside the request schema, replacement);
# keep this list short and justified.
DOC_ERRATA: tuple[tuple[str, str, tuple[str, ...], dict[str, Any]], ...] = (
    # posts.yaml types the patch body's `props` as a string; the server's PostPatch.Props is a
    # StringInterface map and every client (webapp, mattermostdriver users) sends an object.
    ("put", "/api/v4/posts/{post_id}/patch", ("properties", "props"), {"type": "object"}),
)


@dataclass(frozen=True)
class Operation:
    """One documented (method, path template) pair."""

    method: str
    template: str
    spec: dict[str, Any]


class OpenAPIDocs:
    """The merged Mattermost OpenAPI document with helpers to match and validate traffic."""

    def __init__(self, folder: Path = REFERENCE_DIR) -> None:
        self.folder = folder
        self.head = self._load(folder / "introduction.yaml")
        self.components: dict[str, Any] = self._load(folder / "definitions.yaml")["components"]
        self.paths: dict[str, dict[str, Any]] = {}
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".yaml") or name in ("introduction.yaml", "definitions.yaml"):
                continue
            for template, item in (self._load(folder / name) or {}).items():
                self.paths.setdefault(template, {}).update(item)
        self._apply_errata()
        self._matchers = [
            (self._template_regex(t), t.count("{"), t) for t in self.paths if t.startswith("/")
        ]
        self._validators: dict[int, Draft4Validator] = {}

    @staticmethod
    def _load(path: Path) -> Any:
        with path.open(encoding="utf-8") as fh:
            return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))

    def _apply_errata(self) -> None:
        for method, template, keys, replacement in DOC_ERRATA:
            node = self.paths[template][method]["requestBody"]["content"]["application/json"]
            node = node["schema"]
            for key in keys[:-1]:
                node = node[key]
            node[keys[-1]] = {**node[keys[-1]], **replacement}

    @staticmethod
    def _template_regex(template: str) -> re.Pattern[str]:
        parts = re.split(r"(\{[^}]+\})", template)
        return re.compile(
            "^" + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts) + "$"
        )

    # -- lookup -------------------------------------------------------------------------------

    def operation(self, method: str, template: str) -> Operation | None:
        """The documented operation for an exact (method, path template), if any."""
        spec = self.paths.get(template, {}).get(method.lower())
        return Operation(method.lower(), template, spec) if isinstance(spec, dict) else None

    def match(self, method: str, path: str) -> Operation | None:
        """The documented operation a concrete request path falls under.

        Literal segments win over parameters (``/users/ids`` over ``/users/{user_id}``), as in
        the Mattermost router.
        """
        candidates = sorted(
            (params, template) for rx, params, template in self._matchers if rx.match(path)
        )
        for _, template in candidates:
            op = self.operation(method, template)
            if op is not None:
                return op
        return None

    def documents_websocket(self) -> bool:
        """The WebSocket endpoint is described in prose under the "WebSocket" tag, not in paths."""
        for tag in self.head.get("tags", []):
            if tag.get("name") == "WebSocket" and WEBSOCKET_PATH in tag.get("description", ""):
                return True
        return False

    # -- validation ---------------------------------------------------------------------------

    def _errors(self, schema: dict[str, Any], instance: Any, where: str) -> list[str]:
        key = id(schema)
        validator = self._validators.get(key)
        if validator is None:
            # Wrapping keeps "#/components/..." references resolvable from the document root.
            validator = Draft4Validator({"allOf": [schema], "components": self.components})
            self._validators[key] = validator
        out = []
        for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
            location = "/".join(str(p) for p in err.absolute_path) or "<root>"
            out.append(f"{where}: {location}: {err.message}")
        return out

    def validate_request(
        self, method: str, template: str, body: Any, *, content_type: str = "application/json"
    ) -> list[str]:
        """Violations of a request body against the documented requestBody schema."""
        where = f"request {method.upper()} {template}"
        op = self.operation(method, template)
        if op is None:
            return [f"{where}: endpoint not documented"]
        content = (op.spec.get("requestBody") or {}).get("content") or {}
        if not content:
            return []
        media = content.get(content_type)
        if media is None:
            return [f"{where}: content type {content_type} not documented ({sorted(content)})"]
        schema = media.get("schema")
        return self._errors(schema, body, where) if schema else []

    def validate_query(self, method: str, template: str, query: dict[str, str]) -> list[str]:
        """Violations of query parameters: undocumented names and unparseable typed values."""
        where = f"request {method.upper()} {template}"
        op = self.operation(method, template)
        if op is None:
            return [f"{where}: endpoint not documented"]
        documented = {
            p["name"]: p.get("schema", {})
            for p in op.spec.get("parameters") or []
            if p.get("in") == "query"
        }
        out = []
        for name, value in query.items():
            if name not in documented:
                out.append(f"{where}: query parameter {name!r} not documented")
                continue
            kind = documented[name].get("type")
            if kind == "integer" and not re.fullmatch(r"-?\d+", value):
                out.append(f"{where}: query parameter {name}={value!r} is not an integer")
            elif kind == "boolean" and value not in _GO_PARSE_BOOL:
                out.append(f"{where}: query parameter {name}={value!r} is not a boolean")
        return out

    def validate_response(self, method: str, template: str, status: int, body: Any) -> list[str]:
        """Violations of a JSON response body against the documented response for ``status``.

        Success statuses must be documented for the operation; error bodies must be AppErrors.
        """
        where = f"response {status} {method.upper()} {template}"
        op = self.operation(method, template)
        if op is None:
            return [f"{where}: endpoint not documented"]
        if status >= 400:
            return self._errors(_APP_ERROR_SCHEMA, body, where)
        response = op.spec.get("responses", {}).get(str(status))
        if response is None:
            return [f"{where}: status not documented ({sorted(op.spec.get('responses', {}))})"]
        if "$ref" in response:
            response = self.components["responses"][response["$ref"].rsplit("/", 1)[-1]]
        schema = ((response.get("content") or {}).get("application/json") or {}).get("schema")
        return self._errors(schema, body, where) if schema else []


@functools.cache
def load_docs() -> OpenAPIDocs:
    """The docs, parsed once per process (parsing ~1 MB of YAML is the slow part)."""
    return OpenAPIDocs()
