"""Diff of two stable-memory snapshots, in four levels, each built on the one before.

- ``byte_ranges``: the exact physical byte ranges that differ (neither file read whole);
- ``layout``: MemoryManager header, bucket owners and memories old -> new, each changed range attributed;
- ``entries`` (with ``map_nodes``, ``sequences`` and ``prefetch``): per-structure entries added, removed, changed;
- ``verdict``: the incident named in plain words;
- ``engine``: ``diff_sessions(old, new)`` runs all four and returns a ``SnapshotDiff``.

Nothing here imports Textual.
"""
