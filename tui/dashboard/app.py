"""The chunkq dashboard: a Textual app over one ``core.Queue``.

``ChunkqApp`` opens the queue on the app's own event loop when it mounts (an async
engine belongs to one loop), shows the jobs screen, hands processing messages to
the screens, and asks before quitting with a chunk in flight. The processing itself
(step, auto-run, dry run, reload) is ``processing.ProcessingApp``, its base.

Screens never import this module: they see the app as ``protocol.Dashboard``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import ClassVar

from chunkq import core
from chunkq.tui.dashboard import commands
from chunkq.tui.dashboard.messages import ActivityNote, ChunkDone, EntityDone, ProcessingChanged, ProcessingMessage
from chunkq.tui.dashboard.processing import ProcessingApp
from chunkq.tui.dashboard.protocol import ProcessingListener
from chunkq.tui.dashboard.screens.confirm import ConfirmScreen
from chunkq.tui.dashboard.screens.help import HelpScreen
from chunkq.tui.dashboard.screens.jobs import JobsScreen
from textual import work
from textual.app import App
from textual.binding import BindingType


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

    def __init__(
        self,
        db_url: str,
        *,
        processor: str | None = None,
        capture_locals: bool = False,
        rate_limits: dict[str, float] | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
        clock: Callable[[], datetime] | None = None,
        refresh_interval: float = 0.5,
    ) -> None:
        # Raises ProcessorError before any screen exists: the CLI reports it as a usage error.
        super().__init__(db_url, processor=processor, capture_locals=capture_locals, rate_limits=rate_limits,
                         concurrency=concurrency, timeout=timeout, clock=clock, refresh_interval=refresh_interval)
        self.jobs_screen: JobsScreen | None = None
        #: why the dashboard could not start (the database), re-raised by run_dashboard
        self.startup_error: core.ChunkqError | None = None

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

    async def on_unmount(self) -> None:
        # Leaving any other way than through the quit dialog: release what is in flight, and
        # let core finish releasing before the engine goes away.
        self._abandon()
        await self._wait_for_processing(grace=10)
        await self.queue.close()

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

    def on_chunk_done(self, message: ChunkDone) -> None:
        self.update_sub_title()
        self._forward(message)

    def on_activity_note(self, message: ActivityNote) -> None:
        self._forward(message)

    def on_processing_changed(self, message: ProcessingChanged) -> None:
        self._forward(message)

    # ------------------------------------------------------------------ app commands

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        scope = commands.screen_scope(self.screen) or commands.JOBS
        self.push_screen(HelpScreen(commands.help_markdown(scope)))

    async def action_quit(self) -> None:
        if not self.processing:
            self.exit()
            return
        what = "Auto-run is processing a chunk." if self.auto_worker is not None else "A chunk is in flight."

        def chosen(choice: str | None) -> None:
            if choice in ("finish", "release"):
                self._quit_after(choice)

        self.push_screen(
            ConfirmScreen(
                "Quit while processing?",
                f"{what}\nFinish it (commit its results) and quit, or release it now so another "
                "worker redoes it?",
                choices=[("finish", "Finish, then quit", "primary"), ("release", "Release now", "error"),
                         ("stay", "Keep running", "default")],
            ),
            chosen,
        )

    @work(group="shutdown", exclusive=True)
    async def _quit_after(self, how: str) -> None:
        self._quitting = True
        if how == "finish":
            self.notify("finishing the chunk in flight, then quitting…")
            if self.auto_worker is not None:
                self.auto_worker.stop()
                self._auto_stop.set()
        else:
            self._abandon()
        await self._wait_for_processing()
        self.exit()


def run_dashboard(
    db_url: str,
    processor: str | None = None,
    *,
    capture_locals: bool = False,
    rate_limits: dict[str, float] | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
) -> None:
    """Run the dashboard until the user quits (``chunkq tui`` / ``chunkq demo``).

    Raises ``core.ProcessorError`` for a bad ``processor`` before the screen opens,
    and ``core.DatabaseUnavailable`` when the database cannot be opened.
    """
    app = ChunkqApp(db_url, processor=processor, capture_locals=capture_locals, rate_limits=rate_limits,
                    concurrency=concurrency, timeout=timeout)
    app.run()
    if app.startup_error is not None:
        raise app.startup_error
