"""Exporting the selected region or a whole structure, as decoded JSON or raw bytes.

Files are written by ``inspector.output``, the writer the CLI uses too: never the input snapshot (by
path or by inode), devices and FIFOs written in place, symlinks only to regular files, regular files
as ``NAME.partial`` renamed when complete. Overwriting an existing file needs ``overwrite=True``, which
the UI only passes after the user confirmed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from inspector.jsonout import JsonObject, JsonValue
from inspector.model import Region
from inspector.output import OutputError, write_output
from inspector.output import check_output as _check
from inspector.views.value_display import CORE_LOCK, Shown, show_value

if TYPE_CHECKING:
    from inspector.mapped_pages import ByteSource
    from inspector.structures.base import Element, Structure

Progress = Callable[[int, int], bool]  # (done, total) → keep going?
CHUNK = 1 << 22


# One writer for the CLI and the TUI (inspector.output); its error is this module's ExportError.
ExportError = OutputError


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    return (s[:limit] or "region").lower()


def check_output(path: str | Path, inputs: list[Path | None], *, overwrite: bool) -> Path:
    """The output path, or ExportError when it would touch an input or clobber a file unasked."""
    if not str(path).strip():
        raise ExportError("type a file name")
    target = _check(str(Path(str(path)).expanduser()), inputs, force=overwrite, force_hint="")
    if target.path is None:
        raise ExportError("the export needs a file name, not standard output")
    return target.path


def write_atomic(out: Path, writer: Callable[[BinaryIO], object]) -> None:
    """Write ``out`` by the rules of ``inspector.output`` (the caller has checked it already)."""
    write_output(out, writer, force=True)


def shown_json(s: Shown | None) -> JsonObject | None:
    if s is None:
        return None
    out: JsonObject = {"text": s.text, "value": s.value, "ok": s.ok}
    if s.error:
        out["error"] = s.error
    if s.data is not None:
        out["hex"] = s.data.hex()
    return out


def _jsonable(v: object) -> JsonValue:
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def region_json(region: Region, *, depth: int = 3) -> JsonObject:
    """A region with its fields, findings, decoded value and already loaded children (depth-bounded)."""
    out: JsonObject = {
        "name": region.name,
        "kind": region.kind,
        "physical_ranges": [[s, e] for s, e in region.ranges],
    }
    if region.memory_id is not None:
        out["memory_id"] = region.memory_id
    if region.virtual_start is not None:
        out["virtual_start"] = region.virtual_start
    if region.detail:
        out["detail"] = region.detail
    if region.fields:
        out["fields"] = [
            {
                "name": f.name,
                "value": _jsonable(f.value),
                "text": f.text(),
                **({"span": list(f.span)} if f.span else {}),
            }
            for f in region.fields
        ]
    if region.findings:
        out["findings"] = [f.to_json() for f in region.findings]
    if region.value is not None:
        out["decoded"] = shown_json(show_value(region.value))
    if depth > 0 and region.children_loaded and region.children():
        out["children"] = [region_json(c, depth=depth - 1) for c in region.children()]
    return out


def region_bytes(buf: ByteSource, region: Region) -> Iterator[bytes]:
    for s, e in region.ranges:
        for pos in range(s, e, CHUNK):
            yield bytes(buf[pos : min(e, pos + CHUNK)])


def export_region(region: Region, buf: ByteSource, out: Path, fmt: str) -> int:
    """Write one region; returns the number of bytes written."""
    if fmt == "raw":
        total = 0

        def write_raw(fh: BinaryIO) -> None:
            nonlocal total
            for chunk in region_bytes(buf, region):
                fh.write(chunk)
                total += len(chunk)

        write_atomic(out, write_raw)
        return total
    data = json.dumps(region_json(region), indent=2, ensure_ascii=False, default=str).encode("utf-8")
    write_atomic(out, lambda fh: fh.write(data))
    return len(data)


def _entry_json(structure: Structure, el: Element) -> JsonObject:
    from inspector.regions import ValueRef

    out: JsonObject = {"index": el.index}
    if el.key is not None:
        out["key"] = shown_json(show_value(ValueRef(el.key, structure, "key")))
    out["value"] = shown_json(show_value(ValueRef(el.value, structure, "value")))
    return out


def export_structure(structure: Structure, out: Path, fmt: str, progress: Progress | None = None) -> int:
    """Write a whole structure: its header and every entry decoded (JSON), or its memory's bytes (raw)."""
    if fmt == "raw":
        mem = structure.mem
        size = mem.size
        written = 0

        def write_raw(fh: BinaryIO) -> None:
            nonlocal written
            for pos in range(0, size, CHUNK):
                with CORE_LOCK:
                    chunk = mem.read(pos, min(CHUNK, size - pos))
                fh.write(chunk)
                written += len(chunk)
                if progress is not None and not progress(written, size):
                    raise ExportError("export cancelled")

        write_atomic(out, write_raw)
        return written
    with CORE_LOCK:
        header = structure.to_json(deep=False)
        count = structure.count()

    def write_json(fh: BinaryIO) -> None:
        fh.write(b'{\n"structure": ')
        fh.write(json.dumps(header, ensure_ascii=False, default=str).encode("utf-8"))
        fh.write(b',\n"entries": [\n')
        first = True
        n = 0
        with CORE_LOCK:
            elements = structure.elements(0)
        while True:
            with CORE_LOCK:
                el = next(elements, None)
                item = None if el is None else _entry_json(structure, el)
            if item is None:
                break
            if not first:
                fh.write(b",\n")
            first = False
            fh.write(json.dumps(item, ensure_ascii=False, default=str).encode("utf-8"))
            n += 1
            if progress is not None and n % 200 == 0 and not progress(n, count):
                raise ExportError("export cancelled")
        fh.write(b"\n]\n}\n")
        if progress is not None:
            progress(n, count)

    write_atomic(out, write_json)
    return out.stat().st_size
