"""When Python's garbage collector runs its full passes while the TUI is up: at moments the app picks, never
inside a repaint.

A full (generation 2) collection walks every tracked object and holds the event loop meanwhile. With a big
map open (Textual's objects, the region tree, pages of entries) one took 0.1 s and more, and left to the
interpreter's own trigger it lands anywhere: inside the repaint that follows a key (40-80 ms of its own on
the bench machine) or while a page of a thousand nodes is added; together they were the longest stalls
measured while scrolling the 20M-entry map. So, while an app is mounted:

* the interpreter still makes its young collections (a few hundred objects each: cheap, and they keep the
  garbage of each key press from piling up), but not its full ones (``take_over``); a timer makes those
  instead (``collect_if_due``: a pass of its own on the event loop, as often as the interpreter's rule
  would have), so what is garbage stays bounded;
* after a moment that built many long-lived objects (a page of the tree added), ``settle`` collects and
  freezes the survivors, so later passes walk only what was made since; the first screen is frozen as it
  is (``freeze``), right after its paint;
* ``thaw`` hands the frozen objects back when a reload drops the old tree, and ``hand_back`` when the app
  closes (the interpreter's thresholds as they were), so nothing frozen is kept for good.

(Turning the collector off instead, with only timed passes, made each pass 2x longer: the young garbage
was left for them.)
"""

from __future__ import annotations

import gc

# Seconds between the timer's looks. A full pass is due after this many young-generation passes, the
# interpreter's own default (its ``threshold2``).
COLLECT_EVERY_S = 1.0
FULL_AFTER_YOUNG_PASSES = 10
# The interpreter's trigger for full passes, out of reach while the app holds it.
_NEVER = 1 << 30
# After a page of the tree is added, the settle waits this long: the page's repaint goes first.
SETTLE_AFTER_S = 0.1


class Collector:
    """The collector's schedule for one app (``take_over`` on mount, ``hand_back`` on unmount)."""

    def __init__(self) -> None:
        self._thresholds: tuple[int, int, int] | None = None

    def take_over(self) -> None:
        if self._thresholds is None:
            self._thresholds = gc.get_threshold()
            young, middle, _full = self._thresholds
            gc.set_threshold(young, middle, _NEVER)

    def hand_back(self) -> None:
        gc.unfreeze()
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None

    @staticmethod
    def collect_if_due() -> None:
        if gc.get_count()[2] >= FULL_AFTER_YOUNG_PASSES:
            gc.collect()

    @staticmethod
    def settle() -> None:
        gc.collect()
        gc.freeze()

    @staticmethod
    def freeze() -> None:
        # Without a collection first (it would walk all of the first screen, the stall this avoids): its
        # few garbage cycles wait for the thaw.
        gc.freeze()

    @staticmethod
    def thaw() -> None:
        gc.unfreeze()
