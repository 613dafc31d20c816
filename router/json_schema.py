"""Does a JSON value satisfy the JSON Schema an OpenAI request carries?

Validation is the ``jsonschema`` package's (pure Python, no I/O): draft 2020-12 unless the
schema names its draft with ``$schema``, draft 7 for a schema only it accepts (``items`` as a
list), so every keyword OpenAI's structured outputs allow is checked as the specification
says (``not``, ``uniqueItems``, ``prefixItems``, ``multipleOf`` included); ``format`` is an
annotation, and unknown keywords are ignored. A schema no draft accepts (a broken
``pattern``), a reference that cannot be resolved locally (remote ``$ref`` is never fetched)
or one that loops rejects the answer: the teacher answers instead. Booleans are not numbers;
``5.0`` is an integer, as JSON Schema says. Validators are cached by schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

Schema = Mapping[str, Any] | bool


def matches_schema(value: Any, schema: Schema) -> bool:
    """True when ``value`` (parsed JSON) satisfies ``schema``."""
    try:
        key = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):
        return False
    validator = _validator(key)
    if validator is None:
        return False
    try:
        return bool(validator.is_valid(value))
    except Exception:  # noqa: BLE001 - unresolvable or looping $ref, bad regex: not certified
        return False


@lru_cache(maxsize=256)
def _validator(key: str) -> Any:
    """A validator for the schema ``key`` encodes, or None when no draft accepts it."""
    from jsonschema import Draft7Validator, Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    schema = json.loads(key)
    for cls in (validator_for(schema, default=Draft202012Validator), Draft7Validator):
        try:
            cls.check_schema(schema)
        except SchemaError:
            continue
        return cls(schema)
    return None


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
