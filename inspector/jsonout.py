"""What the commands' JSON output shares: how values json cannot encode by itself are written."""

from __future__ import annotations

from typing import Any

# A value ``json.dumps`` is handed (with ``json_default`` for bytes, sets and tuples): honestly Any.
JsonValue = Any
JsonObject = dict[str, JsonValue]


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)``: bytes as hex, sets and tuples as lists, anything else as its text."""
    if isinstance(o, bytes | bytearray):
        return bytes(o).hex()
    if isinstance(o, set | tuple):
        return list(o)
    return str(o)
