"""One rule for a processor's own options and the overrides a front end gives."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from chunkq.core import InvalidInput, Processor, ProcessorHandle, ProcessorOptions, apply_overrides, parse_rate
from chunkq.core.options import parse_rates


def _proc(**kw: object) -> Processor:
    return Processor(on_process=lambda e, j: None, **kw)  # type: ignore[arg-type]


def test_rate_limits_merge_per_provider_and_the_override_wins_for_a_shared_one() -> None:
    own = _proc(rate_limits={"clearbit": 5.0, "hunter": 9.0})
    merged = apply_overrides(own, ProcessorOptions(rate_limits={"hunter": 2.0, "prospeo": 1.0}))
    assert merged.rate_limits == {"clearbit": 5.0, "hunter": 2.0, "prospeo": 1.0}
    assert own.rate_limits == {"clearbit": 5.0, "hunter": 9.0}, "the processor itself is not changed"


def test_a_given_knob_replaces_and_a_missing_one_keeps() -> None:
    own = _proc(concurrency=3, timeout=5.0, capture_locals=True, rate_limits={"a": 1.0})
    same = apply_overrides(own, ProcessorOptions())
    assert same is own
    out = apply_overrides(own, ProcessorOptions(concurrency=8, capture_locals=False))
    assert (out.concurrency, out.timeout, out.capture_locals, out.rate_limits) == (8, 5.0, False, {"a": 1.0})
    assert out.on_process is own.on_process


def test_overrides_as_a_mapping_follow_the_same_rule() -> None:
    own = _proc(rate_limits={"clearbit": 5.0})
    out = apply_overrides(own, {"rate_limits": {"hunter": 2.0}, "timeout": 1})
    assert out.rate_limits == {"clearbit": 5.0, "hunter": 2.0} and out.timeout == 1.0
    assert apply_overrides(own, None) is own
    with pytest.raises(InvalidInput, match="unknown processor option 'speed'"):
        apply_overrides(own, {"speed": 3})


def test_options_report_what_was_given() -> None:
    assert ProcessorOptions().given() == {}
    assert ProcessorOptions(timeout=2, rate_limits={"p": 3}).given() == {"timeout": 2.0, "rate_limits": {"p": 3.0}}


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("cq_opt")]:
        del sys.modules[name]


def test_the_dashboards_processor_handle_merges_rates_like_the_cli(modules: Path) -> None:
    """``chunkq tui --rate hunter=2/s`` used to drop the processor's own ``{"clearbit": 5}``."""
    (modules / "cq_opt.py").write_text(
        "from chunkq.core import Processor\n"
        "proc = Processor(on_process=lambda e, j: None, rate_limits={'clearbit': 5.0}, concurrency=2)\n"
    )
    overrides = {"capture_locals": None, "rate_limits": {"hunter": 2.0}, "concurrency": None, "timeout": None}
    handle = ProcessorHandle("cq_opt:proc", overrides=overrides)
    assert handle.processor.rate_limits == {"clearbit": 5.0, "hunter": 2.0}
    assert handle.processor.concurrency == 2
    handle.reload()
    assert handle.processor.rate_limits == {"clearbit": 5.0, "hunter": 2.0}, "a reload applies the same rule"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("prospeo=10/s", ("prospeo", 10.0)), ("p = 30/m", ("p", 0.5)), ("p=7200/h", ("p", 2.0)), ("p=3", ("p", 3.0))],
)
def test_parse_rate(text: str, expected: tuple[str, float]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize(("text", "message"), [("p=fast", "expected PROVIDER=N/s"), ("p=3/d", "unknown unit '/d'"),
                                               ("p=0", "must be positive"), ("=3", "expected")])
def test_parse_rate_rejects_with_the_expected_shape(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as err:
        parse_rate(text)
    assert err.value.field == "rate_limits"


def test_parse_rates_takes_texts_or_a_mapping() -> None:
    assert parse_rates(["a=1/s", "b=60/m"]) == {"a": 1.0, "b": 1.0}
    assert parse_rates({"a": 2}) == {"a": 2.0}
    assert parse_rates(None) == {} and parse_rates("a=4") == {"a": 4.0}
