"""The processing options of every command that runs the callback: `process`, `worker`, `tui`, `serve`.

Click glue only. What an option *means* is core's: the rate parser and the one
rule that merges overrides into the processor's own options live in
``chunkq.core.options``, the bounds in ``chunkq.core.limits``. A command gets
``processor_path`` and one ``core.ProcessorOptions`` and hands them on, so the
CLI, the dashboard and the HTTP trigger cannot drift apart on what ``--rate``
does. ``int_range``/``float_range`` turn core's limits into click types for every
command's numbers, read by core's own ``parse`` (so ``nan``, ``inf`` and ``1e308``
are usage errors naming the option and its range, exit 2). Imports only click and
core (no Rich, no Textual).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
from chunkq.core import InvalidInput, Processor, ProcessorOptions, apply_overrides, limits, load_processor, parse_rate

F = TypeVar("F", bound=Callable[..., Any])

NO_PROCESSOR = "no processor: give --processor module:function (or set CHUNKQ_PROCESSOR)"
#: the command-line flag of each ``ProcessorOptions`` field, to name it in a message
OPTION_FLAGS = {"concurrency": "--concurrency", "timeout": "--timeout", "rate_limits": "--rate",
                "capture_locals": "--capture-locals"}


def build_processor(path: str | None, options: ProcessorOptions | None = None) -> Processor:
    """Load ``module:function`` and apply ``options`` by core's rule (``apply_overrides``).

    Raises ``ProcessorError``/``InvalidInput`` (both ``ChunkqError``) before
    anything touches the queue, so a typo never costs a lease.
    """
    if not path or not str(path).strip():
        raise InvalidInput(NO_PROCESSOR, field="processor")
    processor = apply_overrides(load_processor(str(path).strip()), options)
    if processor.name is None:  # routed by its import path: `chunkq enqueue --processor` names it the same way
        processor = dataclasses.replace(processor, name=str(path).strip())
    return processor


class _IntOption(click.IntRange):
    """A whole-number option: ASCII digits (core's ``limits.INTEGER``; ``int()`` also takes ``"١٢"``
    and ``"1_000"``), click's range message (as ``--help`` shows the range), then core's own check."""

    def __init__(self, limit: limits.IntLimit) -> None:
        super().__init__(limit.lo, None if limit.hi >= limits.MAX_ROW_ID else limit.hi)
        self.limit = limit

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        number = super().convert(value, param, ctx)  # "'high' is not a valid integer", the range
        if isinstance(value, str) and limits.INTEGER.fullmatch(value.strip()) is None:
            self.fail(f"must be a whole number in ASCII digits, got {limits.shown(value)}", param, ctx)
        try:
            return self.limit.check(number)
        except InvalidInput as exc:
            self.fail(_without_field(exc, self.limit.field), param, ctx)


class _FloatOption(click.FloatRange):
    """A number option read by core's own ``FloatLimit.parse``: no nan, no inf, nothing that overflows.

    click's ``FloatRange`` lets ``nan`` through (every comparison with it is false) and, without an
    upper bound, ``inf`` and ``1e308`` too, which overflowed later (``--lease-seconds 1e308`` exited 1
    with an OverflowError; ``--max-seconds nan`` blamed the database).
    """

    def __init__(self, limit: limits.FloatLimit) -> None:
        super().__init__(limit.lo, limit.hi, min_open=limit.lo_open)
        self.limit = limit

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return self.limit.parse(value)
        except InvalidInput as exc:
            self.fail(_without_field(exc, self.limit.field), param, ctx)


def _without_field(exc: Exception, field: str) -> str:
    # click names the option ("Invalid value for '--lease-seconds': "); core's message starts with the field
    text = str(exc)
    return text[len(field) + 1:] if text.startswith(field + " ") else text


def int_range(limit: limits.IntLimit) -> click.IntRange:
    """A click type with core's bounds and core's check, so `--help`, the usage error and the queue agree.

    A bound of ``limits.MAX_ROW_ID`` (a row id's range, no cap a person would meet)
    is left out of ``--help``: it says ``x>=1``, not ``1<=x<=4611686018427387904``.
    """
    return _IntOption(limit)


def float_range(limit: limits.FloatLimit) -> click.FloatRange:
    """A click type for a finite number within ``limit``: every number option of every command uses one."""
    return _FloatOption(limit)


#: a job id argument or option (``--job ID``, ``chunkq show ID``); core checks the upper bound
JOB_ID = click.IntRange(min=1)


class RateParam(click.ParamType):
    """``--rate PROVIDER=N/s``; a bad value is a usage error (exit 2) naming the option."""

    name = "PROVIDER=N/s"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, float]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_rate(str(value))
        except InvalidInput as exc:
            self.fail(str(exc), param, ctx)


RATE = RateParam()


class ConcurrencyParam(click.ParamType):
    """``--concurrency N`` or ``--concurrency auto`` (``auto:N`` caps it); bad values are a usage error."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        try:
            return limits.check_concurrency(str(value))
        except InvalidInput as exc:
            self.fail(_without_field(exc, "concurrency"), param, ctx)


CONCURRENCY = ConcurrencyParam()

#: ``--lease-seconds``, for every command that runs chunks (`process`, `worker`, `serve`)
lease_seconds_option = click.option(
    "--lease-seconds", type=float_range(limits.LEASE_SECONDS), default=limits.LEASE_SECONDS.default,
    show_default=True, metavar="S", help="How long a silent worker keeps its chunk before others may take it.",
)


def processing_options(*, processor_required: bool = True) -> Callable[[F], F]:
    """Decorate a click command with --processor/--concurrency/--timeout/--rate/--capture-locals.

    The command receives ``processor_path`` and ``options`` (a
    ``core.ProcessorOptions`` holding what was given; None for the rest); pass
    them to ``build_processor(processor_path, options)``.
    """
    needed = " (required)" if processor_required else ""

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def command(*args: Any, concurrency: int | str | None, timeout: float | None,
                    rates: tuple[tuple[str, float], ...], capture_locals: bool | None, **kwargs: Any) -> Any:
            options = ProcessorOptions(concurrency=concurrency, timeout=timeout,
                                       rate_limits=dict(rates) or None, capture_locals=capture_locals)
            return f(*args, options=options, **kwargs)

        decorators = [
            click.option(
                "--processor", "processor_path", envvar="CHUNKQ_PROCESSOR", metavar="MODULE:FUNCTION",
                help=f"Your callback, e.g. myjobs.enrich:lookup (env CHUNKQ_PROCESSOR){needed}.",
            ),
            click.option(
                "--concurrency", type=CONCURRENCY, default=None, metavar="N|auto",
                help="Entities run at once (default: the processor's own, usually 1); auto finds the "
                "provider's limit (grows while calls succeed, backs off on 429/Retry/timeouts; auto:N caps it).",
            ),
            click.option(
                "--timeout", type=float_range(limits.TIMEOUT), default=None, metavar="SECONDS",
                help="Per-entity time limit; an entity that takes longer fails with a timeout.",
            ),
            click.option(
                "--rate", "rates", type=RATE, multiple=True, metavar="PROVIDER=N/s",
                help="Shared rate limit for a provider across all workers on the database "
                "(N/s, N/m or N/h; repeatable); added to the processor's own limits, and replacing "
                "its limit for the same provider.",
            ),
            click.option(
                "--capture-locals/--no-capture-locals", default=None,
                help="Keep local variables in error tracebacks (they may hold secrets).",
            ),
        ]
        wrapped: Any = command
        for decorator in reversed(decorators):
            wrapped = decorator(wrapped)
        return wrapped

    return decorate
