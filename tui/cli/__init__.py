"""The `chunkq` command: every operation of the queue, headless, for people, cron and scripts.

Modules, one job each (none imports Textual; `dashboard` loads it inside a function):

- ``root``: the `chunkq` group, its options, the list of subcommands, ``main``.
- ``group``: the group class: lazily imported subcommands, every error one line and an exit status.
- ``context``: what every command shares: settings, ``--json``/``-v``/``-q``, the exit-2 error.
- ``enqueue``: `chunkq enqueue`. ``sources``: reading IDs from files and stdin.
- ``processing``: `chunkq process`/`worker`: run until empty, the two-stage stop, the progress bar.
- ``options``: ``--processor``/``--rate``/…, shared with `chunkq serve` and the dashboard.
- ``manage``: `chunkq jobs`, `show`, `errors`, `pause`, `resume`, `cancel`, `retry`.
- ``dashboard``: `chunkq tui` and `chunkq demo` (and bare `chunkq`), which open the Textual app.
- ``output``: Rich tables for a terminal, tab-separated lines for pipes, JSON for scripts.
"""

from .root import cli, main

__all__ = ["cli", "main"]
