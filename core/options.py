"""A processor's own options, and overrides from the command line, the dashboard or HTTP: one rule.

**The rule.** An override that was given replaces that knob of the processor;
one that was not given (None) leaves the processor's own value. Rate limits are
a table, and merge per provider: the processor's limits stay, the override's
are added, and for a provider both name the override wins.

So a processor declaring ``rate_limits={"clearbit": 5}`` run with
``--rate hunter=2/s`` is limited to 5/s on clearbit *and* 2/s on hunter, the
same from ``chunkq process``, ``chunkq tui`` and the HTTP trigger.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .bounds import RATE, TIMEOUT, check_concurrency_optional
from .errors import InvalidInput
from .processor import Processor

_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
        "h": 3600.0, "hour": 3600.0}
_RATE_RE = re.compile(
    r"^\s*([^=\s][^=]*?)\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([a-zA-Z]+))?\s*$")
_RATE_HELP = "expected PROVIDER=N/s or PROVIDER=N/m, e.g. prospeo=10/s"


@dataclass(frozen=True, slots=True)
class ProcessorOptions:
    """The knobs a front end lets people override; None means "not given: keep the processor's"."""

    #: a number, or "auto" / "auto:N" (``bounds.check_concurrency``)
    concurrency: int | str | None = None
    timeout: float | None = None
    #: provider -> calls per second, merged into the processor's own table (see the module's rule)
    rate_limits: Mapping[str, float] | None = None
    capture_locals: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "concurrency", check_concurrency_optional(self.concurrency))
        object.__setattr__(self, "timeout", TIMEOUT.check_optional(self.timeout))
        if self.rate_limits is not None:
            object.__setattr__(self, "rate_limits", parse_rates(self.rate_limits))
        if self.capture_locals is not None and not isinstance(self.capture_locals, bool):
            raise InvalidInput(f"capture_locals must be true or false, got {self.capture_locals!r}",
                               field="capture_locals")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ProcessorOptions:
        """From ``{"concurrency": 4, "rate_limits": {...}}`` (a form's or an API's fields)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InvalidInput(f"unknown processor option {unknown[0]!r}; expected some of: {', '.join(sorted(names))}",
                               field=unknown[0])
        return cls(**values)

    def given(self) -> dict[str, Any]:
        """The overrides that were given, by field name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


def apply_overrides(processor: Processor, overrides: ProcessorOptions | Mapping[str, Any] | None) -> Processor:
    """``processor`` with ``overrides`` applied by the module's rule (the processor itself is not changed)."""
    if overrides is None:
        return processor
    if not isinstance(overrides, ProcessorOptions):
        overrides = ProcessorOptions.from_mapping(overrides)
    changes = overrides.given()
    if not changes:
        return processor
    if "rate_limits" in changes:
        changes["rate_limits"] = {**processor.rate_limits, **changes["rate_limits"]}
    return dataclasses.replace(processor, **changes)


def parse_rate(text: str) -> tuple[str, float]:
    """``"prospeo=10/s"`` -> ``("prospeo", 10.0)``; ``"prospeo=30/m"`` -> ``("prospeo", 0.5)``.

    A bare number means calls per second. The message shows the expected shape,
    because this is typed by people.
    """
    m = _RATE_RE.match(text or "")
    if not m:
        raise InvalidInput(f"rate {text!r}: {_RATE_HELP}", field="rate_limits")
    provider, number, unit = m.group(1), float(m.group(2)), (m.group(3) or "s").lower()
    if unit not in _PER:
        raise InvalidInput(f"rate {text!r}: unknown unit '/{unit}'; use /s, /m or /h", field="rate_limits")
    if number <= 0:
        raise InvalidInput(f"rate {text!r}: the number of calls must be positive", field="rate_limits")
    per_second = number / _PER[unit]
    if not (math.isfinite(per_second) and RATE.lo <= per_second <= RATE.hi):  # type: ignore[operator]  # RATE has a cap; "1e999/s", "1e-300/s"
        raise InvalidInput(f"rate {text[:60]!r}: must be {RATE.must}", field="rate_limits")
    return provider, per_second


def parse_rates(values: Iterable[str] | Mapping[str, float] | None) -> dict[str, float]:
    """Several ``--rate`` texts, or an already parsed mapping, -> ``{provider: calls_per_second}``."""
    if not values:
        return {}
    if isinstance(values, Mapping):
        out = {}
        for provider, rate in values.items():
            try:
                out[str(provider)] = RATE.check(rate)
            except InvalidInput:
                raise InvalidInput(f"rate for {provider!r} must be a positive number of calls per second",
                                   field="rate_limits") from None
        return out
    if isinstance(values, str):
        values = [values]
    return dict(parse_rate(v) for v in values)
