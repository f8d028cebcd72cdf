"""The Starlette app: five routes over the queue, each "parse, call core, answer".

It answers exactly what ``chunkq process --json`` prints (``POST /jobs/process``)
and what ``chunkq jobs/show/errors --json`` print, so a script can switch between
the command and the API. Request checks live in ``params``, the token and body
limit in ``guard``, and the `chunkq serve` command that runs this in ``server``.
Concurrent requests are safe because the queue hands chunks out under leases.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from chunkq import core
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import params
from .guard import DEFAULT_BODY_TIMEOUT, BodyTimeout, BodyTooLarge, GuardMiddleware
from .params import BadRequest, error

log = logging.getLogger("chunkq.http")

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
#: what ``POST /jobs/process`` takes, to answer all but POST itself (Starlette's default is GET only)
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _queue(request: Request) -> core.Queue:
    return request.app.state.queue  # type: ignore[no-any-return]


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
    worker = core.Worker(_queue(request), processor, max_chunks=None if max_seconds else 1,
                         max_seconds=max_seconds)
    workers: set[core.Worker] = request.app.state.workers
    workers.add(worker)
    try:
        # registered while it runs (kind "serve"): `chunkq workers` and GET /workers list it
        async with core.Registration(_queue(request), worker, kind="serve", processor_name=processor.name,
                                     interval=request.app.state.heartbeat):
            summary = await worker.run()
    finally:
        workers.discard(worker)
    return JSONResponse(summary.to_dict())


async def create_job(request: Request) -> Response:
    ids, kwargs = params.job_request(await params.json_body(request))
    job = await _queue(request).enqueue_job(ids, **kwargs)
    return JSONResponse(job.to_dict(), status_code=201, headers={"Location": f"/jobs/{job.id}"})


async def list_jobs(request: Request) -> Response:
    params.only_params(request, ("status", "limit", "offset"))
    statuses = params.statuses(request)
    limit, offset = params.page(request)
    queue = _queue(request)
    jobs = await queue.list_jobs(statuses or None, limit=limit, offset=offset)
    total = await queue.count_jobs(statuses or None)
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
    """The job's errors grouped by kind (fingerprint), biggest first (as ``chunkq errors --groups --json``)."""
    params.only_params(request, ("limit", "search"))
    job_id = params.job_id(request)
    limit, _offset = params.page(request)
    groups = await _queue(request).group_errors(job_id, limit=limit, search=request.query_params.get("search"))
    return JSONResponse({"job_id": job_id, "groups": [g.to_dict() for g in groups]})


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


async def prometheus_metrics(request: Request) -> Response:
    """The queue in Prometheus' text format, read at scrape time (``metrics.py``)."""
    params.only_params(request, ())
    from prometheus_client import CONTENT_TYPE_LATEST

    from . import metrics

    snapshot = await metrics.read_snapshot(_queue(request))
    return Response(metrics.exposition(snapshot), media_type=CONTENT_TYPE_LATEST)


async def health(request: Request) -> Response:
    """Unauthenticated, so it says only whether the database answers, never where it is."""
    try:
        await _queue(request).list_jobs(limit=0)
    except Exception as exc:  # whatever the database says, the answer is "not healthy"
        log.warning("health check: database unreachable: %s: %s", type(exc).__name__, exc)
        return JSONResponse({"status": "unavailable", "database": "unreachable",
                             "error": "the database is unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "reachable",
                         "processor": request.app.state.processor is not None})


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
) -> Starlette:
    """The ASGI app; ``token=None`` turns authentication off (``--insecure-no-auth``).

    ``body_timeout``: seconds a request body may take to arrive whole (then 408).

    The queue is opened in the lifespan, on the server's own event loop, because an
    async engine belongs to the loop it was opened on. A bad URL fails here, at once.
    """
    if token is not None and not token.strip():
        raise ValueError("the token must not be blank; pass None to turn authentication off")
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be at least 1")
    if not body_timeout > 0:
        raise ValueError("body_timeout must be more than 0 seconds")
    queue = core.Queue(db_url, lease_seconds=lease_seconds)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await queue.open()
        try:
            yield
        finally:
            for worker in list(app.state.workers):
                worker.stop()
            await queue.close()

    app = Starlette(
        routes=[
            Route("/jobs/process", process_jobs, methods=ALL_METHODS),  # see process_jobs
            Route("/jobs", jobs, methods=["GET", "POST"]),
            Route("/jobs/{job_id}", show_job, methods=["GET"]),
            Route("/jobs/{job_id}/errors", job_errors, methods=["GET"]),
            Route("/jobs/{job_id}/error-groups", job_error_groups, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/workers", list_workers, methods=["GET"]),
            Route("/workers/{worker_id}/stop", stop_worker, methods=["POST"]),
            Route("/metrics", prometheus_metrics, methods=["GET"]),
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
    return app
