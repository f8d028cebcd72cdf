"""Processing options shared by every way in: `chunkq process/worker/tui`, `chunkq serve`, the dashboard.

One parser for ``--rate prospeo=10/s`` and one place that turns a processor path
plus overrides into a ``core.Processor``, so the CLI, the HTTP trigger and the
dashboard cannot drift apart on what an option means. Imports only click and
core (no Rich, no Textual), so `serve` and the dashboard can use it freely.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import click
from chunkq.core import InvalidInput, Processor, load_processor

F = TypeVar("F", bound=Callable[..., Any])

_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
        "h": 3600.0, "hour": 3600.0}
_RATE_RE = re.compile(
    r"^\s*([^=\s][^=]*?)\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([a-zA-Z]+))?\s*$")
_RATE_HELP = "expected PROVIDER=N/s or PROVIDER=N/m, e.g. prospeo=10/s"


def parse_rate(text: str) -> tuple[str, float]:
    """``"prospeo=10/s"`` -> ``("prospeo", 10.0)``; ``"prospeo=30/m"`` -> ``("prospeo", 0.5)``.

    A bare number means calls per second. Raises ``InvalidInput`` with a message
    that shows the expected shape, because this is typed by people.
    """
    m = _RATE_RE.match(text or "")
    if not m:
        raise InvalidInput(f"rate {text!r}: {_RATE_HELP}")
    provider, number, unit = m.group(1), float(m.group(2)), (m.group(3) or "s").lower()
    if unit not in _PER:
        raise InvalidInput(f"rate {text!r}: unknown unit '/{unit}'; use /s, /m or /h")
    if number <= 0:
        raise InvalidInput(f"rate {text!r}: the number of calls must be positive")
    return provider, number / _PER[unit]


def parse_rates(values: Iterable[str] | Mapping[str, float] | None) -> dict[str, float]:
    """Several ``--rate`` values (or an already parsed mapping) -> ``{provider: calls_per_second}``."""
    if not values:
        return {}
    if isinstance(values, Mapping):
        out = {}
        for provider, rate in values.items():
            if not isinstance(rate, int | float) or isinstance(rate, bool) or rate <= 0:
                raise InvalidInput(f"rate for {provider!r} must be a positive number of calls per second")
            out[str(provider)] = float(rate)
        return out
    return dict(parse_rate(v) for v in values)


def processor_overrides(
    concurrency: int | None = None,
    timeout: float | None = None,
    rate: Iterable[str] | Mapping[str, float] | None = None,
    capture_locals: bool | None = None,
) -> dict[str, Any]:
    """The ``Processor`` fields the user set on the command line (unset ones are left out).

    Suitable for ``core.ProcessorHandle(path, overrides=...)``; note that a
    ``rate_limits`` override replaces the processor's own table, whereas
    ``build_processor`` merges the two.
    """
    out: dict[str, Any] = {}
    if concurrency is not None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidInput(f"concurrency must be a whole number of at least 1, got {concurrency!r}")
        out["concurrency"] = concurrency
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidInput(f"timeout must be a positive number of seconds, got {timeout!r}")
        out["timeout"] = float(timeout)
    rates = parse_rates(rate)
    if rates:
        out["rate_limits"] = rates
    if capture_locals is not None:
        out["capture_locals"] = bool(capture_locals)
    return out


def build_processor(
    path: str,
    concurrency: int | None = None,
    timeout: float | None = None,
    rate: Iterable[str] | Mapping[str, float] | None = None,
    capture_locals: bool | None = None,
) -> Processor:
    """Load ``module:function`` and apply the command-line overrides.

    Raises ``ProcessorError``/``InvalidInput`` (both ``ChunkqError``) before
    anything touches the queue, so a typo never costs a lease.
    """
    if not path or not str(path).strip():
        raise InvalidInput("no processor: give --processor module:function (or set CHUNKQ_PROCESSOR)")
    proc = load_processor(str(path).strip())
    changes = processor_overrides(concurrency, timeout, rate, capture_locals)
    if "rate_limits" in changes:
        changes["rate_limits"] = {**proc.rate_limits, **changes["rate_limits"]}
    if not changes:
        return proc
    try:
        return dataclasses.replace(proc, **changes)
    except ValueError as exc:
        raise InvalidInput(f"processor {path!r}: {exc}") from None


# ------------------------------------------------------------------ click glue


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

#: ``--lease-seconds``, for every command that runs chunks (`process`, `worker`, `serve`)
lease_seconds_option = click.option(
    "--lease-seconds", type=click.FloatRange(0, min_open=True), default=30.0, show_default=True, metavar="S",
    help="How long a silent worker keeps its chunk before others may take it.",
)


def processing_options(*, processor_required: bool = True) -> Callable[[F], F]:
    """Decorate a click command with --processor/--concurrency/--timeout/--rate/--capture-locals.

    The command receives ``processor_path``, ``concurrency``, ``timeout``,
    ``rates`` (a tuple of ``(provider, calls_per_second)``) and ``capture_locals``;
    pass them to ``build_processor(processor_path, concurrency, timeout,
    dict(rates), capture_locals)``.
    """
    needed = " (required)" if processor_required else ""

    def decorate(f: F) -> F:
        options = [
            click.option(
                "--processor", "processor_path", envvar="CHUNKQ_PROCESSOR", metavar="MODULE:FUNCTION",
                help=f"Your callback, e.g. myjobs.enrich:lookup (env CHUNKQ_PROCESSOR){needed}.",
            ),
            click.option(
                "--concurrency", type=click.IntRange(1, 10_000), default=None, metavar="N",
                help="Entities of one chunk run at once (default: the processor's own, usually 1).",
            ),
            click.option(
                "--timeout", type=click.FloatRange(0, min_open=True), default=None, metavar="SECONDS",
                help="Per-entity time limit; an entity that takes longer fails with a timeout.",
            ),
            click.option(
                "--rate", "rates", type=RATE, multiple=True, metavar="PROVIDER=N/s",
                help="Shared rate limit for a provider across all workers on the database "
                "(N/s or N/m; repeatable).",
            ),
            click.option(
                "--capture-locals/--no-capture-locals", default=None,
                help="Keep local variables in error tracebacks (they may hold secrets).",
            ),
        ]
        for option in reversed(options):
            f = option(f)
        return f

    return decorate
