"""The Starlette app: the queue's routes (the list is in ``create_app``), each "parse, call core, answer".

It answers exactly what ``chunkq process --json`` prints (``POST /jobs/process``)
and what ``chunkq jobs/show/errors --json`` print, so a script can switch between
the command and the API. Request checks live in ``params``, the token and body
limit in ``guard``, and the `chunkq serve` command that runs this in ``server``.
Concurrent requests are safe because the queue hands chunks out under leases.

No request waits on a silent database for long (issue 24): each runs under a
``core.deadline`` - ``db_timeout`` for the whole request (`chunkq serve
--db-timeout`, default ``REQUEST_DB_SECONDS``), ``/health`` ``HEALTH_DB_SECONDS``
(or ``db_timeout`` if less) - and a transaction still waiting then is given up and
answered 503 (a load balancer's check gives up after a few seconds; a caller is
better told than left hanging). ``POST /jobs/process`` runs under its run's own
deadline (``max_seconds``) with ``db_timeout`` of grace past it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from chunkq import core
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from . import params
from .guard import DEFAULT_BODY_TIMEOUT, BodyTimeout, BodyTooLarge, GuardMiddleware
from .params import BadRequest, JSONResponse, error

log = logging.getLogger("chunkq.http")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
#: what ``POST /jobs/process`` takes, to answer all but POST itself (Starlette's default is GET only)
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: the longest a request waits for the database, all its transactions together, before it answers 503
#: (the default of ``create_app(db_timeout=)`` and `chunkq serve --db-timeout`)
REQUEST_DB_SECONDS = 5.0
#: what ``db_timeout`` may be: a caller waiting minutes for an answer is a caller left hanging
DB_TIMEOUT = core.limits.FloatLimit("db_timeout", 0.0, 600.0, "a positive number of seconds, at most 600",
                                    REQUEST_DB_SECONDS)
#: ``GET /health``'s bound: a load balancer's check usually gives up after 2-5 s, so the answer comes within 2
HEALTH_DB_SECONDS = 1.5
#: how long ``POST /jobs/process`` lets its chunks run once it claims no more (`chunkq serve --grace`): long
#: enough for a slow provider's whole chunk, short enough that a hung callback frees its chunk within minutes
PROCESS_GRACE_SECONDS = 300.0

Route_ = Callable[[Request], Awaitable[Response]]


def _bounded(route: Route_, *, health: bool = False) -> Route_:
    """``route`` with its database work bounded from the request's start (see the module): by the
    app's ``db_timeout``, or for ``health`` by what a load balancer waits (``HEALTH_DB_SECONDS``)."""

    async def bounded(request: Request) -> Response:
        state = request.app.state
        seconds = state.health_timeout if health else state.db_timeout
        with core.deadline(time.monotonic() + seconds, grace=0.0):
            return await route(request)

    bounded.__name__ = bounded.__qualname__ = route.__name__
    bounded.__doc__ = route.__doc__
    return bounded


def _queue(request: Request) -> core.Queue:
    return request.app.state.queue


async def process_jobs(request: Request) -> Response:
    """Process one chunk, or chunks until ``max_seconds`` runs out (or nothing is left)."""
    if request.method != "POST":
        # This route takes every method so that `GET /jobs/process` is a 405 here, not a
        # request for the job whose id is "process" (a 422 about job ids) one route further.
        raise HTTPException(405, headers={"Allow": "POST"})
    params.only_params(request, ("max_seconds",))
    processor: core.Processor | None = request.app.state.processor
    if processor is None:
        raise BadRequest("no processor is configured: start the server with --processor module:function")
    max_seconds = params.max_seconds(request)
    # ``grace``: a chunk still running that long after the run stops claiming (one chunk: after its claim)
    # is given up, so that a callback that hangs cannot hold the request, and its chunk, for ever
    worker = core.Worker(_queue(request), processor, max_chunks=None if max_seconds else 1,
                         max_seconds=max_seconds, grace=request.app.state.grace)
    workers: set[core.Worker] = request.app.state.workers
    workers.add(worker)
    try:
        # past its run's end (one chunk: from the start) no transaction waits more than db_timeout
        with core.deadline(time.monotonic() + (max_seconds or 0.0), grace=request.app.state.db_timeout):
            # registered while it runs (kind "serve"): `chunkq workers` and GET /workers list it
            async with worker.registered(kind="serve", interval=request.app.state.heartbeat):
                summary = await worker.run()
    finally:
        workers.discard(worker)
    return JSONResponse(summary.to_dict())


async def create_job(request: Request) -> Response:
    ids, kwargs = params.job_request(await params.json_body(request))
    job = await _queue(request).enqueue_job(ids, **kwargs)
    return JSONResponse(job.to_dict(), status_code=201, headers={"Location": f"/jobs/{job.id}"})


async def list_jobs(request: Request) -> Response:
    params.only_params(request, ("status", "limit", "offset", "tenant"))
    statuses = params.statuses(request)
    limit, offset = params.page(request)
    tenant = request.query_params.get("tenant")  # checked by core like enqueue's (422 when refused)
    queue = _queue(request)
    jobs = await queue.list_jobs(statuses or None, limit=limit, offset=offset, tenant=tenant)
    total = await queue.count_jobs(statuses or None, tenant=tenant)
    return JSONResponse({"jobs": [j.to_dict() for j in jobs], "total": total, "limit": limit,
                         "offset": offset})


async def jobs(request: Request) -> Response:
    # One route per path, so a wrong method gets 405 with the full Allow header.
    return await (create_job(request) if request.method == "POST" else list_jobs(request))


async def show_job(request: Request) -> Response:
    params.only_params(request, ())
    job = await _queue(request).get_job(params.job_id(request))
    return JSONResponse(job.to_dict())


async def job_errors(request: Request) -> Response:
    """A page of the error log; ``?group=KEY`` one group's (a key from ``/error-groups``), ``?search=TEXT``
    those whose entity ID or message contains TEXT (as ``chunkq errors --group/--search``)."""
    params.only_params(request, ("limit", "offset", "group", "search"))
    job_id = params.job_id(request)
    limit, offset = params.page(request)
    group, search = request.query_params.get("group"), request.query_params.get("search")
    errors = await _queue(request).list_errors(job_id, limit=limit, offset=offset, fingerprint=group,
                                               search=search)
    return JSONResponse({"job_id": job_id, "errors": [e.to_dict() for e in errors], "limit": limit,
                         "offset": offset})


async def job_error_groups(request: Request) -> Response:
    """A page of the job's errors grouped by bug, biggest first, and ``total``: how many groups there are in
    all (as ``chunkq errors --groups --json``); ``?limit=&offset=`` pages through them."""
    params.only_params(request, ("limit", "offset", "search"))
    job_id = params.job_id(request)
    limit, offset = params.page(request)
    page = await _queue(request).error_group_page(job_id, limit=limit, offset=offset,
                                                  search=request.query_params.get("search"))
    return JSONResponse({"job_id": job_id, **page.to_dict()})


async def merge_error_groups(request: Request) -> Response:
    """An operator says what one bug is (issue 27): ``{"groups": [KEY, ...], "into": KEY}`` merges those groups
    into ``into`` (for the job's future errors of those kinds too); ``{"unmerge": KEY}`` splits one off again."""
    params.only_params(request, ())
    job_id = params.job_id(request)
    data = await params.json_body(request)
    unknown = sorted(set(data) - {"groups", "into", "unmerge"})
    if unknown:
        raise core.InvalidInput(f"unknown field {unknown[0]!r}; expected groups and into, or unmerge",
                                field=unknown[0])
    queue = _queue(request)
    if "unmerge" in data:
        if "groups" in data or "into" in data:
            raise core.InvalidInput("unmerge cannot be combined with groups/into: one change at a time",
                                    field="unmerge")
        left = await queue.unmerge_error_group(job_id, data["unmerge"])
        return JSONResponse({"job_id": job_id, "unmerged": [data["unmerge"]], "from": left})
    groups, into = data.get("groups"), data.get("into")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, str) for g in groups):
        raise core.InvalidInput("groups must be a non-empty list of group keys", field="groups")
    if not isinstance(into, str):
        raise core.InvalidInput("into must be a group key", field="into")
    merged = await queue.merge_error_groups(job_id, groups, into)
    return JSONResponse({"job_id": job_id, "merged": merged, "into": into})


async def list_workers(request: Request) -> Response:
    params.only_params(request, ("all",))
    include_stopped = params.flag(request, "all")
    found = await _queue(request).list_workers(include_stopped=include_stopped)
    return JSONResponse({"workers": [w.to_dict() for w in found]})


async def stop_worker(request: Request) -> Response:
    """Ask a worker (on any host) to stop after its chunk, or ``?now=true`` at once (its chunk released)."""
    params.only_params(request, ("now",))
    info = await _queue(request).request_worker_stop(request.path_params["worker_id"], now=params.flag(request, "now"))
    return JSONResponse(info.to_dict(), status_code=202)


#: what ``POST /prune`` reads from its JSON body
PRUNE_FIELDS = ("older_than", "status", "dry_run", "max_seconds")
#: how long one ``POST /prune`` deletes before it answers (``done: false``: call again for the rest)
PRUNE_SECONDS = 25.0


async def prune_jobs(request: Request) -> Response:
    """Delete finished jobs past their retention, as `chunkq prune` does, for at most ``max_seconds``.

    Body: ``{"older_than": "30d", "status": ["complete"], "dry_run": false}``, every field
    optional (``{}``: the server's retention policy). Not under the request deadline: it
    deletes in small transactions and stops between two once ``max_seconds`` are up.
    """
    params.only_params(request, ())
    data = await params.json_body(request)
    unknown = sorted(set(data) - set(PRUNE_FIELDS))
    if unknown:
        raise core.InvalidInput(f"unknown field {unknown[0]!r}; expected some of {', '.join(PRUNE_FIELDS)}",
                                field=unknown[0])
    statuses = data.get("status")
    if isinstance(statuses, str):
        statuses = [statuses]
    if statuses is not None and not (isinstance(statuses, list) and all(isinstance(x, str) for x in statuses)):
        raise core.InvalidInput("status must be a status or a list of statuses", field="status")
    dry_run = data.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise core.InvalidInput(f"dry_run must be true or false, got {params.json_type(dry_run)}", field="dry_run")
    seconds = data.get("max_seconds", PRUNE_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= 600:
        raise core.InvalidInput("max_seconds must be a number of seconds above 0 and at most 600",
                                field="max_seconds")
    base = request.app.state.retention or core.DEFAULT_POLICY
    policy = (core.RetentionPolicy.only(core.parse_age(data["older_than"]), statuses)
              if data.get("older_than") is not None else base.restricted(statuses))
    pruner = core.Pruner(_queue(request))
    if dry_run:
        return JSONResponse({**(await pruner.count(policy)).to_dict(), "done": True})
    end = time.monotonic() + seconds
    stopped: list[bool] = []

    def stop() -> bool:
        if time.monotonic() > end:
            stopped.append(True)
        return bool(stopped)

    result = await pruner.prune(policy, stop=stop)
    if result.busy:
        return error(409, "another pruner (a worker, `chunkq serve` or `chunkq prune`) is running on this database; "
                          "try again later")
    return JSONResponse({**result.to_dict(), "done": not stopped})


async def prometheus_metrics(request: Request) -> Response:
    """The queue in Prometheus' text format, read at scrape time (``metrics.py``)."""
    params.only_params(request, ())
    from prometheus_client import CONTENT_TYPE_LATEST

    from . import metrics

    snapshot = await metrics.read_snapshot(_queue(request))
    return Response(metrics.exposition(snapshot), media_type=CONTENT_TYPE_LATEST)


async def health(request: Request) -> Response:
    """Unauthenticated, so it says only whether the database answers, never where it is.

    Answered within ``HEALTH_DB_SECONDS`` (or ``db_timeout`` if less) whatever the database does: a silent one
    is "not answering", with the time since this server first found it so.
    """
    state = request.app.state
    try:
        await _queue(request).list_jobs(limit=0)
    except Exception as exc:  # whatever the database says, the answer is "not healthy"
        silent = isinstance(exc, core.DatabaseStalled)
        if state.db_down_since is None:
            state.db_down_since = time.time()
            log.warning("health check: the database %s: %s",
                        "is not answering" if silent else "is unreachable", exc)
        body = {"status": "unavailable", "database": "not answering" if silent else "unreachable",
                "error": f"the database did not answer within {state.health_timeout:g} s" if silent
                else "the database is unreachable",
                "since": _iso(state.db_down_since)}
        return JSONResponse(body, status_code=503)
    if state.db_down_since is not None:
        log.warning("health check: the database answers again (it did not since %s)", _iso(state.db_down_since))
        state.db_down_since = None
    # callbacks given up (timeout, grace) whose threads still run: Python cannot stop them, so past a
    # worker's tolerance this process should be replaced; a supervisor's liveness probe sees it here
    hung = core.abandoned_callbacks()
    answer: dict[str, object] = {"status": "ok", "database": "reachable",
                                 "processor": state.processor is not None, "hung_callbacks": hung}
    if hung > core.ABANDONED_THREADS_MAX:
        return JSONResponse({**answer, "status": "wedged",
                             "error": f"{hung} callbacks given up (timeout, grace) still run: restart this server"},
                            status_code=503)
    return JSONResponse(answer)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# --------------------------------------------------------------------------- errors


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return error(exc.status, str(exc))


async def _chunkq_error(request: Request, exc: Exception) -> Response:
    # core's messages are written for people: shown as they are.
    status = 500
    if isinstance(exc, core.InvalidInput | core.ProcessorError):
        status = 422
    elif isinstance(exc, core.JobNotFound | core.WorkerNotFound):
        status = 404
    elif isinstance(exc, core.InvalidTransition):
        status = 409
    elif isinstance(exc, core.DatabaseUnavailable):
        status = 503
    return error(status, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))


async def _too_large(request: Request, exc: Exception) -> Response:
    limit = request.app.state.max_body_bytes
    return error(413, f"request body is larger than the limit of {limit:,} bytes")


async def _body_timeout(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BodyTimeout)
    log.info("%s %s: %s; answered 408", request.method, request.url.path, exc)
    return error(408, str(exc), {"Connection": "close"})


async def _client_gone(request: Request, exc: Exception) -> Response:
    # Nobody is left to answer, and nothing was written: one line, not a traceback.
    log.info("%s %s: the client disconnected before sending the whole body; nothing was done",
             request.method, request.url.path)
    return Response(status_code=400)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The traceback goes to the server's log (Starlette re-raises after this response), not to the caller.
    return error(500, "internal server error; see the server's log")


# --------------------------------------------------------------------------- the app


def create_app(
    db_url: str,
    processor: core.Processor | None,
    *,
    token: str | None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    lease_seconds: float = 30.0,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    heartbeat: float = 5.0,
    retention: core.RetentionPolicy | None = None,
    prune_every: float = 300.0,
    db_timeout: float = REQUEST_DB_SECONDS,
    grace: float = PROCESS_GRACE_SECONDS,
) -> Starlette:
    """The ASGI app; ``token=None`` turns authentication off (``--insecure-no-auth``).

    ``body_timeout``: seconds a request body may take to arrive whole (then 408).
    ``retention``: prune finished jobs past it every ``prune_every`` seconds in the
    background (`chunkq serve` passes its ``--retention``; None: never).
    ``db_timeout``: seconds a request may wait for the database, all its transactions together,
    before it is answered 503 (``DB_TIMEOUT``; `chunkq serve --db-timeout`).
    ``grace``: seconds ``POST /jobs/process`` waits for its chunks once it claims no more (past its
    ``max_seconds``; for one chunk, from its claim) before it gives them up for another worker and
    answers ``stopped_by: overran`` (`chunkq serve --grace`).

    The queue is opened in the lifespan, on the server's own event loop, because an
    async engine belongs to the loop it was opened on. A bad URL fails here, at once.
    """
    if token is not None and not token.strip():
        raise ValueError("the token must not be blank; pass None to turn authentication off")
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be at least 1")
    if not body_timeout > 0:
        raise ValueError("body_timeout must be more than 0 seconds")
    db_timeout = DB_TIMEOUT.check(db_timeout)  # InvalidInput names it
    grace = core.bounds.GRACE.check(grace)
    queue = core.Queue(db_url, lease_seconds=lease_seconds)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await queue.open()
        try:
            async with core.pruning_in_background(queue, retention, every=prune_every):
                yield
        finally:
            for worker in list(app.state.workers):
                worker.stop()
            await queue.close()

    app = Starlette(
        routes=[
            Route("/jobs/process", process_jobs, methods=ALL_METHODS),  # see process_jobs
            Route("/jobs", _bounded(jobs), methods=["GET", "POST"]),
            Route("/jobs/{job_id}", _bounded(show_job), methods=["GET"]),
            Route("/jobs/{job_id}/errors", _bounded(job_errors), methods=["GET"]),
            Route("/jobs/{job_id}/error-groups", _bounded(job_error_groups), methods=["GET"]),
            Route("/jobs/{job_id}/error-groups/merge", _bounded(merge_error_groups), methods=["POST"]),
            Route("/health", _bounded(health, health=True), methods=["GET"]),
            Route("/workers", _bounded(list_workers), methods=["GET"]),
            Route("/workers/{worker_id}/stop", _bounded(stop_worker), methods=["POST"]),
            Route("/metrics", _bounded(prometheus_metrics), methods=["GET"]),
            Route("/prune", prune_jobs, methods=["POST"]),
        ],
        middleware=[Middleware(GuardMiddleware, token=token, max_body_bytes=max_body_bytes,
                               body_timeout=body_timeout)],
        exception_handlers={
            BadRequest: _bad_request,
            core.ChunkqError: _chunkq_error,
            HTTPException: _http_error,
            BodyTooLarge: _too_large,
            BodyTimeout: _body_timeout,
            ClientDisconnect: _client_gone,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.queue = queue
    app.state.processor = processor
    app.state.max_body_bytes = max_body_bytes
    app.state.workers = set()
    app.state.heartbeat = heartbeat
    app.state.db_timeout = db_timeout
    app.state.grace = grace
    app.state.health_timeout = min(HEALTH_DB_SECONDS, db_timeout)
    app.state.retention = retention
    app.state.db_down_since = None  # when /health first found the database silent or unreachable
    return app
