"""``stable-inspect open PATH`` (and plain ``stable-inspect PATH``): the terminal UI.

The snapshot is loaded before the UI starts, so an unreadable input raises ``InputError`` here and
the CLI prints one line and exits 2, without ever switching the terminal into application mode.
"""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from inspector.tui.app import InspectorApp, load_for_ui

    did = getattr(args, "did", None)
    schema = getattr(args, "schema", None)
    session = load_for_ui(args.path, did=did, schema=schema)
    app = InspectorApp(session, did_path=did, schema_path=schema, owns_session=True)
    app.run()
    return app.return_code or 0
