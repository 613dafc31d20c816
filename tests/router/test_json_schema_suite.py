"""Cases in the manner of the official JSON-Schema-Test-Suite (json-schema-org, MIT licence;
tests/draft2020-12), for the keywords OpenAI's structured outputs allow. The first four
groups are the finding: the old validator accepted every "invalid" value of ``not``,
``uniqueItems``, ``prefixItems`` and ``multipleOf``, so a student answer breaking the client's
schema was served."""

import pytest

from understudy.router import matches_schema

# (description, schema, [(value, valid), ...])
SUITE = [
    (
        "not",
        {"not": {"type": "integer"}},
        [("foo", True), (1, False), (1.0, False), (1.5, True)],
    ),
    (
        "not with a nested schema",
        {"type": "object", "properties": {"foo": {"not": {"const": "bar"}}}},
        [({"foo": "baz"}, True), ({"foo": "bar"}, False), ({}, True)],
    ),
    (
        "uniqueItems",
        {"uniqueItems": True},
        [
            ([1, 2], True),
            ([1, 1], False),
            ([1, 1.0], False),  # numbers equal in value are equal
            ([{"a": 1}, {"a": 1}], False),
            ([[1], [True]], True),  # true is not 1
            ([0, False], True),
            (["a", "a"], False),
        ],
    ),
    (
        "prefixItems",
        {"prefixItems": [{"type": "integer"}, {"type": "string"}]},
        [
            ([1, "foo"], True),
            ([1], True),
            (["foo", 1], False),
            ([1, "foo", True], True),
            ([], True),
        ],
    ),
    (
        "prefixItems with items false",
        {"prefixItems": [{"type": "integer"}], "items": False},
        [([1], True), ([1, 2], False)],
    ),
    (
        "multipleOf an integer",
        {"multipleOf": 2},
        [(10, True), (7, False), ("foo", True)],
    ),
    (
        "multipleOf a fraction",
        {"multipleOf": 0.0001},
        [(0.0075, True), (0.00751, False)],
    ),
    (
        "enum",
        {"enum": [1, "foo", None]},
        [(1, True), (1.0, True), (True, False), ("bar", False), (None, True)],
    ),
    (
        "const",
        {"const": [False]},
        [([False], True), ([0], False)],
    ),
    (
        "anyOf",
        {"anyOf": [{"type": "integer"}, {"minimum": 2}]},
        [(1, True), (2.5, True), (1.5, False)],
    ),
    (
        "required and additionalProperties false",
        {
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": ["number", "null"]}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
        [
            ({"a": "x", "b": None}, True),
            ({"a": "x"}, False),
            ({"a": "x", "b": 1, "c": 2}, False),
        ],
    ),
    (
        "$ref to $defs, recursive",
        {
            "$defs": {
                "node": {
                    "type": "object",
                    "properties": {
                        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
                    },
                    "additionalProperties": False,
                }
            },
            "$ref": "#/$defs/node",
        },
        [({"children": [{"children": []}]}, True), ({"children": [{"x": 1}]}, False)],
    ),
    (
        "string length and pattern",
        {"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^[a-z]+$"},
        [("ab", True), ("a", False), ("abcd", False), ("AB", False)],
    ),
    (
        "array length",
        {"type": "array", "minItems": 1, "maxItems": 2},
        [([1], True), ([], False), ([1, 2, 3], False)],
    ),
    (
        "number bounds",
        {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
        [(0, False), (0.1, True), (10, True), (10.1, False)],
    ),
    (
        "format is an annotation",
        {"type": "string", "format": "email"},
        [("not an email", True)],
    ),
]


@pytest.mark.parametrize(
    ("schema", "value", "valid"),
    [
        pytest.param(schema, value, valid, id=f"{name}: {value!r}")
        for name, schema, cases in SUITE
        for value, valid in cases
    ],
)
def test_suite_case(schema, value, valid):
    assert matches_schema(value, schema) is valid
