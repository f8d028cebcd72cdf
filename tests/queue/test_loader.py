"""Processor import paths: errors found before any job is claimed, reload after an edit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from chunkq.core import Processor, ProcessorError, ProcessorHandle, load_processor


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("cq_")]:
        del sys.modules[name]


@pytest.mark.parametrize(
    ("source", "path", "message"),
    [
        (None, "cq_missing:fn", "no module named 'cq_missing'"),
        ("x = 1\n", "cq_attr:fn", "module 'cq_attr' has no attribute 'fn'"),
        ("fn = 42\n", "cq_notcall:fn", "is a int, not a callable"),
        ("def fn(:\n", "cq_syntax:fn", "syntax error in .*cq_syntax.py:1"),
        ("raise RuntimeError('boom at import')\n", "cq_raises:fn", "raised RuntimeError: boom at import"),
        ("import cq_nonexistent_dep\n", "cq_dep:fn", "importing 'cq_dep' failed: ModuleNotFoundError"),
        (None, "no_colon", "must look like 'package.module:function'"),
        (None, "a:b:c", "must look like"),
        (None, ":fn", "must look like"),
    ],
)
def test_bad_processor_paths(modules: Path, source: str | None, path: str, message: str) -> None:
    if source is not None:
        (modules / f"{path.split(':')[0]}.py").write_text(source)
    with pytest.raises(ProcessorError, match=message):
        load_processor(path)


def test_function_and_processor_objects(modules: Path) -> None:
    (modules / "cq_ok.py").write_text(
        "from chunkq.core import Processor\n"
        "def fn(e, j): return e\n"
        "async def batch(ids, j): return {}\n"
        "proc = Processor(on_chunk=batch, concurrency=3)\n"
    )
    assert load_processor("cq_ok:fn").on_process is not None
    p = load_processor("cq_ok:proc")
    assert isinstance(p, Processor) and p.on_chunk is not None and p.concurrency == 3


def test_reload_picks_up_edits_and_keeps_old_on_error(modules: Path) -> None:
    mod = modules / "cq_reload.py"
    helper = modules / "cq_reload_helper.py"
    helper.write_text("VALUE = 'one'\n")
    mod.write_text("import cq_reload_helper\ndef fn(e, j): return cq_reload_helper.VALUE\n")
    handle = ProcessorHandle("cq_reload:fn", overrides={"concurrency": 4})
    assert handle.processor.on_process("x", None) == "one"
    assert handle.processor.concurrency == 4
    helper.write_text("VALUE = 'two'\n")
    _bump_mtime(helper)
    reloaded = handle.reload()
    assert "cq_reload_helper" in reloaded and "cq_reload" in reloaded
    assert handle.processor.on_process("x", None) == "two"
    assert handle.processor.concurrency == 4
    mod.write_text("def fn(e, j) return 3\n")
    _bump_mtime(mod)
    with pytest.raises(ProcessorError, match="syntax error"):
        handle.reload()
    assert handle.processor.on_process("x", None) == "two"


def _bump_mtime(path: Path) -> None:
    import os

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
