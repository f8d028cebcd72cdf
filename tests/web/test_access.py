"""`chunkq web`'s doors, tried as an attacker would: raw HTTP and raw websockets against a real server.

A modified client needs no browser, so these send exactly what they like: no
cookie, a forged or expired one, a foreign Origin, keystrokes a viewer's page
would never send. Every refusal is checked on the server's answer, and every
state change on the database.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from .helpers import DEMO_JOB, TOKEN, WebProcess, job_statuses, login_cookie, open_raw, read_queue, until

pytestmark = pytest.mark.slow

PATHS = ["/", "/ws", "/static/js/textual.js", "/static/css/xterm.css", "/static/", "/download/x", "/nope",
         "/login/../ws", "/%2e%2e/static/js/textual.js"]


def _add_user(env: dict[str, str], users: Path, name: str, role: str, password: str) -> None:
    """`chunkq web adduser` (in-process: the command's own tests run it as a process)."""
    from chunkq.tui.cli import cli
    from click.testing import CliRunner

    done = CliRunner().invoke(cli, ["web", "adduser", name, "--role", role, "--users-file", str(users),
                                    "--password-stdin"], input=password + "\n", env=env)
    assert done.exit_code == 0, done.output


def _cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"chunkq_session={value}"}


async def _ws_status(url: str, cookie: str | None, origin: str | None = "same") -> int:
    async with aiohttp.ClientSession() as http:
        try:
            raw = await open_raw(http, url, cookie, origin=origin)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await raw.ws.close()
        return 101


async def test_every_route_and_the_websocket_are_refused_without_a_session(
        start_web: Callable[..., WebProcess], demo_db: str) -> None:
    server = start_web(demo_db)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        for path in PATHS:
            for method in ("GET", "POST", "HEAD"):
                r = await http.request(method, path)
                assert r.status_code in (303, 401), (method, path, r.status_code)
                assert DEMO_JOB not in r.text
                if r.status_code == 303:
                    assert (method, path, r.headers["location"]) == ("GET", "/", "/login")
        page = await http.get("/login")
        assert page.status_code == 200 and DEMO_JOB not in page.text
        assert page.headers["X-Frame-Options"] == "DENY"
    assert await _ws_status(server.url, None) == 401
    assert server.children() == []


async def test_a_bad_token_is_refused_and_failed_logins_are_rate_limited(
        start_web: Callable[..., WebProcess], demo_db: str) -> None:
    server = start_web(demo_db)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        for _ in range(5):
            r = await http.post("/login", data={"token": TOKEN[:-1]}, headers={"Origin": server.url})
            assert r.status_code == 401 and "chunkq_session" not in r.cookies
        r = await http.post("/login", data={"token": TOKEN}, headers={"Origin": server.url})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0  # even the right token, for now
        assert "chunkq_session" not in r.cookies


async def test_forged_and_expired_cookies_and_logged_out_ones_are_refused(
        start_web: Callable[..., WebProcess], demo_db: str, web_env: dict[str, str], tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    _add_user(web_env, users, "vera", "viewer", "correct horse battery")
    server = start_web(demo_db, "--users-file", str(users), "--session-hours", "0.001")  # 3.6 s, the least
    cookie = login_cookie(server.url, user="vera", password="correct horse battery")
    payload, signature = cookie.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert data["r"] == "viewer"
    data["r"] = "operator"  # a viewer promoting itself, signature kept
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=") + "." + signature
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        assert (await http.get("/static/js/textual.js", headers=_cookie(cookie))).status_code == 200
        for bad in (forged, payload + "." + "0" * 64, "garbage", cookie + "x"):
            r = await http.get("/static/js/textual.js", headers=_cookie(bad))
            assert r.status_code == 401, bad
            assert await _ws_status(server.url, bad) == 401
        # still within the login's lifetime: the refusals above were the forgeries', not the clock's
        assert (await http.get("/static/js/textual.js", headers=_cookie(cookie))).status_code == 200
        await asyncio.sleep(max(0.0, data["e"] - time.time()) + 0.5)  # past the login's lifetime
        assert (await http.get("/static/js/textual.js", headers=_cookie(cookie))).status_code == 401
        assert await _ws_status(server.url, cookie) == 401

        fresh = login_cookie(server.url)
        r = await http.post("/logout", headers={**_cookie(fresh), "Origin": server.url})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert (await http.get("/static/js/textual.js", headers=_cookie(fresh))).status_code == 401


async def test_a_cross_origin_websocket_is_refused(start_web: Callable[..., WebProcess], demo_db: str) -> None:
    server = start_web(demo_db)
    cookie = login_cookie(server.url)
    assert await _ws_status(server.url, cookie, origin="http://evil.example") == 403
    assert await _ws_status(server.url, cookie, origin=server.url.replace("127.0.0.1", "localhost")) == 403
    assert await _ws_status(server.url, cookie, origin=None) == 403
    assert server.children() == []
    assert await _ws_status(server.url, cookie) == 101


async def test_keys_sent_over_the_websocket_are_refused_for_a_viewer_and_obeyed_for_an_operator(
        start_web: Callable[..., WebProcess], demo_db: str, web_env: dict[str, str], tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    _add_user(web_env, users, "vera", "viewer", "correct horse battery")
    server = start_web(demo_db, "--users-file", str(users))
    before = job_statuses(demo_db)
    viewer = login_cookie(server.url, user="vera", password="correct horse battery")
    async with aiohttp.ClientSession() as http:
        raw = await open_raw(http, server.url, viewer)
        await raw.wait_for(DEMO_JOB)
        mark = len(raw.chunks)
        await raw.keys("c", "y", "p", "n")  # cancel + yes, pause, new job
        await raw.wait_for("read-only", since=mark)
        await asyncio.sleep(1)
        assert job_statuses(demo_db) == before
        await raw.ws.close()

        # the same keys from an operator do change the queue: the refusal above is the role's
        operator = await open_raw(http, server.url, login_cookie(server.url))
        await operator.wait_for(DEMO_JOB)
        mark = len(operator.chunks)
        await operator.keys("c", pause=0)
        await operator.wait_for("Cancel job", since=mark)  # the question is up: "y" answers it
        await operator.keys("y", pause=0)
        assert await until(lambda: "cancelled" in job_statuses(demo_db).values(), within=60)
        await operator.ws.close()


async def test_the_session_cap_and_the_idle_timeout_hold(start_web: Callable[..., WebProcess],
                                                         demo_db: str) -> None:
    server = start_web(demo_db, "--max-sessions", "1", "--idle-timeout", "3")
    cookie = login_cookie(server.url)
    async with aiohttp.ClientSession() as http:
        first = await open_raw(http, server.url, cookie)
        typed = 0
        # a keystroke each half second (from the start: idleness counts from the session's start) keeps it
        # open for twice the idle timeout, however long the dashboard takes to draw on a loaded machine
        while typed < 12 or DEMO_JOB not in first.text:
            assert not first.ws.closed, f"closed after {typed} keystrokes, one each half second"
            assert typed < 240, "the dashboard never drew the jobs list"
            await first.keys("j", pause=0.5)
            typed += 1
        assert len(server.children()) >= 1
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_raw(http, server.url, cookie)
        assert refused.value.status == 503
        await first.wait_closed(within=120)  # then no keystroke for 3 s: the server ends it
        assert first.closed_code == 4000
        assert await until(lambda: server.children() == [], within=60)  # the dashboard process is gone
        server.wait_for_output("ended: idle")
        second = await open_raw(http, server.url, cookie)  # the slot is free again
        typed = 0
        while DEMO_JOB not in second.text:  # kept from idling out, as the first, until it draws
            assert not second.ws.closed, f"closed after {typed} keystrokes, one each half second"
            assert typed < 240, "the second session never drew the jobs list"
            await second.keys("j", pause=0.5)
            typed += 1
        await second.ws.close()


def _workers(db: str) -> list[dict[str, object]]:
    """The registered workers, as `chunkq workers --json` lists them."""

    async def read(q: Any) -> list[dict[str, object]]:
        return [w.to_dict() for w in await q.list_workers()]

    return read_queue(db, read)


def _leases(db: str) -> dict[int, int]:
    """Each job's chunks held under a live lease, as `chunkq show ID --json` counts them."""
    from chunkq.tui.cli.output import chunk_summary

    async def read(q: Any) -> dict[int, int]:
        leased = {}
        for job in await q.list_jobs(None, limit=50):
            chunks = chunk_summary(await q.list_chunks(job.id, limit=10_000))
            leased[job.id] = chunks["leased"] - chunks["stale_leases"]  # given back = expired at once (release)
        return leased

    return read_queue(db, read)


async def _session_with_auto_run_ends(server: WebProcess, demo_db: str) -> None:
    async with aiohttp.ClientSession() as http:
        raw = await open_raw(http, server.url, login_cookie(server.url))
        await raw.wait_for("processor chunkq.core.demo:processor")
        await raw.keys("a", pause=0)  # auto-run: this session's process claims chunks as a worker
        assert await until(lambda: _workers(demo_db), within=60), "auto-run never registered a worker"
        await raw.ws.close()  # the browser goes away mid-chunk
    server.wait_for_output("ended:", timeout=120)
    await until(lambda: not server.children() and not _workers(demo_db), within=60)


async def test_a_session_that_ends_leaves_no_process_and_no_worker_registered(
        start_web: Callable[..., WebProcess], demo_db: str) -> None:
    server = start_web(demo_db, "--processor", "chunkq.core.demo:processor")
    await _session_with_auto_run_ends(server, demo_db)
    assert server.children() == []
    assert _workers(demo_db) == [], server.output()


async def test_a_session_that_ends_holds_no_lease(start_web: Callable[..., WebProcess], demo_db: str) -> None:
    server = start_web(demo_db, "--processor", "chunkq.core.demo:processor")
    await _session_with_auto_run_ends(server, demo_db)
    leased = _leases(demo_db)
    assert leased == dict.fromkeys(leased, 0)


async def test_a_proxy_user_header_is_trusted_only_from_the_configured_proxy(
        start_web: Callable[..., WebProcess], demo_db: str, web_env: dict[str, str], tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    _add_user(web_env, users, "olga", "operator", "correct horse battery")
    header = {"X-Forwarded-User": "olga"}
    trusted = start_web(demo_db, "--users-file", str(users), "--proxy-user-header", "X-Forwarded-User",
                        "--trusted-proxy", "127.0.0.1")
    other = start_web(demo_db, "--users-file", str(users), "--proxy-user-header", "X-Forwarded-User",
                      "--trusted-proxy", "10.9.9.9")
    async with httpx.AsyncClient(timeout=60) as http:
        assert (await http.get(f"{trusted.url}/static/js/textual.js", headers=header)).status_code == 200
        assert (await http.get(f"{trusted.url}/static/js/textual.js")).status_code == 401
        assert (await http.get(f"{other.url}/static/js/textual.js", headers=header)).status_code == 401


async def test_a_session_does_not_outlive_a_killed_server(start_web: Callable[..., WebProcess],
                                                         demo_db: str) -> None:
    import psutil

    server = start_web(demo_db)
    async with aiohttp.ClientSession() as http:
        raw = await open_raw(http, server.url, login_cookie(server.url))
        await raw.wait_for(DEMO_JOB)
        (session,) = [psutil.Process(pid) for pid in server.children()]
        server.proc.kill()  # kill -9: no chance to end its sessions
        server.proc.wait(timeout=30)
        assert await until(lambda: not session.is_running() or session.status() == psutil.STATUS_ZOMBIE,
                           within=60), "the session process outlived its server"
