"""The "Repair…" palette action: the dry-run plan on screen, then the repaired snapshot on confirmation.

Everything it shows and writes comes from ``inspector.repair`` (the same plan, writer and proof as
``stable-inspect repair``); this module only asks for a path (and, when the bucket table is gone, for
the MemoryIds) and runs the work off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from inspector.safe_text import safe_rich_text


class RepairScreen(ModalScreen[str | None]):
    """The plan (scrollable), a path to write to, Repair / Cancel. Dismisses with the typed path."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="repair.cancel")]
    DEFAULT_CSS = """
    RepairScreen #repair-plan { height: 1fr; border: round $primary-darken-2; }
    RepairScreen #repair-hint { color: $text-muted; }
    RepairScreen .title { margin-bottom: 0; }
    RepairScreen .buttons { margin-top: 0; }
    """

    def __init__(self, plan_text: str, default_path: str, validate: Callable[[str], str | None]) -> None:
        super().__init__()
        self.plan_text = plan_text
        self.default_path = default_path
        self._validator = validate

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog repair", id="repair-box"):
            yield Static(Text("Repair: the plan (dry run, nothing written yet)"), classes="title")
            with VerticalScroll(id="repair-plan"):
                yield Static(Text("\n").join(safe_rich_text(line) for line in self.plan_text.splitlines()))
            yield Input(value=self.default_path, id="repair-path")
            yield Static(
                Text("enter: write a NEW snapshot there (never the input) · esc: cancel"), id="repair-hint"
            )
            yield Static(Text(""), classes="error", id="repair-error")
            with Horizontal(classes="buttons"):
                yield Button("Repair", variant="warning", id="repair-ok")
                yield Button("Cancel", id="repair-cancel")

    def on_mount(self) -> None:
        # Inline styles: the shared ".dialog" rule (fixed width, auto height) would win over DEFAULT_CSS.
        box = self.query_one("#repair-box")
        box.styles.width = "95%"
        box.styles.max_width = 140
        box.styles.height = "100%"
        box.styles.max_height = "100%"
        box.styles.padding = (0, 1)
        self.query_one("#repair-path", Input).focus()

    def _submit(self) -> None:
        path = self.query_one("#repair-path", Input).value.strip()
        error = self._validator(path)
        if error:
            self.query_one("#repair-error", Static).update(safe_rich_text(error))
            return
        self.dismiss(path)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "repair-ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def start_repair(app: Any, assign: list[str] | None = None) -> None:
    """Plan in a worker thread, then show the plan; on a typed path, write and prove in a worker."""
    from inspector.views.value_display import CORE_LOCK

    def plan_worker() -> None:
        from inspector.commands.repair import plan_lines
        from inspector.repair.plan import RepairError, make_plan

        try:
            with CORE_LOCK:
                plan = make_plan(app.analysis, assign=assign or [])
        except RepairError as exc:
            app.call_from_thread(_ask_assign, app, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not take the UI down
            app.call_from_thread(app.notify, f"repair failed: {type(exc).__name__}: {exc}", severity="error")
            return
        text = "\n".join(plan_lines(plan, str(app.session.snapshot.path)))
        app.call_from_thread(_show_plan, app, plan, text)

    app.notify("planning the repair…", markup=False)
    app.run_worker(plan_worker, thread=True, exclusive=True, group="repair")


def _ask_assign(app: Any, error: str) -> None:
    from inspector.tui.screens import PromptScreen

    if "--assign" not in error:
        app.notify(error, severity="error", markup=False)
        return

    def done(text: str | None) -> None:
        if text:
            start_repair(app, text.replace(",", " ").split())

    app.push_screen(
        PromptScreen(
            "Repair: which MemoryIds?",
            error + "\nType assignments like ?b1=4 (several separated by spaces); escape cancels.",
            placeholder="?b1=4",
        ),
        done,
    )


def _show_plan(app: Any, plan: Any, text: str) -> None:
    from inspector.tui.screens import ConfirmScreen
    from inspector.views.export import ExportError, check_output

    if plan.case == "nothing":
        app.notify("nothing to repair: " + "; ".join(plan.notes), markup=False)
        return
    snap = app.session.snapshot
    inputs = [snap.file_path, snap.path]
    name = snap.path.name or "snapshot"
    default = str(
        snap.path.with_name(name.removesuffix(".bin") + "-repaired" + (".bin" if snap.path.is_file() else ""))
    )

    def validate(path: str) -> str | None:
        try:
            out = (
                check_output(path, inputs, overwrite=True) if snap.path.is_file() else Path(path).expanduser()
            )
        except ExportError as exc:
            return str(exc)
        if not out.parent.exists():
            return f"{out.parent}: no such directory"
        return None

    def chosen(path: str | None) -> None:
        if path is None:
            return
        out = Path(path).expanduser()
        if out.exists():

            def confirmed(yes: bool | None) -> None:
                if yes:
                    _write(app, plan, out, force=True)

            app.push_screen(ConfirmScreen(f"{out} already exists. Replace it?"), confirmed)
            return
        _write(app, plan, out, force=False)

    app.push_screen(RepairScreen(text, default, validate), chosen)


def _write(app: Any, plan: Any, out: Path, *, force: bool) -> None:
    def worker() -> None:
        from inspector.repair.output import write_repaired
        from inspector.repair.proof import prove

        try:
            write_repaired(app.session.snapshot, plan, out, force)
            proof = prove(str(out), plan)
        except Exception as exc:  # noqa: BLE001 - UsageError/OSError and bugs alike: report, keep the UI
            app.call_from_thread(app.notify, f"repair failed: {exc}", severity="error", markup=False)
            return
        counts = "; ".join(m.line() for m in plan.maps.values())
        verdict = "proof: OK, no error finding" if proof.ok else "proof FAILED: see `stable-inspect check`"
        app.call_from_thread(
            app.notify,
            f"wrote {out}. {counts}. {verdict}",
            severity="information" if proof.ok else "error",
            markup=False,
            timeout=15,
        )

    app.notify(f"writing {out}…", markup=False)
    app.run_worker(worker, thread=True, exclusive=True, group="repair")
