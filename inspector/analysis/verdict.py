"""The incident's verdict in two lines: what happened, and the exact next command to run.

Derived from the forensics' diagnosis (``Analysis.diagnosis``), so the TUI's first screen, and any
other view that has room for two lines only, say the same thing as the full diagnosis.
"""

from __future__ import annotations

import re

_COMMAND = re.compile(r"`(stable-inspect [^`]+)`")


def _first_sentence(text: str) -> str:
    m = re.search(r"(?<=[a-z0-9)'\"])\. (?=[A-Z])", text)
    return text[: m.start() + 1] if m else text


def verdict(diagnosis: list[str]) -> tuple[str, str | None]:
    """(headline, next command or None) of a diagnosis; ("", None) when there is none."""
    if not diagnosis:
        return "", None
    head = diagnosis[0]
    label, sep, rest = head.partition(": ")
    headline = _first_sentence(rest if sep and len(label) < 20 else head)
    command = None
    for line in diagnosis:
        if line.startswith("What to do") or command is None:
            m = _COMMAND.search(line)
            if m is not None:
                command = m.group(1)
                if line.startswith("What to do"):
                    break
    return headline, command
