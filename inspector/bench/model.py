"""What the benchmark measures against and what it reports: the reference limits, the run configurations
(full, quick, tiny), one row of the result table and the timings behind it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from inspector.errors import InspectorError

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Reference figures from the issue (seconds).
NATIVE_WALK_S = 0.2
SUMMARY_LIMIT_S = 1.5
SUMMARY_RSS_LIMIT_MB = 150.0
DEEP_LIMIT_X = 5.0
JSONL_LIMIT_X = 15.0
DIFF_LIMIT_X = 1.0
CHECK_LIMIT_S = 20.0
TUI_PAINT_LIMIT_S = 1.0
# Issue 16: a diff where every other byte differs must finish in seconds at 64 MiB.
HOSTILE_DIFF_MIB = 64
HOSTILE_DIFF_LIMIT_S = 10.0
# A "stall" is the UI's event loop blocked long enough for a user to notice a frozen screen.
TUI_STALL_LIMIT_S = 0.25
# "Flat" memory: peak RSS on the 8 GiB snapshot at most this much above the same layout at 1 GiB.
FLAT_RSS_LIMIT_X = 1.25

# Bumped whenever a recipe changes, so cached inputs of an older recipe are rebuilt.
INPUT_VERSION = 2  # 2: maps grown by the library's insert/remove algorithm (inspector/forge/btree_grow.py)
MiB = 1 << 20
GiB = 1 << 30
U64_MASK = (1 << 64) - 1
PAGE = 65536
VEC_HEADER_LEN = 64  # StableVec header: its items start here


@dataclass(frozen=True)
class Config:
    """Input sizes and repetitions of one benchmark flavour."""

    name: str
    entries: int  # of the u64 → u64 map
    sparse_gib: float  # the big sparse snapshot (summary, check, TUI)
    small_sparse_gib: float  # the same layout, smaller: peak RSS must not depend on size
    dense_mib: int  # each of the two diffed snapshots (written densely so cmp does real work)
    patches: int  # scattered single-byte differences between them
    runs: int  # timed runs per target (after one untimed, checked run)
    tui_runs: int
    tui_inputs: int = 5  # how many of the inputs the TUI first-paint is measured on
    warmup: bool = True  # one untimed run first (off only for the smoke test, where speed is moot)
    tui_keys: int = 40  # scale of the TUI scroll test (about 3× this many key presses)
    scale_entries: int = 0  # the big random-order map of the scale rows (0: no scale rows)
    # Timed runs of the rows judged as a ratio to a reference timed interleaved in the same run (the
    # diffs against ``cmp -s``, the deep walks against the native walk); 0: ``runs``. A diff near its
    # 1.0× limit flipped between passing and failing from one bench run to the next with 5 (±5–10%
    # run-to-run noise on this kind of VM); more runs narrow the median, they do not move it.
    ratio_runs: int = 0

    @property
    def interleaved_runs(self) -> int:
        return self.ratio_runs or self.runs


FULL = Config("full", 1_000_000, 8.0, 1.0, 1024, 1000, 5, 3, scale_entries=20_000_000, ratio_runs=9)
QUICK = Config("quick", 200_000, 8.0, 1.0, 256, 1000, 3, 1)
# For the smoke test: every code path, tiny inputs, one run each.
TINY = Config(
    "tiny", 3_000, 0.05, 0.02, 6, 50, 1, 1, tui_inputs=1, warmup=False, tui_keys=4, scale_entries=4_000
)


@dataclass
class Row:
    """One line of the result table.

    ``ratio`` is figure ÷ reference where the issue states a reference (the native walk, ``cmp -s``,
    the small snapshot's RSS), otherwise figure ÷ limit (the share of the budget used).
    ``passed`` is None for reference rows and for targets that could not be measured.
    """

    target: str
    figure: float | None
    unit: str
    limit: float | None
    limit_text: str
    ratio: float | None
    passed: bool | None
    rss_mb: float | None = None
    samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def result(self) -> str:
        if self.passed is None:
            return "ref" if self.figure is not None else "n/a"
        return "pass" if self.passed else "FAIL"


@dataclass
class Timing:
    """Wall times of the timed runs and the largest peak RSS among them."""

    times: list[float]
    rss_kb: int
    rc: int

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def rss_mb(self) -> float:
        return self.rss_kb / 1024


class BenchError(InspectorError):
    """A benchmark step that cannot go on (an input failed its check, a command crashed)."""
