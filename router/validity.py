"""Validity checks on a student answer. A failed check always defers to the teacher.

Each check returns ``None`` when the answer passes, or the reason it fails; the reasons are
the ``reason`` values a :class:`~router.decision.Decision` carries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from understudy.router.json_schema import matches_schema

TRUNCATED = "truncated"
EMPTY = "empty"
UNKNOWN_TOOL = "unknown_tool"
INVALID_TOOL_ARGUMENTS = "invalid_tool_arguments"
INVALID_JSON = "invalid_json"
SCHEMA_MISMATCH = "schema_mismatch"

CHECK_REASONS = (
    TRUNCATED,
    EMPTY,
    UNKNOWN_TOOL,
    INVALID_TOOL_ARGUMENTS,
    INVALID_JSON,
    SCHEMA_MISMATCH,
)
"""Every reason a validity check can give, in the order the checks run."""


def failed_check(
    text: str,
    finish_reason: str | None,
    response_format: Mapping[str, Any] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_calls: Sequence[Mapping[str, Any]] | None = None,
) -> str | None:
    """The first validity check the answer fails, or ``None`` when it passes them all.

    Order: truncated (``finish_reason == "length"``), empty (no text and no tool call), tool
    calls (each names a tool in ``tools`` and has JSON-object arguments matching its
    ``parameters``), then JSON (when ``response_format`` asks for it and the answer is text).
    """
    if finish_reason == "length":
        return TRUNCATED
    if tool_calls:
        return check_tool_calls(tool_calls, tools)
    if not text.strip():
        return EMPTY
    return check_json(text, response_format)


def requested_schema(response_format: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The JSON schema a ``json_schema`` response format carries (``None`` for any other)."""
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    return schema if isinstance(schema, Mapping) else None


def check_json(text: str, response_format: Mapping[str, Any] | None) -> str | None:
    """``invalid_json`` or ``schema_mismatch`` when ``response_format`` asks for JSON and the
    text is not JSON or does not fit; ``json_object`` requires a JSON object."""
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind not in ("json_object", "json_schema"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return INVALID_JSON
    if kind == "json_object":
        return None if isinstance(value, dict) else SCHEMA_MISMATCH
    schema = requested_schema(response_format)
    if schema is not None and not matches_schema(value, schema):
        return SCHEMA_MISMATCH
    return None


def check_tool_calls(
    tool_calls: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
) -> str | None:
    """``unknown_tool`` or ``invalid_tool_arguments`` for the first bad call in OpenAI's
    ``tool_calls`` shape (``{"function": {"name", "arguments"}}``, arguments a JSON string
    or an already parsed object)."""
    schemas = _tool_schemas(tools)
    for call in tool_calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or function.get("name") not in schemas:
            return UNKNOWN_TOOL
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return INVALID_TOOL_ARGUMENTS
        if not isinstance(arguments, dict):
            return INVALID_TOOL_ARGUMENTS
        schema = schemas[function["name"]]
        if schema is not None and not matches_schema(arguments, schema):
            return INVALID_TOOL_ARGUMENTS
    return None


def _tool_schemas(
    tools: Sequence[Mapping[str, Any]] | None,
) -> dict[str, Mapping[str, Any] | None]:
    """Tool name to its ``parameters`` schema (``None`` when it has none)."""
    schemas: dict[str, Mapping[str, Any] | None] = {}
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            params = function.get("parameters")
            schemas[function["name"]] = params if isinstance(params, Mapping) else None
    return schemas
