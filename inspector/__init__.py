"""stable-inspect: read ic-stable-structures layouts out of raw stable-memory snapshots."""

__version__ = "0.1.0"
