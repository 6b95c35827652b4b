"""Choosing and applying the decoder for a structure's keys and values.

The choice is made once per structure and role: the schema (``--schema`` / the TUI's "switch
decoder") wins; otherwise ``guess_type`` looks at the first few elements. Decoding itself never raises
for bad bytes: a failure is a ``Decoded`` with ``ok=False``.
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING, Any

from inspector.decode.storable import Decoded
from inspector.decode.valuetypes import TypeExpr, TypeSyntaxError, guess_type, parse_type

if TYPE_CHECKING:
    from inspector.structures.base import Structure

SAMPLE_SIZE = 16  # elements looked at to guess a type


def type_for(structure: Structure, role: str) -> TypeExpr:
    """The type expression used for a structure's keys ("key") or values ("value")."""
    cache: dict[str, TypeExpr] = structure.__dict__.setdefault("_types", {})
    chosen = (structure.settings or {}).get(role) if structure is not None else None
    cache_key = f"{role}:{chosen}"
    if cache_key in cache:
        return cache[cache_key]
    expr: TypeExpr | None = None
    if isinstance(chosen, str) and chosen not in ("", "auto"):
        try:
            expr = parse_type(chosen)
        except TypeSyntaxError:
            expr = None  # the CLI validates schema types up front; the TUI only offers valid ones
    if expr is None:
        # The other role's guess is made from the same elements when it will be guessed too: reading
        # them once (the 16 samples of a map of ~100 KB values were read twice, 1.6 MB each time).
        other = "value" if role == "key" else "key"
        other_chosen = (structure.settings or {}).get(other)
        other_key = f"{other}:{other_chosen}"
        both = other_key not in cache and not (
            isinstance(other_chosen, str) and other_chosen not in ("", "auto")
        )
        samples: list[bytes] = []
        others: list[bytes] = []
        for el in islice(structure.elements(0), SAMPLE_SIZE):
            data, rest = (el.key, el.value) if role == "key" else (el.value, el.key)
            if data is not None:
                samples.append(data)
            if both and rest is not None:
                others.append(rest)
        expr = guess_type(samples, "key" if role == "key" else "value")
        if both:
            cache[other_key] = guess_type(others, "key" if other == "key" else "value")
    cache[cache_key] = expr
    return expr


def decode_for(structure: Structure | None, role: str, data: bytes) -> Decoded:
    if structure is None:
        return parse_type("raw").decode(data)
    names = structure.names or None
    return type_for(structure, role).decode(data, names=names)


def validate_schema_types(settings: dict[str, dict[str, Any]]) -> list[str]:
    """Problems with the key/value type expressions of a schema, as messages for the user."""
    problems = []
    for mid, s in settings.items():
        for role in ("key", "value"):
            t = s.get(role)
            if t is None or t == "auto":
                continue
            try:
                parse_type(str(t))
            except TypeSyntaxError as exc:
                problems.append(f"[memory.{mid}] {role} = {t!r}: {exc}")
    return problems
