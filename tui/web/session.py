"""One browser session's process: the dashboard, under Textual's web driver, with the session's role.

`chunkq web` starts ``python -m chunkq.tui.web.session --role ROLE
[--processor P --options JSON]`` per websocket, the database in ``CHUNKQ_DB``
(an argument would show its password in `ps`). The server never imports
Textual. The role is an argument of this process, not something the browser
sends: the app checks every action against it (``commands.refusal``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chunkq.tui.web.session")
    parser.add_argument("--role", required=True, choices=["viewer", "operator"])
    parser.add_argument("--processor", default=None)
    parser.add_argument("--options", default="{}")
    args = parser.parse_args(argv)
    if "TEXTUAL_DRIVER" not in os.environ:  # only ever started by the web server, which sets it
        print("chunkq.tui.web.session runs under `chunkq web`, not by hand", file=sys.stderr)
        return 2

    from chunkq import core
    from chunkq.tui.dashboard.app import run_dashboard

    _exit_with_the_server()
    options = core.ProcessorOptions.from_mapping(json.loads(args.options))
    db = os.environ.get("CHUNKQ_DB")
    if not db:
        print("chunkq.tui.web.session: CHUNKQ_DB is not set", file=sys.stderr)
        return 2
    run_dashboard(db, args.processor, options=options, role=args.role)
    return 0


def _exit_with_the_server() -> None:
    """A session must not outlive its server (killed, crashed): it would keep a database
    connection and, with auto-run, a registered worker. Linux delivers SIGTERM when the
    parent dies, which Textual's web driver turns into a normal exit (auto-run released)."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the server died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
