"""Headless support for the views: what the TUI (and any other front end) shows, computed without Textual.

- ``navigation``: the go-to box's syntax and what sits at an offset, in words;
- ``value_display``: a decoded value as bounded, escaped display text;
- ``export``: a region's bytes or decoded value written to a file that never overwrites the input;
- ``colour_roles``: what each colour means (region kinds and memory-map states mapped to colour roles).
"""
