"""A small JSON Schema validator for the schemas OpenAI requests carry.

Covers ``type`` (one or a list), ``enum``, ``const``, ``properties``, ``required``,
``additionalProperties`` (boolean or schema), ``items`` (schema or a list of schemas),
``minItems``/``maxItems``, ``anyOf``/``oneOf``/``allOf``, ``minimum``/``maximum`` and their
exclusive forms, ``minLength``/``maxLength``, ``pattern`` and local ``$ref`` (``#/$defs/...``).
Other keywords (``format`` and the like) are ignored, so an unknown keyword never rejects.
Booleans are not numbers; ``5.0`` is an integer, as JSON Schema says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

Schema = Mapping[str, Any] | bool


def matches_schema(value: Any, schema: Schema) -> bool:
    """True when ``value`` (parsed JSON) satisfies ``schema``."""
    root = schema if isinstance(schema, Mapping) else {}
    return _check(value, schema, root, depth=0)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: ``1 == 1.0`` but ``true != 1``; key order does not matter."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


_MAX_DEPTH = 64


def _check(value: Any, schema: Schema, root: Mapping[str, Any], depth: int) -> bool:
    if isinstance(schema, bool):
        return schema
    if depth > _MAX_DEPTH:
        return False
    if "$ref" in schema:
        target = _resolve(schema["$ref"], root)
        if target is None or not _check(value, target, root, depth + 1):
            return False
    checks = (_check_type, _check_values, _check_combinators, _check_number, _check_string)
    if not all(check(value, schema, root, depth) for check in checks):
        return False
    if isinstance(value, dict):
        return _check_object(value, schema, root, depth)
    if isinstance(value, list):
        return _check_array(value, schema, root, depth)
    return True


def _resolve(ref: Any, root: Mapping[str, Any]) -> Schema | None:
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref[1:].split("/")[1:]:
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, Mapping | bool) else None


def _is_type(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    kinds: dict[str, type | tuple[type, ...]] = {
        "number": (int, float),
        "string": str,
        "object": dict,
        "array": list,
    }
    return name in kinds and isinstance(value, kinds[name])


def _check_type(value: Any, schema: Mapping[str, Any], root: Any, depth: int) -> bool:
    types = schema.get("type")
    if types is None:
        return True
    names = [types] if isinstance(types, str) else list(types)
    return any(_is_type(value, name) for name in names)


def _check_values(value: Any, schema: Mapping[str, Any], root: Any, depth: int) -> bool:
    if "enum" in schema and not any(json_equal(value, option) for option in schema["enum"]):
        return False
    return "const" not in schema or json_equal(value, schema["const"])


def _check_combinators(
    value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], depth: int
) -> bool:
    if "allOf" in schema and not all(_check(value, s, root, depth + 1) for s in schema["allOf"]):
        return False
    if "anyOf" in schema and not any(_check(value, s, root, depth + 1) for s in schema["anyOf"]):
        return False
    if "oneOf" in schema:
        return sum(_check(value, s, root, depth + 1) for s in schema["oneOf"]) == 1
    return True


def _check_number(value: Any, schema: Mapping[str, Any], root: Any, depth: int) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    bounds = (
        ("minimum", lambda v, b: v >= b),
        ("maximum", lambda v, b: v <= b),
        ("exclusiveMinimum", lambda v, b: v > b),
        ("exclusiveMaximum", lambda v, b: v < b),
    )
    return all(
        op(value, schema[key])
        for key, op in bounds
        if isinstance(schema.get(key), int | float) and not isinstance(schema.get(key), bool)
    )


def _check_string(value: Any, schema: Mapping[str, Any], root: Any, depth: int) -> bool:
    if not isinstance(value, str):
        return True
    if "minLength" in schema and len(value) < schema["minLength"]:
        return False
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return False
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            return re.search(pattern, value) is not None
        except re.error:
            return True
    return True


def _check_object(
    value: dict[str, Any], schema: Mapping[str, Any], root: Mapping[str, Any], depth: int
) -> bool:
    if any(key not in value for key in schema.get("required", ())):
        return False
    props: Mapping[str, Any] = schema.get("properties", {})
    for key, item in value.items():
        if key in props:
            sub = props[key]
        elif "additionalProperties" in schema:
            sub = schema["additionalProperties"]
        else:
            continue
        if not _check(item, sub, root, depth + 1):
            return False
    return True


def _check_array(
    value: list[Any], schema: Mapping[str, Any], root: Mapping[str, Any], depth: int
) -> bool:
    if "minItems" in schema and len(value) < schema["minItems"]:
        return False
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return False
    items = schema.get("items")
    if isinstance(items, list):
        return all(_check(v, s, root, depth + 1) for v, s in zip(value, items, strict=False))
    if items is None:
        return True
    return all(_check(v, items, root, depth + 1) for v in value)
