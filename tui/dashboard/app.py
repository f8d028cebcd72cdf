"""The chunkq dashboard: a Textual app over one ``core.Queue``.

``ChunkqApp`` opens the queue on the app's own event loop when it mounts (an async
engine belongs to one loop), shows the jobs screen, hands processing messages to
the screens, and asks before quitting with a chunk in flight. The processing itself
(step, auto-run, dry run, reload) is ``processing.ProcessingApp``, its base.

Screens never import this module: they see the app as ``protocol.Dashboard``.

Two things are made safe here once for every screen: a notification's text and
the header's title are plain (``notify`` would parse markup; a job name or a
provider's message may hold brackets or escape sequences), and a dashboard that
stops on an unexpected error says so to its caller (``DashboardCrashed``)
instead of looking like a normal quit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

from chunkq import core
from chunkq.tui import humanize
from chunkq.tui.dashboard import commands, table_keys
from chunkq.tui.dashboard.messages import (
    ActivityNote,
    BreakpointHit,
    ChunkDone,
    EntityBatch,
    EntityDone,
    ProcessingChanged,
    ProcessingMessage,
)
from chunkq.tui.dashboard.processing import ProcessingApp
from chunkq.tui.dashboard.protocol import ProcessingListener
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.screens.detail import JobDetailScreen
from chunkq.tui.dashboard.screens.dry_run import DryRunScreen
from chunkq.tui.dashboard.screens.help import HelpScreen
from chunkq.tui.dashboard.screens.jobs import JobsScreen
from chunkq.tui.dashboard.screens.workers import WorkersScreen
from chunkq.tui.humanize import printable
from rich.console import RenderableType
from rich.segment import Segment, Segments
from textual import work
from textual.actions import ActionParseResult
from textual.app import App, SystemCommand
from textual.binding import BindingType
from textual.content import Content
from textual.dom import DOMNode
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen, Screen

#: the meta packet a browser session's dashboard writes once it holds nothing (no chunk, no registered
#: worker, the queue closed); `chunkq web` reads it (tui/web/process.py, which never imports this module)
RELEASED_META = "chunkq-released"


class DashboardCrashed(Exception):
    """The dashboard stopped on an unexpected error (Textual has printed its traceback)."""


def _printable_segments(renderable: RenderableType) -> RenderableType:
    """Pre-rendered ``Segments`` with every text made printable (controls escaped); else as is."""
    if not isinstance(renderable, Segments):
        return renderable
    return Segments([Segment(printable(s.text, lines=True), s.style, s.control) if not s.control else s
                     for s in renderable.segments])


class ChunkqApp(ProcessingApp):
    """The dashboard; it satisfies ``protocol.Dashboard``, the only part screens rely on.

    Processing messages (``messages.py``) go to the jobs screen and to the screen on
    top when it is a ``protocol.ProcessingListener``.
    """

    CSS_PATH = "app.tcss"
    TITLE = "chunkq"
    BINDINGS: ClassVar[list[BindingType]] = commands.bindings(commands.APP)
    COMMANDS: ClassVar = App.COMMANDS | {commands.ChunkqCommands}
    ENABLE_COMMAND_PALETTE = True

    # Constructed as ``ProcessingApp`` is (``ChunkqApp(db_url, processor=…, options=…)``); a bad
    # processor raises ProcessorError before any screen exists, which the CLI reports as a usage error.
    #: the home screen, once mounted
    jobs_screen: JobsScreen | None = None
    #: why the dashboard could not start (the database), re-raised by run_dashboard
    startup_error: core.ChunkqError | None = None
    #: the browser session's role (``chunkq web``); None in a terminal, where every action is allowed
    role: commands.Role | None = None

    # ------------------------------------------------------------------ plain text, everywhere

    def notify(
        self, message: str, *, title: str = "", severity: SeverityLevel = "information",
        timeout: float | None = None, markup: bool = True,
    ) -> None:
        """Every toast is plain text: its messages quote job names, IDs, paths and exceptions.

        ``markup`` is accepted for Textual's signature and ignored: no caller may
        turn parsing back on for text it does not control.
        """
        super().notify(printable(message, lines=True), title=printable(title), severity=severity,
                       timeout=timeout, markup=False)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's palette entries, less its own "Quit": the registry's Quit (``commands.py``) is the one
        that asks before dropping a chunk in flight; Textual's would leave at once, and list Quit twice."""
        return (c for c in super().get_system_commands(screen) if c.title != "Quit")

    def format_title(self, title: str, sub_title: str) -> Content:
        # the sub-title names the database and the processor; a screen title may name a job
        return super().format_title(printable(title), printable(sub_title))

    # ------------------------------------------------------------------ the role (chunkq web)

    async def run_action(self, action: str | ActionParseResult, default_namespace: DOMNode | None = None,
                         namespaces: Mapping[str, DOMNode] | None = None) -> bool:
        """Every action (a key, the palette, a click) passes here: a browser session's role is checked once.

        Refused in this process, so a modified client sending the key over the
        websocket gets the same answer as the footer shows.
        """
        _, name, _ = self._parse_action(action, self if default_namespace is None else default_namespace,
                                        namespaces)
        why = commands.refusal(self.role, name)
        if why is not None:
            self.notify(why, severity="warning")
            return True
        return await super().run_action(action, default_namespace, namespaces)

    def _check_action_state(self, action: str, default_namespace: DOMNode) -> bool | None:
        # the footer and palette draw refused commands disabled (None), from the same check
        _, name, _ = self._parse_action(action, default_namespace)
        if commands.refusal(self.role, name) is not None:
            return None
        return super()._check_action_state(action, default_namespace)

    def update_sub_title(self) -> None:
        super().update_sub_title()
        if self.role is not None:  # in a browser the header says who may do what
            self.sub_title = f"web {self.role} · {self.sub_title}"

    def _handle_exception(self, error: Exception) -> None:
        # Textual pre-renders the crash's traceback for printing after exit, with the exception's
        # message as it is: escape its text too (Textual is pinned; the shapes are checked).
        super()._handle_exception(error)
        self._exit_renderables[:] = [_printable_segments(r) for r in self._exit_renderables]

    # ------------------------------------------------------------------ lifecycle

    async def on_mount(self) -> None:
        try:
            await self.queue.open()
        except core.ChunkqError as exc:
            self.startup_error = exc
            self.exit(return_code=1)
            return
        self.update_sub_title()
        self.jobs_screen = JobsScreen()
        await self.push_screen(self.jobs_screen)

    async def _on_exit_app(self) -> None:
        # Every exit passes here, and Textual cancels the app's workers right after it, before
        # on_unmount: a browser session ending (`chunkq web`) or a SIGTERM would otherwise leave
        # auto-run's worker registered and its chunk leased. Release them while auto-run still runs.
        self._abandon()
        await self._wait_for_processing(grace=10)
        await super()._on_exit_app()

    async def on_unmount(self) -> None:
        # Leaving any other way than through the quit dialog: release what is in flight, and
        # let core finish releasing before the engine goes away. Textual has cancelled every worker by
        # now, but not the reads they were waiting on (``shielded``): those get time to end first.
        self._abandon()
        await self._wait_for_processing(grace=10)
        await self._end_reads()
        await self.queue.close()
        # Under `chunkq web` (Textual's web driver): say that nothing is held any more, so the server
        # stops waiting once the interpreter's own end is all that is left (tui/web/process.py).
        write_meta = getattr(self._driver, "write_meta", None) if self._driver is not None else None
        if write_meta is not None:
            write_meta({"type": RELEASED_META})

    # Processing messages reach the jobs screen (it keeps the activity log) and the screen
    # on top, if it listens (``protocol.ProcessingListener``).
    def _forward(self, message: ProcessingMessage) -> None:
        targets: list[object] = [self.jobs_screen]
        if self.screen is not self.jobs_screen:
            targets.append(self.screen)
        for target in targets:
            if isinstance(target, ProcessingListener):
                target.processing_event(message)

    def on_entity_done(self, message: EntityDone) -> None:
        self._forward(message)

    def on_entity_batch(self, message: EntityBatch) -> None:
        self._forward(message)

    def on_chunk_done(self, message: ChunkDone) -> None:
        if message.source != "auto-run" or self.sub_title_due():
            self.update_sub_title()
        self._refresh_quit_dialog()
        self._forward(message)

    def on_activity_note(self, message: ActivityNote) -> None:
        self._forward(message)

    def on_processing_changed(self, message: ProcessingChanged) -> None:
        self._refresh_quit_dialog()
        self._forward(message)

    def action_show_dry_run(self) -> None:
        """The last dry run's results, each failure's traceback drawn like a stored error's."""
        if self.last_dry_run is None:
            self.notify("no dry run yet: S runs a job's next chunk without writing anything")
            return
        if isinstance(self.screen, DryRunScreen | ModalScreen):
            return
        job_id, results, at = self.last_dry_run
        self.push_screen(DryRunScreen(job_id, results, at, show_locals=self.capture_locals))

    def on_breakpoint_hit(self, message: BreakpointHit) -> None:
        """Auto-run stopped at a new kind of error: show that group (in the job's detail, opened if need be)."""
        screen = self.screen
        if isinstance(screen, JobDetailScreen) and screen.job_id == message.job_id:
            screen.open_group = message.fingerprint
            screen.reload(force=True)
        elif not isinstance(screen, ModalScreen):  # never over a question left unanswered
            self.push_screen(JobDetailScreen(message.job_id, group=message.fingerprint))

    # ------------------------------------------------------------------ app commands

    def action_table_first(self) -> None:
        table_keys.run(self, "table_first")

    def action_table_last(self) -> None:
        table_keys.run(self, "table_last")

    def action_table_down(self) -> None:
        table_keys.run(self, "table_down")

    def action_table_up(self) -> None:
        table_keys.run(self, "table_up")

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        scope = commands.screen_scope(self.screen) or commands.JOBS
        self.push_screen(HelpScreen(commands.help_markdown(scope)))

    def action_show_workers(self) -> None:
        # not twice, and never from a dialog (it would open over the question left unanswered)
        if self.jobs_screen is None or isinstance(self.screen, (WorkersScreen, ModalScreen)):
            return
        self.push_screen(WorkersScreen())

    #: the open "Quit while processing?" dialog, kept true as work goes on behind it
    _quit_dialog: ConfirmScreen | None = None

    def quit_question(self) -> str:
        """What the quit dialog says now: whether auto-run goes on (and how far it got), or a step, or nothing."""
        if self.auto_worker is not None:
            s = self.auto_worker.summary
            what = (f"Auto-run is paused: {humanize.plural(s.chunks, 'chunk')} done so far; it claims no other "
                    "chunk until you answer (Keep running goes on).")
        elif self.stepping is not None:
            what = "A step is processing a chunk."
        else:
            return "Nothing is in flight any more: quitting loses nothing."
        return (f"{what}\nFinish the chunk in flight (commit its results) and quit, or release it now so another "
                "worker redoes it?")

    def _refresh_quit_dialog(self) -> None:
        if self._quit_dialog is not None and self._quit_dialog.is_attached:
            self._quit_dialog.update_message(self.quit_question())

    async def action_quit(self) -> None:
        if not self.processing:
            self.exit()
            return

        def chosen(choice: str | None) -> None:
            self._quit_dialog = None
            if choice in ("finish", "release"):
                self._quit_after(choice)
            else:
                self._hold_auto_run(False)

        # No chunk is claimed behind the question only to be released by its answer: auto-run lets
        # the chunks in flight commit and waits (core ``Worker.pause``).
        self._hold_auto_run(True)
        self._quit_dialog = ConfirmScreen(
            "Quit while processing?", self.quit_question(),
            choices=[("finish", "Finish, then quit", "primary"), ("release", "Release now", "error"),
                     ("stay", "Keep running", "default")],
            yes="finish",  # y loses nothing: the chunk in flight commits first
        )
        self.push_screen(self._quit_dialog, chosen)

    def _hold_auto_run(self, hold: bool) -> None:
        """Pause auto-run's claiming (or resume it), on its own loop (``Worker.pause`` is not thread-safe)."""
        worker, thread = self.auto_worker, self._auto_thread
        if worker is not None and thread is not None:
            thread.call(worker.pause if hold else worker.resume)

    @work(group="shutdown", exclusive=True)
    async def _quit_after(self, how: str) -> None:
        self._quitting = True
        if how == "finish":
            self.notify("finishing the chunk in flight, then quitting…")
            if self.auto_worker is not None:
                self.stop_auto_run()
        else:
            self._abandon()
        await self._wait_for_processing()
        self.exit()


def run_dashboard(
    db_url: str,
    processor: str | None = None,
    *,
    options: core.ProcessorOptions | None = None,
    role: commands.Role | None = None,
) -> None:
    """Run the dashboard until the user quits (``chunkq tui`` / ``chunkq demo``).

    ``options`` are the command line's overrides, applied to the processor by
    ``core.apply_overrides``, exactly as `chunkq process` applies them. Raises
    ``core.ProcessorError`` for a bad ``processor`` before the screen opens,
    ``core.DatabaseUnavailable`` when the database cannot be opened, and
    ``DashboardCrashed`` when an unexpected exception ended it. ``role`` is a browser
    session's (``chunkq web``): its refused actions are disabled and refused here.
    """
    app = ChunkqApp(db_url, processor=processor, options=options)
    app.role = role
    app.run()
    if app.startup_error is not None:
        raise app.startup_error
    if app.return_code:  # an unhandled exception: never a quiet exit with status 0
        error = app._exception
        what = (f"an unexpected {type(error).__name__}: {printable(error)}" if error is not None
                else f"exit status {app.return_code}")
        raise DashboardCrashed(f"the dashboard stopped on {what}") from error
