"""Dialogs and full screens: help, legend, go to, find, load .did/schema, export, confirm.

Every text that may contain a path or snapshot data goes into widgets with ``markup=False`` or as a
``Text`` object, so a file called ``[red]x`` is shown as typed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, RadioButton, RadioSet, Static

from inspector.safe_text import safe_rich_text
from inspector.views.colour_roles import LEGEND, MAP_CLASSES, MAP_LEGEND, ROLE_CLASSES

Validator = Callable[[str], str | None]  # returns an error message, or None when the input is fine


@dataclass(frozen=True)
class HelpRow:
    section: str
    key: str
    id: str
    description: str


class HelpScreen(ModalScreen[None]):
    """Every action with its key, in words (built from the live bindings, so none is missing)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "dismiss_help", "Close", id="help.close"),
    ]

    def __init__(self, rows: list[HelpRow]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=True)
        table.add_column("where", no_wrap=True)
        table.add_column("key", no_wrap=True, style="bold")
        table.add_column("action", ratio=1)
        section = ""
        for row in self.rows:
            table.add_row(
                Text(row.section if row.section != section else ""),
                Text(row.key),
                Text(row.description),
            )
            section = row.section
        with Vertical(id="help-box", classes="dialog"):
            yield Static(
                Text("Keys and actions  (every action is also in the command palette, ctrl+p)"),
                classes="title",
            )
            with VerticalScroll(id="help-scroll"):
                yield Static(table, id="help-table")
            yield Static(Text("escape closes"), classes="hint")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)


class LegendView(Static):
    """Colour swatches drawn with the same component classes the hex view and the map use."""

    COMPONENT_CLASSES: ClassVar[set[str]] = set(ROLE_CLASSES) | set(MAP_CLASSES)

    def on_mount(self) -> None:
        self.update(self._table())

    def _table(self) -> Table:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(no_wrap=True)
        table.add_column()
        table.add_row(Text("hex view and tree", style="bold"), Text(""))
        for role, meaning in LEGEND:
            swatch = Text(" 4d 47 52 ", style=self.get_component_rich_style(f"role--{role}", partial=True))
            table.add_row(swatch, Text(meaning))
        table.add_row(Text(""), Text(""))
        table.add_row(Text("memory map", style="bold"), Text(""))
        for state, meaning in MAP_LEGEND:
            label, _, text = meaning.partition("  ")
            swatch = Text(
                f" {label:<2} ".ljust(10), style=self.get_component_rich_style(f"map--{state}", partial=True)
            )
            table.add_row(swatch, Text(text.strip()))
        table.add_row(Text(""), Text(""))
        table.add_row(
            Text("selection", style="bold"), Text("the selected region's bytes have a highlighted background")
        )
        table.add_row(Text("cursor", style="bold"), Text("the byte under the cursor is shown in reverse"))
        return table


class LegendScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,l", "close", "Close", id="legend.close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="legend-box", classes="dialog"):
            yield Static(Text("What the colours mean"), classes="title")
            yield LegendView(id="legend")
            yield Static(Text("escape closes"), classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)


class PromptScreen(ModalScreen[str | None]):
    """One line of input with a hint; ``validate`` may refuse it with a message (the dialog stays)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(
        self,
        title: str,
        hint: str,
        *,
        value: str = "",
        placeholder: str = "",
        validate: Validator | None = None,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.hint = hint
        self.value = value
        self.placeholder = placeholder
        self._validator = validate

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog prompt"):
            yield Static(Text(self.title_text), classes="title")
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt-input")
            yield Static(Text(self.hint), classes="hint")
            yield Static(Text(""), classes="error", id="prompt-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value
        if self._validator is not None:
            error = self._validator(value)
            if error:
                self.query_one("#prompt-error", Static).update(safe_rich_text(error))
                return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class GotoScreen(PromptScreen):
    pass


class FindScreen(PromptScreen):
    pass


class LoadScreen(PromptScreen):
    pass


@dataclass(frozen=True)
class ExportRequest:
    what: str  # "region" | "structure"
    fmt: str  # "json" | "raw"
    path: str


class ExportScreen(ModalScreen[ExportRequest | None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="export.cancel")]

    def __init__(
        self,
        region_name: str,
        structure_name: str | None,
        default_path: Callable[[str, str], str],
        validate: Callable[[ExportRequest], str | None],
    ) -> None:
        super().__init__()
        self.region_name = region_name
        self.structure_name = structure_name
        self.default_path = default_path
        self._validator = validate

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog export"):
            yield Static(Text("Export"), classes="title")
            with Horizontal(classes="choices"):
                with RadioSet(id="export-what"):
                    yield RadioButton(
                        safe_rich_text(f"selected region: {self.region_name}"), value=True, id="what-region"
                    )
                    if self.structure_name is not None:
                        yield RadioButton(
                            safe_rich_text(f"whole structure: {self.structure_name}"), id="what-structure"
                        )
                with RadioSet(id="export-format"):
                    yield RadioButton(Text("JSON (decoded)"), value=True, id="fmt-json")
                    yield RadioButton(Text("raw bytes"), id="fmt-raw")
            yield Input(value=self.default_path("region", "json"), id="export-path")
            yield Static(
                Text("enter exports · an existing file is only replaced after you confirm · escape cancels"),
                classes="hint",
            )
            yield Static(Text(""), classes="error", id="export-error")
            with Horizontal(classes="buttons"):
                yield Button("Export", variant="primary", id="export-ok")
                yield Button("Cancel", id="export-cancel")

    def on_mount(self) -> None:
        self.query_one("#export-path", Input).focus()

    def _request(self) -> ExportRequest:
        what = "structure" if self._pressed("export-what") == "what-structure" else "region"
        fmt = "raw" if self._pressed("export-format") == "fmt-raw" else "json"
        return ExportRequest(what, fmt, self.query_one("#export-path", Input).value.strip())

    def _pressed(self, set_id: str) -> str | None:
        button = self.query_one(f"#{set_id}", RadioSet).pressed_button
        return button.id if button is not None else None

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        req = self._request()
        self.query_one("#export-path", Input).value = self.default_path(req.what, req.fmt)

    def _submit(self) -> None:
        req = self._request()
        error = self._validator(req)
        if error:
            self.query_one("#export-error", Static).update(safe_rich_text(error))
            return
        self.dismiss(req)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "export-ok":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog confirm"):
            yield Static(safe_rich_text(self.question), classes="title")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", variant="warning", id="confirm-yes")
                yield Button("No (n)", id="confirm-no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


__all__ = [
    "ConfirmScreen",
    "ExportRequest",
    "ExportScreen",
    "FindScreen",
    "GotoScreen",
    "HelpRow",
    "HelpScreen",
    "LegendScreen",
    "LoadScreen",
    "PromptScreen",
]
