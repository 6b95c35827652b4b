"""From an opened snapshot to the decoded model: MemoryManager, memories, structures, findings.

``analyze`` is the single entry point every view uses (summary, check, entries, salvage, diff, TUI).
It reads headers only; deep work (full B-tree walks, orphan scans) happens on demand through the
structure objects or ``Analysis.deep()``, so ``summary`` of a huge snapshot stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inspector.detect import MemoryRef, detect_structures
from inspector.jsonout import JsonObject
from inspector.memory import Memory
from inspector.memory_manager import MemoryManagerInfo
from inspector.model import Finding, severity_rank
from inspector.snapshot import Snapshot, metadata_summary
from inspector.structures.base import Structure, StructureId, find_by_memory_id

if TYPE_CHECKING:
    from inspector.analysis.reconstruct import Reconstruction
    from inspector.analysis.stable_save import StableSaveBlob


@dataclass
class Analysis:
    snapshot: Snapshot
    mm: MemoryManagerInfo
    memory_refs: list[MemoryRef]
    structures: list[Structure]
    findings: list[Finding] = field(default_factory=list)
    # Filled by the forensics pass (inspector.analysis.forensics) when it runs.
    diagnosis: list[str] = field(default_factory=list)
    reconstructed: Reconstruction | None = None  # when the layout had to be rebuilt
    stable_save: StableSaveBlob | None = None  # when a stable_save message was found
    extras: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # per-memory decoder settings (schema)
    deep_done: bool = False

    @property
    def has_errors(self) -> bool:
        return any(f.severity == "error" for f in self.all_findings())

    def all_findings(self) -> list[Finding]:
        seen: set[int] = set()
        out: list[Finding] = []
        for f in [*self.findings, *(f for s in self.structures for f in s.findings)]:
            if id(f) not in seen:
                seen.add(id(f))
                out.append(f)
        out.sort(
            key=lambda f: (severity_rank(f.severity), f.physical_ranges[0][0] if f.physical_ranges else -1)
        )
        return out

    def structure(self, memory_id: StructureId) -> Structure | None:
        return find_by_memory_id(self.structures, memory_id)

    def memory(self, memory_id: int | str) -> Memory | None:
        for mid, mem in self.memory_refs:
            if mid == memory_id:
                return mem
        return None

    def deep(self) -> None:
        """Full validated walks of every structure (adds their findings)."""
        if self.deep_done:
            return
        for s in self.structures:
            # A walk reads the mapped file; one that shrank meanwhile would end in SIGBUS.
            self.snapshot.check_unchanged()
            s.deep()
        self.deep_done = True

    def to_json(self, *, deep: bool = False) -> JsonObject:
        if deep:
            self.deep()
        snap = self.snapshot
        out: JsonObject = {
            "file": {
                "path": str(snap.file_path or snap.path),
                "size_bytes": snap.size,
                "size_pages": snap.size // 65_536,
            },
        }
        if snap.metadata is not None:
            out["snapshot_metadata"] = metadata_summary(snap.metadata)
        out["memory_manager"] = self.mm.to_json()
        out["structures"] = [s.to_json(deep=deep) for s in self.structures]
        out["findings"] = [f.to_json() for f in self.all_findings()]
        if self.diagnosis:
            out["diagnosis"] = self.diagnosis
        if self.stable_save is not None:
            out["stable_save"] = self.stable_save.to_json()
        if self.reconstructed is not None:
            out["reconstructed"] = self.reconstructed.to_json()
        # Keys starting with "_" are in-process hooks for the views (callables), not output.
        out.update({k: v for k, v in self.extras.items() if not k.startswith("_")})
        return out


def memory_refs_for(snapshot: Snapshot, mm: MemoryManagerInfo) -> list[MemoryRef]:
    if mm.present and mm.bucket_size_in_pages:
        return [(m.id, m.memory) for m in mm.memories]
    if mm.present:
        return []  # a manager we cannot read (unsupported layout version): no memories to decode
    return [("raw", snapshot.memory)]


def analyze(
    snapshot: Snapshot,
    *,
    options: dict[str, Any] | None = None,
    forensics: bool = True,
    base: int | None = None,
    orphan_scan: bool = True,
) -> Analysis:
    """Decode the layout of a snapshot. ``options`` maps memory ids (as strings) to decoder settings;
    ``base`` is where the MemoryManager header sits (None: offset 0, else found by a page scan);
    ``orphan_scan=False`` leaves the forensic scan for stray nodes to ``forensics.find_deferred_orphans``."""
    from inspector.analysis import real_layouts

    snapshot.check_unchanged()
    mm = real_layouts.locate_manager(snapshot, base)
    refs = memory_refs_for(snapshot, mm)
    structures, findings = detect_structures(refs, options)
    analysis = Analysis(
        snapshot,
        mm,
        refs,
        structures,
        [*snapshot.findings, *mm.findings, *findings],
        options=dict(options or {}),
    )
    real_layouts.attach_nested(analysis, options)
    app = real_layouts.application_region(analysis)
    if app is not None:
        analysis.extras["application_region"] = app
        analysis.extras["_application_region_node"] = real_layouts.application_region_node
    real_layouts.bucket_order_risk(analysis)
    if forensics:
        from inspector.analysis.forensics import run_forensics

        run_forensics(analysis, scan=orphan_scan)
    return analysis
