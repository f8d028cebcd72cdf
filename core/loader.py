"""Finding the user's callback by import path, and reloading it after an edit.

Errors are found before any job is claimed, and say exactly what is wrong: a
worker that starts, claims a chunk and then discovers a typo in its processor
path would burn a lease for nothing.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import ProcessorError
from .options import ProcessorOptions, apply_overrides
from .processor import Processor

_OWN_PACKAGES = ("chunkq",)


def _ensure_cwd_on_path() -> None:
    # Like `python -m` and uvicorn: a processor module in the current folder just works.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _split(path: str) -> tuple[str, str]:
    if not isinstance(path, str) or path.count(":") != 1:
        raise ProcessorError(f"processor {path!r} must look like 'package.module:function'")
    module_name, attr = (part.strip() for part in path.split(":"))
    if not module_name or not attr:
        raise ProcessorError(f"processor {path!r} must look like 'package.module:function'")
    return module_name, attr


def _import(module_name: str, path: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ProcessorError(
                f"processor {path!r}: no module named {exc.name!r} (is it on PYTHONPATH, or in {os.getcwd()}?)"
            ) from None
        raise ProcessorError(f"processor {path!r}: importing {module_name!r} failed: {_last_line(exc)}") from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ProcessorError(f"processor {path!r}: {_why(exc, module_name)}") from exc


def _why(exc: BaseException, module_name: str) -> str:
    """What went wrong running a module's top level, in one line (a syntax error names file:line)."""
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else module_name
        return f"syntax error in {where}: {exc.msg}"
    return f"importing {module_name!r} raised {_last_line(exc)}"


def _last_line(exc: BaseException) -> str:
    return traceback.format_exception_only(exc)[-1].strip()


def _resolve(module: ModuleType, attr: str, path: str) -> Processor:
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ProcessorError(f"processor {path!r}: module {module.__name__!r} has no attribute {part!r}") from None
    if isinstance(target, Processor):
        return target
    if not callable(target):
        raise ProcessorError(f"processor {path!r} is a {type(target).__name__}, not a callable")
    return Processor(on_process=target)


def load_processor(path: str) -> Processor:
    """``package.module:function`` (or a ``Processor`` instance at that path) -> ``Processor``."""
    _ensure_cwd_on_path()
    module_name, attr = _split(path)
    return _resolve(_import(module_name, path), attr, path)


@dataclass
class ProcessorHandle:
    """A loaded processor that can be reloaded in place after its source changes.

    Reloading re-imports the processor's module and every already-imported module
    under the same top-level package or the current folder whose file changed on
    disk. If anything fails, the previous processor stays in use. ``overrides``
    apply on every load by the one rule of ``options.apply_overrides`` (rate limits
    merge per provider).
    """

    path: str
    overrides: ProcessorOptions | Mapping[str, Any] = field(default_factory=dict)
    processor: Processor = field(init=False)
    _mtimes: dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.overrides, ProcessorOptions):  # checked before anything is imported
            self.overrides = ProcessorOptions.from_mapping({k: v for k, v in self.overrides.items() if v is not None})
        self.processor = self._with_overrides(load_processor(self.path))
        self._snapshot()

    def _with_overrides(self, proc: Processor) -> Processor:
        return apply_overrides(proc, self.overrides)

    def _project_modules(self) -> dict[str, ModuleType]:
        """The processor's module and its neighbours: modules under the same source root or cwd.

        Installed libraries (site-packages) and the standard library are never reloaded.
        """
        module_name, _ = _split(self.path)
        top = module_name.split(".")[0]
        roots = {os.path.realpath(os.getcwd())}
        top_mod = sys.modules.get(top)
        top_file = getattr(top_mod, "__file__", None)
        if top_file:
            top_dir = os.path.dirname(os.path.realpath(top_file))
            roots.add(os.path.dirname(top_dir) if top_file.endswith("__init__.py") else top_dir)
        out = {}
        for name, mod in list(sys.modules.items()):
            file = getattr(mod, "__file__", None)
            if not file:
                continue
            real = os.path.realpath(file)
            if "site-packages" in real or "dist-packages" in real:
                continue
            if name != module_name and name.split(".")[0] in _OWN_PACKAGES:
                continue  # chunkq itself: reloading it would split its classes in two
            if name == module_name or name.split(".")[0] == top or any(
                real.startswith(root + os.sep) for root in roots
            ):
                out[name] = mod
        return out

    def _snapshot(self) -> None:
        self._mtimes = {}
        for name, mod in self._project_modules().items():
            try:
                self._mtimes[name] = Path(mod.__file__ or "").stat().st_mtime_ns
            except OSError:
                continue

    def reload(self) -> list[str]:
        """Re-import what changed; returns the reloaded module names. Raises ProcessorError."""
        module_name, attr = _split(self.path)
        changed = []
        for name, mod in self._project_modules().items():
            try:
                mtime = Path(mod.__file__ or "").stat().st_mtime_ns
            except OSError:
                continue
            if name == module_name or self._mtimes.get(name) != mtime:
                changed.append(name)
        importlib.invalidate_caches()
        # Dependencies first (deeper names), the processor's own module last.
        changed.sort(key=lambda n: (n == module_name, -n.count(".")))
        for name in changed:
            module = sys.modules.get(name)
            if module is None:
                continue
            try:
                importlib.reload(module)
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                raise ProcessorError(f"reload failed, {_why(exc, name)}") from exc
        self.processor = self._with_overrides(_resolve(sys.modules[module_name], attr, self.path))
        self._snapshot()
        return changed
