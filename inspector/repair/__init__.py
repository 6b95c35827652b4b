"""Writing a repaired snapshot: a rebuilt MemoryManager header and fresh B-trees (``stable-inspect repair``).

Headless like the rest of the core: ``plan`` decides what to write from an ``Analysis``, ``btree_writer``
and ``mm_writer`` produce the bytes (every layout from ``inspector.layouts``), ``output`` writes the
new snapshot and ``proof`` re-opens it with the project's own decoder.
"""
