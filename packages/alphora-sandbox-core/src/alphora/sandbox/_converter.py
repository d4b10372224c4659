"""The config converter: cattrs, strict about types, with errors that name the field.

:data:`converter` structures dicts into attrs classes (config, limits, policies, a backend's
options) and back. It forbids unknown keys; ``"yes"`` is not an int. :func:`configuration_error`
turns whatever cattrs raised into one :class:`~alphora.sandbox.errors.ConfigurationError` whose
``.field`` is the path of the first bad field. Knows no config class of its own:
:mod:`alphora.sandbox.config` registers :class:`~alphora.sandbox.config.SandboxConfig` on it and
re-exports :data:`converter`.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
import cattrs
import cattrs.gen
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)

from .egress.policy import EgressPolicy
from .errors import ConfigurationError
from .storage.base import StorageConfig
from .types import ResourceLimits, SecurityPolicy

#: attrs class → what else its dict form accepts besides its fields (said for an unknown key)
EXTRA_KEYS_NOTE: dict[type[Any], str] = {}


class _BadValue(ValueError):
    """A primitive could not be structured; carries a readable reason."""


def _structure_bool(value: Any, _t: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _BadValue(f"expected a boolean (true/false), got {value!r}")


def _structure_int(value: Any, _t: Any) -> int:
    if isinstance(value, bool):
        raise _BadValue(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise _BadValue(f"expected an integer, got {value!r}")


def _structure_float(value: Any, _t: Any) -> float:
    if isinstance(value, bool):
        raise _BadValue(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise _BadValue(f"expected a number, got {value!r}")


def _structure_str(value: Any, _t: Any) -> str:
    if isinstance(value, str):
        return value
    raise _BadValue(f"expected a string, got {value!r} (quote it in YAML)")


def _structure_str_tuple(value: Any, _t: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, (list, tuple)):
        raise _BadValue(f"expected a list of strings, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _BadValue(f"item {i} must be a string, got {item!r}")
        out.append(item)
    return tuple(out)


def _structure_egress(value: Any, _t: Any) -> EgressPolicy | None:
    """``security_policy.egress`` from a file or the environment: a mapping (``allow``,
    ``credentials``), a list of allow entries, or a string: JSON of either, else allow entries
    separated by commas (``SANDBOX_EGRESS="pkgs.example.org,*.example.com:443"``)."""
    if value is None or isinstance(value, EgressPolicy):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "["):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise _BadValue(f"expected JSON (an object or a list), got {value!r}: {exc}") from None
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return EgressPolicy.from_value(value)
    except (ValueError, TypeError) as exc:
        raise _BadValue(str(exc)) from None


def _unstructure_egress(policy: EgressPolicy) -> dict[str, Any]:
    """The plain form :func:`_structure_egress` reads back (credentials included: ``to_dict()`` is
    meant to round-trip, like storage secrets; don't log it)."""
    return policy.to_value()


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], _structure_str_tuple)
    conv.register_unstructure_hook(tuple, list)
    conv.register_structure_hook_func(lambda t: t == (EgressPolicy | None), _structure_egress)
    conv.register_unstructure_hook(EgressPolicy, _unstructure_egress)
    for cls in (ResourceLimits, SecurityPolicy, StorageConfig):
        _register_class(conv, cls)
    return conv


def _register_class(conv: cattrs.Converter, cls: type[Any]) -> Callable[[Any, Any], Any]:
    """Structure ``cls`` with cattrs, and turn an attrs *validator* failure into an error that
    names its attribute (cattrs only names attributes whose structuring failed). Returns the hook."""
    attrs.resolve_types(cls)
    base = cattrs.gen.make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True)

    def hook(data: Any, _t: Any) -> Any:
        if not isinstance(data, Mapping):
            raise _BadValue(f"expected a mapping for {cls.__name__}, got {data!r}")
        try:
            return base(data, cls)
        except BaseValidationError as exc:
            # cattrs attributed some errors to fields; attrs validators of the other fields never
            # ran (or failed in __init__ without a field name): run them alone and merge
            attributed = {
                n.name
                for e in exc.exceptions
                for n in getattr(e, "__notes__", ())
                if isinstance(n, AttributeValidationNote)
            }
            kept = [
                e
                for e in exc.exceptions
                if isinstance(e, ForbiddenExtraKeysError)
                or any(isinstance(n, AttributeValidationNote) for n in getattr(e, "__notes__", ()))
            ]
            located = _locate_validator_error(conv, cls, data, skip=attributed)
            if located is None:
                raise
            raise ClassValidationError(f"While structuring {cls.__name__}", [*located.exceptions, *kept], cls) from exc
        except (ValueError, TypeError) as exc:
            located = _locate_validator_error(conv, cls, data)
            if located is not None:
                raise located from exc
            raise

    conv.register_structure_hook(cls, hook)
    return hook


def _locate_validator_error(
    conv: cattrs.Converter, cls: type[Any], data: Mapping[str, Any], skip: set[str] | frozenset[str] = frozenset()
) -> ClassValidationError | None:
    """Re-run each field's converter and validator alone to find the ones that reject their value."""
    errors: list[Exception] = []
    for field in attrs.fields(cls):
        key = field.name
        if key not in data or key in skip or field.name in skip:
            continue
        try:
            value = conv.structure(data[key], field.type)
            if field.converter is not None:
                value = field.converter(value)
            if field.validator is not None:
                field.validator(None, field, value)
        except BaseValidationError:
            continue  # cattrs already reported it
        except (ValueError, TypeError) as exc:
            note = AttributeValidationNote(f"Structuring class {cls.__name__} @ attribute {key}", key, field.type)
            setattr(exc, "__notes__", [note])  # noqa: B010 - add_note() is 3.11+
            errors.append(exc)
    if not errors:
        return None
    return ClassValidationError(f"While structuring {cls.__name__}", errors, cls)


converter: cattrs.Converter = _make_converter()


def _walk(exc: BaseException, path: str) -> Iterator[tuple[str, BaseException]]:
    if isinstance(exc, ClassValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            yield from _walk(sub, f"{path}.{note.name}")
        for sub in without:
            yield from _walk(sub, path)
    elif isinstance(exc, BaseValidationError):
        for sub in exc.exceptions:
            notes = [n for n in getattr(sub, "__notes__", []) if isinstance(n, IterableValidationNote)]
            yield from _walk(sub, f"{path}[{notes[0].index!r}]" if notes else path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield f"{path}.{key}", exc
    else:
        yield path, exc


def _lookup(data: Any, path: str) -> Any:
    """The value at a ``$.a.b[0]`` / ``$.a['k']`` path of ``data`` (None when absent)."""
    cur = data
    for token in re.findall(r"\.([^.\[]+)|\[([^\]]+)\]", path):
        key: Any = token[0]
        if not key:
            try:
                key = ast.literal_eval(token[1])  # an index or a quoted mapping key
            except (ValueError, SyntaxError):
                key = token[1]
        try:
            cur = cur[key] if isinstance(cur, Mapping) else cur[int(key)]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return cur


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        if not attrs.has(exc.cl):
            return "unknown key"
        known = ", ".join(sorted(f.name for f in attrs.fields(exc.cl)))
        if exc.cl in EXTRA_KEYS_NOTE:
            known += "; " + EXTRA_KEYS_NOTE[exc.cl]
        return f"unknown key (known: {known})"
    if isinstance(exc, KeyError):
        return "required field is missing"
    msg = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return msg or type(exc).__name__


def _configuration_error(
    exc: BaseException,
    data: Mapping[str, Any],
    what: str,
    rename: Callable[[str], str] | None = None,
    sections: list[str] | None = None,
) -> ConfigurationError:
    """One ConfigurationError for everything ``exc`` found; ``sections`` are top-level backend
    sections of ``data``, reported where the user wrote them (``$.docker.image``)."""
    problems = [(p, e) for p, e in _walk(exc, "$")] or [("$", exc)]
    errors = []
    for path, err in problems:
        for key in sections or ():
            inner = f"$.backends.{key}"
            if path == inner or path.startswith((inner + ".", inner + "[")):
                path = f"$.{key}{path[len(inner) :]}"
        shown = rename(path) if rename else path
        value = _lookup(data, path)
        errors.append({"field": shown, "value": value, "message": _describe(err)})
    first = errors[0]
    # a validator's message that already shows the value ("…, got -5") is not repeated
    lines = [
        f"{e['field']}: {e['message']}" + ("" if re.search(r"\bgot\b", e["message"]) else f" (got {e['value']!r})")
        for e in errors
    ]
    return ConfigurationError(
        f"invalid {what}: " + "; ".join(lines), field=first["field"], value=first["value"], errors=errors
    )


def _note(exc: BaseException, name: str) -> None:
    """Mark ``exc`` as the failure of attribute/key ``name`` (how :func:`_walk` builds paths)."""
    note = AttributeValidationNote(f"Structuring @ {name}", name, Any)
    setattr(exc, "__notes__", [*getattr(exc, "__notes__", ()), note])  # noqa: B010 - add_note() is 3.11+


_registered: set[type[Any]] = set()
_registered_lock = threading.Lock()


def _ensure_registered(cls: type[Any]) -> None:
    """Give a backend's options class the converter's strict, field-naming structure hook."""
    if cls in _registered:
        return
    if not attrs.has(cls):
        raise TypeError(f"options_class {cls!r} must be an attrs class")
    with _registered_lock:
        if cls not in _registered:
            _register_class(converter, cls)
            _registered.add(cls)
