"""The enqueue form: a new job from pasted IDs or a file, checked before anything is written.

Every field is checked at once, against core's own limits (``limits.JOB_SETTINGS``),
so the operator fixes everything in one pass; the queue then checks again (it is
the authority) and its ``InvalidInput.field`` says which box the message belongs
to. ``enqueue_job`` is all-or-nothing, so an invalid form creates nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from chunkq import core
from chunkq.core import limits
from chunkq.tui import humanize
from chunkq.tui.dashboard import format as fmt
from chunkq.tui.dashboard.protocol import Dashboard, dashboard
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.widgets.fit_footer import FitFooter
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, Input, Label, Static, TextArea

#: a terminal shorter than this gets the compact form (scrolling between its title and its buttons)
SHORT_BELOW = 40
#: the job settings the form asks for: ``enqueue_job``'s keywords, checked by ``limits.JOB_SETTINGS``
SETTINGS: tuple[str, ...] = ("entity_type", "provider", "name", "chunk_size", "priority", "max_workers")
#: the optional boxes below the grid, checked by their own limits (``PROCESSOR_NAME``, ``TENANT``): empty is None
OTHER_FIELDS: tuple[str, ...] = ("processor", "tenant")


def field_id(name: str) -> str:
    """The form's widget id for a core field name: ``chunk_size`` -> ``chunk-size``."""
    return name.replace("_", "-")


def check_setting(name: str, raw: str) -> object:
    """The typed value of one box, or ``InvalidInput`` with core's own message for it."""
    limit = limits.JOB_SETTINGS[name]
    if isinstance(limit, limits.IntLimit | limits.FloatLimit):
        return limit.parse(raw)  # core's one reading of a typed number: "must be a whole number, got '…'"
    if isinstance(limit, limits.TextLimit) and limit.required and not raw.strip():
        raise core.InvalidInput(f"{name} is required", field=name)
    return limit.check(raw)


def parse_ids(text: str) -> list[str]:
    """One ID per line; blank lines are skipped, surrounding spaces dropped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _file_ids(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="strict") as fh:
        for line in fh:
            if line.strip():
                yield line.strip()


def _count_file(path: Path) -> int:
    return sum(1 for _ in _file_ids(path))


class EnqueueScreen(ModalScreen["core.Job | None"]):
    AUTO_FOCUS = "#entity-type"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Back", id="enqueue.cancel"),
        Binding("ctrl+s", "submit", "Enqueue", id="enqueue.submit", priority=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._count_timer: Timer | None = None
        self._file_count: int | None = None
        self.submitting = False
        self._initial: dict[str, str] = {}

    @property
    def dashboard(self) -> Dashboard:
        return dashboard(self)

    def compose(self) -> ComposeResult:
        with Vertical(id="enqueue-dialog"):
            yield Label("New job", id="enqueue-title")
            with VerticalScroll(id="enqueue-body"):
                with Grid(id="enqueue-grid"):
                    yield from self._field("entity-type", "Entity type", "company, person, url…")
                    yield from self._field("provider", "Provider", "clearbit, scraper…")
                    yield from self._field("name", "Name (optional)", "a label for people")
                    yield from self._field("chunk-size", "Chunk size", "", value=_default("chunk_size"),
                                           kind="integer")
                    yield from self._field("priority", "Priority (higher first)", "", value=_default("priority"),
                                           kind="integer")
                    yield from self._field("max-workers", "Max workers", "", value=_default("max_workers"),
                                           kind="integer")
                hint = self.dashboard.processor_handle.path if self.dashboard.processor_handle else "module:function"
                yield from self._field("processor", "Processor (routes the job: only workers running it claim it; "
                                       "empty: any worker)", f"any worker, or e.g. {hint}")
                yield from self._field("tenant", "Tenant (who the job is for: tenants take turns; empty: none)",
                                       "none, or e.g. acme")
                yield Label("Entity IDs, one per line", classes="field-label")
                yield TextArea(id="ids", soft_wrap=False, show_line_numbers=False)
                yield Static(classes="field-error", id="ids-error")
                yield Label("…or read them from a file (one ID per line)", classes="field-label")
                yield Input(placeholder="path/to/ids.txt", id="file", compact=True)
                yield Static(classes="field-error", id="file-error")
            with Horizontal(id="enqueue-footer"):
                yield Static("0 IDs", id="id-count")
                yield Button("Enqueue (ctrl+s)", id="submit", variant="primary", compact=True)
                yield Button("Back", id="cancel", compact=True)
        yield FitFooter()

    def on_resize(self, event: events.Resize) -> None:
        # A short terminal (80x24): tighter spacing, a smaller IDs box, and the form scrolls between
        # its title and its buttons, so Enqueue and Back stay on screen.
        self.set_class(event.size.height < SHORT_BELOW, "-short")

    def _field(self, field_id: str, label: str, placeholder: str, *, value: str = "",
               kind: str = "text") -> ComposeResult:
        with Vertical(classes="field"):
            yield Label(label, classes="field-label")
            yield Input(value=value, placeholder=placeholder, id=field_id, type=kind,  # type: ignore[arg-type]  # kind is one of Textual's input types
                        compact=True)
            yield Static(classes="field-error", id=f"{field_id}-error")

    # ------------------------------------------------------------------ live count

    @on(TextArea.Changed, "#ids")
    @on(Input.Changed, "#file")
    def _schedule_count(self) -> None:
        if self._count_timer is not None:
            self._count_timer.stop()
        self._count_timer = self.set_timer(0.2, self.update_count)

    def update_count(self) -> None:
        """Show how many IDs would be enqueued (a file is counted in a thread)."""
        self._count_timer = None
        path = self.query_one("#file", Input).value.strip()
        if path:
            self._set_error("file", "")
            self.query_one("#id-count", Static).update("counting…")
            self._count_file(Path(path).expanduser())
            return
        self._set_error("file", "")
        n = len(parse_ids(self.query_one("#ids", TextArea).text))
        self.query_one("#id-count", Static).update(humanize.plural(n, "ID"))

    @work(thread=True, exclusive=True, group="count-file", exit_on_error=False)
    def _count_file(self, path: Path) -> None:
        # Plain file reading in a thread: no database here.
        try:
            n = _count_file(path)
        except (OSError, UnicodeDecodeError) as exc:
            self.app.call_from_thread(self._file_counted, path, None, _file_problem(path, exc))
            return
        self.app.call_from_thread(self._file_counted, path, n, "")

    def _file_counted(self, path: Path, n: int | None, problem: str) -> None:
        current = self.query_one("#file", Input).value.strip()
        if not current or Path(current).expanduser() != path:
            return
        self._file_count = n
        self._set_error("file", problem)
        label = f"{humanize.plural(n, 'ID')} in {path.name}" if n is not None else "file unreadable"
        self.query_one("#id-count", Static).update(fmt.plain(label))  # a file name is not markup

    # ------------------------------------------------------------------ submit

    @on(Button.Pressed, "#submit")
    def action_submit(self) -> None:
        if self.submitting:
            return
        settings: dict[str, object] = {}
        errors: dict[str, str] = {}
        for name in SETTINGS:
            try:
                settings[name] = check_setting(name, self.query_one(f"#{field_id(name)}", Input).value)
            except core.InvalidInput as exc:
                errors[field_id(name)] = str(exc)
        try:  # core's own rule, as `chunkq enqueue --processor` and HTTP apply it; empty: not routed
            settings["processor"] = limits.PROCESSOR_NAME.check(
                self.query_one("#processor", Input).value.strip() or None)
        except core.InvalidInput as exc:
            errors["processor"] = str(exc)
        try:  # core's TENANT rule, as `chunkq enqueue --tenant` and HTTP apply it; empty: no tenant
            settings["tenant"] = limits.TENANT.check(self.query_one("#tenant", Input).value.strip() or None)
        except core.InvalidInput as exc:
            errors["tenant"] = str(exc)
        ids_text = self.query_one("#ids", TextArea).text
        file_value = self.query_one("#file", Input).value.strip()
        ids: list[str] | None = None
        path: Path | None = None
        if file_value and ids_text.strip():
            errors["file"] = "give IDs in the box or a file, not both"
        elif file_value:
            path = Path(file_value).expanduser()
            if not path.is_file():
                errors["file"] = f"no such file: {path}"
        else:
            ids = parse_ids(ids_text)
            if not ids:
                errors["ids"] = "no entity IDs: a job needs at least one"
            else:
                try:
                    ids = [core.clean_entity_id(v, i) for i, v in enumerate(ids, 1)]
                except core.InvalidInput as exc:
                    errors["ids"] = str(exc)
        for fid in (*map(field_id, SETTINGS), *OTHER_FIELDS, "ids", "file"):
            self._set_error(fid, errors.get(fid, ""))
        if errors:
            first = next(iter(errors))
            self.query_one(f"#{first}").focus()
            return
        self.submitting = True
        self._enqueue(ids if ids is not None else _file_ids(path), **settings)  # type: ignore[arg-type]  # values checked above

    @work(group="enqueue", exclusive=True, exit_on_error=False)
    async def _enqueue(self, ids: object, **kwargs: object) -> None:
        try:
            job = await self.dashboard.queue.enqueue_job(ids, **kwargs)  # type: ignore[arg-type]  # enqueue_job checks them again
        except core.InvalidInput as exc:
            self.submitting = False
            self._place_error(str(exc), exc.field)
            return
        except (UnicodeDecodeError, OSError) as exc:
            self.submitting = False
            self._place_error(str(exc))
            return
        except core.ChunkqError as exc:
            self.submitting = False
            self.notify(str(exc), title="Nothing was created", severity="error")
            return
        self.dismiss(job)

    def _place_error(self, message: str, field: str | None = None) -> None:
        """Put the queue's own message on the box its ``field`` names (the IDs' box otherwise)."""
        if field in SETTINGS or field in OTHER_FIELDS:
            self._set_error(field_id(field), message)
            return
        target = "file" if self.query_one("#file", Input).value.strip() else "ids"
        self._set_error(target, message)

    def _set_error(self, field_id: str, message: str) -> None:
        box = self.query_one(f"#{field_id}-error", Static)
        box.update(fmt.plain(message, lines=True))  # messages quote IDs and paths: never markup
        box.set_class(bool(message), "visible")
        widget = self.query_one(f"#{field_id}")
        widget.set_class(bool(message), "invalid")

    def _values(self) -> dict[str, str]:
        values = {box.id or "": box.value for box in self.query(Input)}
        values["ids"] = self.query_one("#ids", TextArea).text
        return values

    def on_mount(self) -> None:
        self._initial = self._values()  # the defaults: a form left as it opened discards nothing

    def typed(self) -> list[str]:
        """The boxes changed since the form opened (what Back would throw away)."""
        return [key for key, value in self._values().items()
                if value.strip() != self._initial.get(key, "").strip()]

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Back; a form with anything typed (pasted IDs can be thousands) asks first."""
        typed = self.typed()
        if not typed:
            self.dismiss(None)
            return
        ids = len(parse_ids(self.query_one("#ids", TextArea).text))
        what = humanize.plural(ids, "pasted ID") if ids else humanize.plural(len(typed), "field")
        question = ConfirmScreen(
            "Discard this job?", f"The form holds {what} that nothing has saved yet.",
            choices=[("yes", "Discard", "error"), ("no", "Keep editing", "default")],
        )

        def chosen(choice: str | None) -> None:
            if choice == "yes":
                self.dismiss(None)

        self.app.push_screen(question, chosen)


def _default(name: str) -> str:
    limit = limits.JOB_SETTINGS[name]
    return "" if limit.default is None else str(limit.default)  # type: ignore[union-attr]  # every job setting's limit has one


def _file_problem(path: Path, exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"{path} is not UTF-8 text"
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {path}"
    if isinstance(exc, IsADirectoryError):
        return f"{path} is a folder, not a file"
    if isinstance(exc, PermissionError):
        return f"cannot read {path}: permission denied"
    return f"cannot read {path}: {exc}"
