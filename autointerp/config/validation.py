"""Settings checked before anything runs: every key of a section known, every value of the right
type and in range, each problem one line naming the section, the key, the value and what is
allowed (`[records] top_k = 2: a whole number >= 4 ...`)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

from autointerp.errors import ConfigError

# (is the value allowed, what is allowed): a section's checks beyond its field types.
Rule = tuple[Callable[[Any], bool], str]


def at_least(low: float, what: str = "a number") -> Rule:
    return (lambda value: value >= low), f"{what} >= {low}"


def above(low: float) -> Rule:
    return (lambda value: value > low), f"a number > {low}"


def between(low: float, high: float) -> Rule:
    return (lambda value: low <= value <= high), f"a number from {low} to {high}"


def one_of(*allowed: Any) -> Rule:
    return (lambda value: value in allowed), f"one of {', '.join(map(repr, allowed))}"


def matches(pattern: str, allowed: str) -> Rule:
    return (lambda value: re.fullmatch(pattern, value) is not None), allowed


def refuse(section: str, key: str, value: Any, allowed: str) -> ConfigError:
    """The one-line error for a value that is not allowed."""
    # Values that may hold a secret are never echoed.
    shown = "(not shown)" if key in ("api_key_env", "storage_options") else repr(value)
    return ConfigError(f"[{section}] {key} = {shown}: {allowed}")


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
}
_TYPE_NAMES = {
    "str": "a string",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
}


def _type_ok(annotation: str, value: Any) -> tuple[bool, str]:
    """Whether `value` fits a field annotation ("int", "float | None", "dict[str, str]", ...),
    and how to say what fits."""
    types = [t.strip() for t in annotation.split("|")]
    optional = "None" in types
    first = types[0]
    if value is None:
        return optional, "a value"
    if first.startswith("dict"):
        ok = isinstance(value, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        )
        return ok, "a table of string values"
    if first.startswith(("list", "tuple")):
        return isinstance(value, list) and all(
            isinstance(v, str) for v in value
        ), "a list of strings"
    if first not in _TYPES:
        return True, ""  # a nested section, checked by its own builder
    if isinstance(value, bool) and first != "bool":
        return False, _TYPE_NAMES[first]
    return isinstance(value, _TYPES[first]), _TYPE_NAMES[first] + (
        " (or unset)" if optional else ""
    )


def build(
    cls: type,
    section: str,
    raw: Any,
    *,
    rules: Mapping[str, Rule] | None = None,
    fixed: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Any:
    """An instance of the dataclass `cls` from the settings table `raw` of `[section]`: unknown
    keys, wrong types and values that break a rule (`rules`, else `cls.RULES`) refused in one
    line each. `fixed` fields (a profile's name) are not settings; `defaults` are used for keys
    the table leaves out."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{section}] must be a table of settings, not {raw!r}")
    fixed = dict(fixed or {})
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls) if f.name not in fixed}
    if unknown := sorted(set(raw) - set(fields)):
        raise ConfigError(
            f"[{section}] unknown keys {unknown}; known keys: {', '.join(sorted(fields))}"
        )
    for key, value in raw.items():
        ok, allowed = _type_ok(fields[key], value)
        if not ok:
            raise refuse(section, key, value, allowed)
    values = {**(defaults or {}), **raw}
    for key, (allowed_value, allowed) in (
        rules if rules is not None else getattr(cls, "RULES", {})
    ).items():
        value = values.get(key, _default(cls, key))
        if value is not None and not allowed_value(value):
            raise refuse(section, key, value, allowed)
    return cls(**fixed, **values)


def _default(cls: type, key: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == key:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return None
