"""Load a YAML configuration file into a pydantic model, with errors a person can act on.

Every problem becomes one line ``<file>: <key>: <what was expected>``, e.g.::

    inventory.yaml: environments.staging.hosts.web1.port: Input should be a valid integer (got 'x')
    inventory.yaml: recipes.tail-log.timout: unknown key (allowed: description, params, ...)

Keys are dotted paths; list positions are numbers (``steps.0.2``). Duplicate mapping keys are
an error rather than the last one silently winning, since a repeated host or role name is
almost always a mistake.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys in a mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path, error: type[Exception]) -> Any:
    """Parse ``path``; an unreadable file or bad YAML raises ``error`` naming the file.

    An empty file is an empty mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from None
    return {} if raw is None else raw


def format_key(loc: tuple[int | str, ...]) -> str:
    """``("roles", "r", "grants", 0)`` -> ``roles.r.grants.0``; the empty path is the top level.

    pydantic's ``[key]`` marker (a bad mapping key) is dropped: the key itself is then the last
    part of the path, which is what the reader needs to find.
    """
    return ".".join(str(part) for part in loc if part != "[key]") or "(top level)"


def validate(model: type[M], raw: Any, source: str, error: type[Exception]) -> M:
    """``model.model_validate(raw)``, raising ``error`` with one line per problem."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error("\n".join(describe(exc, model, source))) from None


def describe(exc: ValidationError, model: type[BaseModel], source: str) -> list[str]:
    """``<source>: <key>: <message>`` for each error, with an unknown key's allowed keys."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            message = "unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = err["msg"].removeprefix("Value error, ")
            value = err.get("input")
            if isinstance(value, str | int | float):
                message += f" (got {value!r})"
        lines.append(f"{source}: {format_key(loc)}: {message}")
    return lines


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the model found at ``loc`` under ``model`` (empty if not a model)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> X; ``X | None`` -> X (the first non-None member)."""
    while True:
        origin = get_origin(annotation)
        if origin is not None and hasattr(annotation, "__metadata__"):
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        else:
            return annotation
