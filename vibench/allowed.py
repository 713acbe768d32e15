"""What a setting allows: a predicate with its description for the user, e.g. "an integer >= 1".

Used by the typed settings (their fields carry one in ``metadata["allowed"]``, see
:func:`field_checks`) and by :mod:`vibench.config_checks` for the other swept scalars, so that
every refusal reads the same: ``KEY=VALUE is not valid: KEY must be <description>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

Allowed = tuple[Callable[[Any], bool], str]


def integer(minimum: int | None = None) -> Allowed:
    desc = "an integer" + (f" >= {minimum}" if minimum is not None else "")
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and (minimum is None or v >= minimum)), desc


def number(minimum: float, strict: bool) -> Allowed:
    desc = f"a number {'>' if strict else '>='} {minimum:g}"
    return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and (v > minimum if strict else v >= minimum)), desc


def unit() -> Allowed:
    return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1), "a number in [0, 1]"


def optional(allowed: Allowed) -> Allowed:
    return (lambda v: v is None or allowed[0](v)), f"null or {allowed[1]}"


def one_of(*choices: Any, desc: str | None = None) -> Allowed:
    return (lambda v: v in choices), desc or " or ".join(str(c) for c in choices)


BOOL: Allowed = (lambda v: isinstance(v, bool)), "true or false"


def field_checks(prefix: str, settings: type) -> dict[str, Allowed]:
    """``{"prefix.field": allowed}`` for the fields of a settings dataclass: each field's
    ``metadata["allowed"]``, or true/false for a ``bool`` field (fields with neither are not checked here)."""
    checks = {}
    for f in dataclasses.fields(settings):
        allowed = f.metadata.get("allowed") or (BOOL if f.type in (bool, "bool") else None)
        if allowed is not None:
            checks[f"{prefix}.{f.name}"] = allowed
    return checks


def unknown_fields(keys: Any, settings: type) -> list[str]:
    """The keys that are not fields of the settings dataclass."""
    names = {f.name for f in dataclasses.fields(settings)}
    return [str(k) for k in keys if str(k) not in names]
