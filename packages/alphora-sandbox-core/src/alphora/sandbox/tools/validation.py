"""A small JSON-Schema validator for tool arguments, with messages a model can act on.

It covers the subset the tool specs use: ``type`` (string, integer, number, boolean, array,
object, null, or a list of them), ``properties``, ``required``, ``additionalProperties: false``,
``items``, ``enum``, ``minimum``/``maximum``, ``exclusiveMinimum``/``exclusiveMaximum``,
``minLength``/``maxLength``, ``minItems``/``maxItems`` and ``default``. Numbers must be finite
whatever the schema says: NaN and ±Infinity (which Python's ``json`` accepts, and a Python caller
can pass) are refused for every ``number``/``integer`` argument, because every comparison with NaN
is false and would slip past ``minimum``/``maximum``. A full validator
(``jsonschema``) would add a dependency for features we don't use and messages written for
programmers ("'10s' is not of type 'number'"), not for a model fixing its call.
"""

from __future__ import annotations

import difflib
import json
import math
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ArgumentError", "allowed_range", "json_type_name", "validate_arguments"]


class ArgumentError(ValueError):
    """The arguments do not match the tool's schema; ``.problems`` lists every one."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def json_type_name(value: Any) -> str:
    """The JSON name of a Python value's type (``'10s'`` → ``string``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _show(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):  # not JSON, or nested absurdly deep
        text = reprlib.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_ARTICLE = {"integer": "an integer", "array": "an array", "object": "an object"}


def _a(type_name: str) -> str:
    return _ARTICLE.get(type_name, f"a {type_name}")


def _matches(value: Any, type_name: str) -> bool:
    if type_name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if type_name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return json_type_name(value) == type_name


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def allowed_range(schema: Mapping[str, Any]) -> str:
    """The bounds of a numeric schema in words (``greater than 0 and at most 30``), or ``""``."""
    words = []
    if "minimum" in schema:
        words.append(f"at least {_num(schema['minimum'])}")
    if "exclusiveMinimum" in schema:
        words.append(f"greater than {_num(schema['exclusiveMinimum'])}")
    if "maximum" in schema:
        words.append(f"at most {_num(schema['maximum'])}")
    if "exclusiveMaximum" in schema:
        words.append(f"less than {_num(schema['exclusiveMaximum'])}")
    return " and ".join(words)


def _out_of_range(value: float, schema: Mapping[str, Any]) -> bool:
    return (
        ("minimum" in schema and value < schema["minimum"])
        or ("exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"])
        or ("maximum" in schema and value > schema["maximum"])
        or ("exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"])
    )


def _check(value: Any, schema: Mapping[str, Any], where: str, problems: list[str]) -> Any:
    """Check one value; return it normalised (integral floats → int for integer)."""
    declared = schema.get("type")
    if declared is not None:
        types = [declared] if isinstance(declared, str) else list(declared)
        if not any(_matches(value, t) for t in types):
            wanted = " or ".join(_a(t) for t in types)
            problems.append(f"argument '{where}' must be {wanted}, got {json_type_name(value)} {_show(value)}")
            return value
        if isinstance(value, float) and "integer" in types and "number" not in types:
            value = int(value)  # 10.0 is an integer in JSON

    if "enum" in schema and value not in schema["enum"]:
        options = ", ".join(_show(o) for o in schema["enum"])
        problems.append(f"argument '{where}' must be one of {options}; got {_show(value)}")

    if isinstance(value, float) and not math.isfinite(value):
        bounds = allowed_range(schema)
        problems.append(
            f"argument '{where}' must be a finite number{' ' + bounds if bounds else ''}, "
            f"got {_show(value)} (NaN and Infinity are not numbers)"
        )
    elif isinstance(value, int | float) and not isinstance(value, bool) and _out_of_range(value, schema):
        problems.append(f"argument '{where}' must be {allowed_range(schema)}, got {_show(value)}")

    if isinstance(value, str):
        if schema.get("minLength", 0) > len(value):
            if schema["minLength"] == 1:
                problems.append(f"argument '{where}' must not be empty")
            else:
                problems.append(f"argument '{where}' must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"argument '{where}' must have at most {schema['maxLength']} characters, got {len(value)}")

    if isinstance(value, list | tuple):
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(f"argument '{where}' must have at least {schema['minItems']} item(s), got {len(value)}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"argument '{where}' must have at most {schema['maxItems']} item(s), got {len(value)}")
        items = schema.get("items")
        if isinstance(items, Mapping):
            value = [_check(item, items, f"{where}[{i}]", problems) for i, item in enumerate(value)]

    if isinstance(value, Mapping) and "properties" in schema:
        value = _check_object(value, schema, problems, prefix=f"{where}.")
    return value


def _check_object(
    args: Mapping[str, Any], schema: Mapping[str, Any], problems: list[str], prefix: str = ""
) -> dict[str, Any]:
    properties: Mapping[str, Mapping[str, Any]] = schema.get("properties", {})
    required = list(schema.get("required", ()))
    out: dict[str, Any] = {}
    unknown = [k for k in args if k not in properties]
    missing = [k for k in required if k not in args]
    for key, value in args.items():
        if key not in properties:
            if schema.get("additionalProperties", True) is False:
                accepted = ", ".join(f"'{k}'" for k in properties) or "none"
                close = difflib.get_close_matches(str(key), list(properties), n=1)
                if not close and len(unknown) == 1 and len(missing) == 1:
                    close = missing  # one wrong name, one missing: surely that one
                hint = f"; did you mean '{close[0]}'?" if close else ""
                shown = str(key) if len(str(key)) <= 60 else str(key)[:57] + "..."
                problems.append(f"unknown argument '{prefix}{shown}'{hint} (accepted arguments: {accepted})")
            else:
                out[key] = value
            continue
        if value is None and key not in required and "null" not in _types(properties[key]):
            continue  # an explicit null for an optional argument means "use the default"
        out[key] = _check(value, properties[key], f"{prefix}{key}", problems)
    for key in required:
        if key not in out and not any(p.startswith(f"argument '{prefix}{key}'") for p in problems):
            prop = properties.get(key, {})
            kind = prop.get("type")
            kind_text = f" ({_a(kind)})" if isinstance(kind, str) else ""
            desc = prop.get("description", "")
            desc_text = f": {desc.split('. ')[0].rstrip('.')}" if desc else ""
            problems.append(f"missing required argument '{prefix}{key}'{kind_text}{desc_text}")
    for key, prop in properties.items():
        if key not in out and "default" in prop:
            out[key] = _copy_json(prop["default"])
    return out


def _copy_json(value: Any) -> Any:
    """A fresh mutable copy (specs hold frozen mappings and tuples)."""
    if isinstance(value, Mapping):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy_json(v) for v in value]
    return value


def _types(schema: Mapping[str, Any]) -> list[str]:
    declared = schema.get("type")
    if declared is None:
        return []
    return [declared] if isinstance(declared, str) else list(declared)


def validate_arguments(arguments: Any, schema: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``arguments`` against an object schema and return them with defaults filled in.

    Raises :class:`ArgumentError` listing every problem. ``arguments`` must be a mapping; a JSON
    string is refused (decode it first), so that a double-encoded argument object from a model is
    reported instead of guessed at.
    """
    if arguments is None:
        arguments = {}
    if isinstance(arguments, str | bytes):
        text = arguments.decode("utf-8", "replace") if isinstance(arguments, bytes) else arguments
        raise ArgumentError(
            [
                'arguments must be a JSON object such as {"path": "notes.txt"}, got a string '
                f"{_show(text)}; send the arguments as an object, not as JSON text inside a string"
            ]
        )
    if not isinstance(arguments, Mapping):
        raise ArgumentError(
            [f"arguments must be a JSON object of named arguments, got {json_type_name(arguments)} {_show(arguments)}"]
        )
    problems: list[str] = []
    clean = _check_object(arguments, schema, problems)
    if problems:
        raise ArgumentError(problems)
    return clean
