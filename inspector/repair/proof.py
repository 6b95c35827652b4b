"""Proof in the tool: re-open the repaired snapshot with the project's own decoder and compare.

Each rebuilt or kept map is walked with the validated walk; its count and ``entries_sha256`` must equal
the plan's (computed from the entries the plan chose, not from the written bytes), and the whole
snapshot must have no error finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inspector.repair.model import RepairPlan


@dataclass
class MapProof:
    memory_id: int
    count: int
    entries_sha256: str
    depth: int
    nodes: int
    matches_plan: bool
    findings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "entries_sha256": self.entries_sha256,
            "depth": self.depth,
            "nodes": self.nodes,
            "matches_plan": self.matches_plan,
            "walk_findings": self.findings,
        }


@dataclass
class Proof:
    maps: dict[int, MapProof]
    error_findings: list[str]
    manager_present: bool

    @property
    def ok(self) -> bool:
        return (
            self.manager_present
            and not self.error_findings
            and all(m.matches_plan for m in self.maps.values())
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "memory_manager_present": self.manager_present,
            "maps": {str(k): m.to_json() for k, m in sorted(self.maps.items())},
            "error_findings": self.error_findings,
        }


def prove(path: str, plan: RepairPlan) -> Proof:
    from inspector.session import load

    session = load(path)
    try:
        analysis = session.analysis
        analysis.deep()
        maps: dict[int, MapProof] = {}
        for mid, mp in plan.maps.items():
            s = analysis.structure(mid)
            if s is None or s.kind != "btreemap":
                maps[mid] = MapProof(mid, 0, "", 0, 0, False, [f"memory {mid} holds no BTreeMap"])
                continue
            walk = s.map.walk()  # type: ignore[attr-defined]
            maps[mid] = MapProof(
                mid,
                walk.entry_count,
                walk.entries_sha256,
                walk.nodes["depth"],
                walk.nodes["count"],
                walk.entry_count == mp.count and walk.entries_sha256 == mp.digest,
                [f"{f.severity} {f.code}: {f.message}" for f in walk.findings],
            )
        errors = [f"{f.code}: {f.message}" for f in analysis.all_findings() if f.severity == "error"]
        return Proof(maps, errors, analysis.mm.present)
    finally:
        session.close()
