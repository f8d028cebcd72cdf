"""What every section shares: the result row, timers, and scratch folders."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One line of the table: chunkq's number, the baseline's, and the ratio judged against the target.

    ``higher_is_better`` says which way the target points (throughput ratios must be
    at least the target, cost ratios at most).
    """

    section: str
    metric: str
    value: float
    unit: str
    baseline: float | None
    baseline_name: str
    target: float | None
    higher_is_better: bool = False
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """chunkq / baseline, or the value itself when the target is absolute (no baseline)."""
        if self.baseline is None:
            return self.value
        return self.value / self.baseline if self.baseline else None

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        d["met"] = self.met
        return d


def noop(entity_id: str, job: Any) -> None:
    """The no-op callback: measures the queue, not the work."""


def ids(n: int, prefix: str = "company-") -> list[str]:
    return [f"{prefix}{i:08d}" for i in range(n)]


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@contextmanager
def scratch(keep: bool = False) -> Iterator[Path]:
    """A temporary folder for one section's database files, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="chunkq-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def machine() -> dict[str, Any]:
    import platform
    import sqlite3

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
    }
