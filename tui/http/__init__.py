"""`chunkq serve`: processing and enqueueing over HTTP, for schedulers that can only call a URL.

Hosted cron services (and some CI systems) can fire an HTTP request on a schedule
but cannot run a command, so the design's ``POST /api/enrichment/jobs/process``
trigger lives on here as ``POST /jobs/process``.

- ``app``: the Starlette app (``create_app``) and its routes.
- ``params``: reading query parameters, path ids and JSON bodies; the one error shape.
- ``guard``: the bearer token and the body size limit, before any route runs.
- ``server``: the `chunkq serve` command (``serve_command``): checks, uvicorn, signals.

This package is imported only by ``chunkq serve`` (Starlette and uvicorn are an
optional extra); it never imports Textual.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    # a ModuleNotFoundError naming the missing module, so `chunkq serve` can say which extra to install
    raise ModuleNotFoundError(f"chunkq serve needs the http extra: pip install 'chunkq[http]' ({_exc})",
                              name=_exc.name) from _exc

from .app import create_app
from .server import serve_command

__all__ = ["create_app", "serve_command"]
