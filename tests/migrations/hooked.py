"""`chunkq ARGS` as a real process, with a hook in the schema migration's transaction.

    python -m tests.migrations.hooked --log FILE [--hold-until FILE] [--fail REV] -- CHUNKQ ARGS

After each migration step the hook appends ``<pid> <revision>`` to ``--log``; then
it waits (holding the schema lock, mid-transaction) until ``--hold-until`` exists,
or raises at revision ``--fail``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--hold-until")
    parser.add_argument("--fail")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args()

    from chunkq.core.migrations import runner
    from chunkq.tui.cli import main as chunkq

    def hook(revision: str) -> None:
        with open(opts.log, "a") as f:
            f.write(f"{os.getpid()} {revision}\n")
        if opts.hold_until:
            deadline = time.monotonic() + 60
            while not Path(opts.hold_until).exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        if revision == opts.fail:
            raise RuntimeError(f"injected failure after revision {revision}")

    runner.step_hooks.append(hook)
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    sys.argv = ["chunkq", *args]
    chunkq()


if __name__ == "__main__":
    main()
