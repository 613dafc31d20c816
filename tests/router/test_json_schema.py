import pytest

from understudy.router import json_equal, matches_schema


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        ({"type": "string"}, ["", "a"], [1, None, True, [], {}]),
        ({"type": "integer"}, [0, -3, 5.0], [5.5, True, "1", None]),
        ({"type": "number"}, [0, 1.5, -2], [True, False, "1.5", None]),
        ({"type": "boolean"}, [True, False], [0, 1, "true"]),
        ({"type": "null"}, [None], [0, "", False]),
        ({"type": "array"}, [[], [1]], [{}, "[]"]),
        ({"type": "object"}, [{}, {"a": 1}], [[], "{}"]),
        ({"type": ["string", "null"]}, ["a", None], [1, False]),
        ({"enum": ["a", 1, None]}, ["a", 1, 1.0, None], ["b", True, 2]),
        ({"const": {"a": [1, 2]}}, [{"a": [1, 2]}], [{"a": [2, 1]}, {"a": [1, 2], "b": 0}]),
        ({"const": False}, [False], [0, None]),
        ({"minimum": 1, "maximum": 3}, [1, 2.5, 3, "not a number"], [0, 3.01]),
        ({"exclusiveMinimum": 1, "exclusiveMaximum": 3}, [1.5, 2], [1, 3]),
        ({"minLength": 2, "maxLength": 3}, ["ab", "abc", 7], ["a", "abcd"]),
        ({"pattern": "^[a-z]+_[a-z]+$"}, ["lost_card"], ["Lost card", "lost"]),
        ({"pattern": "("}, [], ["anything"]),  # a schema no draft accepts: not certified
        ({"items": {"type": "integer"}}, [[], [1, 2]], [[1, "2"]]),
        ({"items": [{"type": "string"}, {"type": "integer"}]}, [["a", 1], ["a"]], [[1, "a"]]),
        ({"minItems": 1, "maxItems": 2}, [[1], [1, 2]], [[], [1, 2, 3]]),
        ({"anyOf": [{"type": "string"}, {"type": "number", "minimum": 10}]}, ["x", 11], [5, None]),
        ({"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 0}]}, [-1, 0.5], [3, "x"]),
        ({"allOf": [{"type": "integer"}, {"minimum": 0}]}, [0, 4], [-1, 0.5]),
        ({"format": "email", "x-custom": 1}, ["not an email"], []),
        ({}, [None, 1, "a", [], {}], []),
    ],
)
def test_keywords(schema, good, bad):
    for value in good:
        assert matches_schema(value, schema), value
    for value in bad:
        assert not matches_schema(value, schema), value


def test_object_keywords():
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name"],
        "additionalProperties": False,
    }
    assert matches_schema({"name": "Ann", "age": 3}, schema)
    assert matches_schema({"name": "Ann"}, schema)
    assert not matches_schema({"age": 3}, schema)
    assert not matches_schema({"name": "Ann", "age": -1}, schema)
    assert not matches_schema({"name": "Ann", "email": "a@b"}, schema)
    open_schema = {**schema, "additionalProperties": True}
    assert matches_schema({"name": "Ann", "email": "a@b"}, open_schema)
    typed_extra = {**schema, "additionalProperties": {"type": "integer"}}
    assert matches_schema({"name": "Ann", "n": 1}, typed_extra)
    assert not matches_schema({"name": "Ann", "n": "1"}, typed_extra)
    no_extra_rule = {k: v for k, v in schema.items() if k != "additionalProperties"}
    assert matches_schema({"name": "Ann", "anything": [1]}, no_extra_rule)


def test_nested_refs_as_pydantic_writes_them():
    schema = {
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["sku", "qty"],
            }
        },
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}}},
        "required": ["items"],
    }
    assert matches_schema({"items": [{"sku": "a", "qty": 1}]}, schema)
    assert not matches_schema({"items": [{"sku": "a", "qty": "1"}]}, schema)
    assert not matches_schema({"items": [{"sku": "a"}]}, schema)


def test_refs_that_cannot_be_resolved_or_loop_reject():
    assert not matches_schema(1, {"$ref": "#/$defs/Missing"})
    assert not matches_schema(1, {"$ref": "https://example.com/schema.json"})
    assert not matches_schema(1, {"$ref": "#"})
    escaped = {"$defs": {"a/b": {"type": "integer"}}, "$ref": "#/$defs/a~1b"}
    assert matches_schema(1, escaped) and not matches_schema("1", escaped)


def test_boolean_schemas():
    assert matches_schema({"x": 1}, True)
    assert not matches_schema({"x": 1}, False)
    assert not matches_schema({"x": 1}, {"properties": {"x": False}})


def test_json_equal():
    assert json_equal({"a": 1, "b": [1.0, None]}, {"b": [1, None], "a": 1.0})
    assert not json_equal(True, 1)
    assert not json_equal(0, False)
    assert json_equal(False, False)
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})
    assert not json_equal([1, 2], [1, 2, 3])
    assert not json_equal("1", 1)
