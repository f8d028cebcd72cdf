"""`chunkq web`: the dashboard in a browser, behind a login, one dashboard process per session.

- ``auth``: tokens, signed session cookies, the users file (scrypt), failed-login limits; no web framework.
- ``server``: the aiohttp app, its guard in front of every route, the session processes.
- ``session``: one session's process: the Textual dashboard with the session's role.
- ``command``: the `chunkq web` and `chunkq web adduser` commands.

Only ``session`` imports Textual, in its own process; this package and the server never do.
"""

from __future__ import annotations

try:
    import aiohttp  # noqa: F401
    import textual_serve  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise ModuleNotFoundError(f"chunkq web needs the web extra: pip install 'chunkq[web]' ({_exc})",
                              name=_exc.name) from _exc

from .command import web_command

__all__ = ["web_command"]
