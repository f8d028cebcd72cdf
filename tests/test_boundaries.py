"""The architecture, tested: core is the engine, tui builds on it, headless paths stay light.

Import-linter checks the static import graph; the subprocess tests check what is
really loaded at run time (a lazy import inside a function is allowed, a module-level
one is not).
"""

from __future__ import annotations

import ast
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

UI_LIBS = ("textual", "click", "rich", "starlette", "uvicorn")


def _loaded_after(code: str, env: dict[str, str]) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    ).stdout
    return set(out.split())


@pytest.mark.slow
def test_import_contracts_hold(python_env: dict[str, str]) -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(lint), str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True,
                         text=True, env=python_env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "broken" not in res.stdout.lower().replace("0 broken", "")


CORE_MODULES = sorted(
    ".".join(("chunkq", *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
    for p in [*(ROOT / "core").glob("*.py"), *(ROOT / "core" / "backend").glob("*.py")] if p.stem != "__main__"
)


def _leaked(loaded: set[str]) -> list[str]:
    return sorted(m for m in loaded if m.split(".")[0] in UI_LIBS or m.startswith("chunkq.tui"))


def test_core_loads_no_ui_library_and_no_tui(python_env: dict[str, str]) -> None:
    """Every core module, imported in one process: what any one of them loads is a part of what all of
    them load, so none leaking there proves it of each (one interpreter start, not one per module).
    Only when something leaked is each module imported alone, to name it."""
    assert len(CORE_MODULES) > 40 and "chunkq.core.backend.postgres" in CORE_MODULES
    leaked = _leaked(_loaded_after("\n".join(f"import {m}" for m in CORE_MODULES), python_env))
    if leaked:
        culprits = {m: found for m in CORE_MODULES if (found := _leaked(_loaded_after(f"import {m}", python_env)))}
        raise AssertionError(f"core loaded {leaked}: {culprits}")


def test_tui_package_itself_imports_nothing(python_env: dict[str, str]) -> None:
    loaded = _loaded_after("import chunkq.tui", python_env)
    assert not {m for m in loaded if m.split(".")[0] in (*UI_LIBS, "sqlalchemy") or m.startswith("chunkq.core")}


@pytest.mark.slow
@pytest.mark.parametrize("module", ["chunkq.tui.cli", "chunkq.tui.http", "chunkq.tui.humanize",
                                    "chunkq.tui.web", "chunkq.tui.web.server"])
def test_headless_front_ends_load_no_textual(module: str, python_env: dict[str, str]) -> None:
    loaded = _loaded_after(f"import {module}", python_env)
    assert not {m for m in loaded if m.split(".")[0] == "textual" or m.startswith("chunkq.tui.dashboard")}


def test_every_package_folder_is_installed() -> None:
    """pyproject.toml lists the packages by hand (the folders map to chunkq.*): none may be forgotten."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "chunkq." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("core", "tui") for init in (ROOT / top).rglob("__init__.py")
    }
    assert listed == found


@pytest.mark.slow
def test_no_sql_outside_core() -> None:
    """tui talks to core's API only: no database driver or SQL text anywhere under tui/."""
    sql = re.compile(r"\b(SELECT\s+.+\s+FROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b", re.I | re.S)
    offenders = []
    for path in sorted((ROOT / "tui").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in ("sqlalchemy", "sqlite3", "aiosqlite", "asyncpg") or "schema" in n.split("."):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {n}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and sql.search(node.value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} has SQL text")
    assert offenders == []


@pytest.mark.slow
def test_core_never_imports_tui_statically() -> None:
    for path in sorted((ROOT / "core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert not _is_tui(node.module), f"{path} imports {node.module}"
                assert not any(_is_tui(f"{node.module}.{a.name}") for a in node.names), path
            if isinstance(node, ast.Import):
                assert not any(_is_tui(a.name) for a in node.names), path


def _is_tui(module: str) -> bool:
    return module.split(".")[0] == "tui" or module.startswith("chunkq.tui")


def test_front_ends_use_only_what_core_exports() -> None:
    """tui uses ``chunkq.core``'s API: the names in its ``__all__``, never a module inside it.

    Import-linter's contract catches an import of a module inside core; this also catches a
    name core happens to hold but does not export (``from chunkq.core import X``, ``core.X``),
    which would break when core's insides move, and says where.
    """
    import chunkq.core

    exported = set(chunkq.core.__all__)
    offenders = []
    for path in sorted((ROOT / "tui").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = str(path.relative_to(ROOT))
        aliases = set()  # local names of the chunkq.core module itself
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "chunkq.core":
                    offenders += [f"{where}:{node.lineno} imports {a.name}" for a in node.names
                                  if a.name not in exported]
                elif node.module.startswith("chunkq.core."):
                    offenders.append(f"{where}:{node.lineno} imports from {node.module}")
                elif node.module == "chunkq":
                    aliases |= {a.asname or a.name for a in node.names if a.name == "core"}
            elif isinstance(node, ast.Import):
                offenders += [f"{where}:{node.lineno} imports {a.name}" for a in node.names
                              if a.name.startswith("chunkq.core")]
        offenders += [f"{where}:{node.lineno} uses core.{node.attr}" for node in ast.walk(tree)
                      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                      and node.value.id in aliases and node.attr not in exported]
    assert offenders == []


#: imports in core that close a cycle on purpose, (importer, imported) -> why; each such import line also
#: carries a comment saying why. Empty: core's import graph is a hierarchy (issue 30).
ALLOWED_CYCLE_IMPORTS: dict[tuple[str, str], str] = {}


def _core_imports() -> dict[str, dict[str, int]]:
    """Each core module's imports of other core modules, with a line number: every import counts, at the
    top, under ``if TYPE_CHECKING:`` or inside a function (a lazy import only hides a cycle)."""
    files = {mod: ROOT.joinpath(*mod.split(".")[1:]).with_suffix(".py") for mod in CORE_MODULES}
    files.update({mod: ROOT.joinpath(*mod.split(".")[1:], "__init__.py") for mod in CORE_MODULES
                  if not files[mod].exists()})
    graph: dict[str, dict[str, int]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges = graph[mod] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                if target in files and target != mod:
                    edges.setdefault(target, node.lineno)
    return graph


def _cycle(graph: dict[str, dict[str, int]]) -> list[str]:
    """One import cycle (its modules in order, the first again at the end), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(mod: str) -> list[str]:
        state[mod] = 1
        path.append(mod)
        for nxt in sorted(graph[mod]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[mod] = 2
        path.pop()
        return []

    for mod in sorted(graph):
        if mod not in state and (found := visit(mod)):
            return found
    return []


def test_core_import_graph_has_no_cycle() -> None:
    """No two core modules need each other, not even for a type: the lower one states what it needs
    (a Protocol) or takes a collaborator. A cycle kept on purpose is listed in ALLOWED_CYCLE_IMPORTS."""
    graph = _core_imports()
    assert len(graph) > 40 and graph["chunkq.core.queue"], "the scan found core's modules and their imports"
    for (src, dst), why in ALLOWED_CYCLE_IMPORTS.items():
        assert why and dst in graph.get(src, {}), f"stale entry {src} -> {dst}: remove it"
        line = ROOT.joinpath(*src.split(".")[1:]).with_suffix(".py").read_text().splitlines()[graph[src][dst] - 1]
        assert "#" in line, f"{src}:{graph[src][dst]} imports {dst} in a cycle: say why in a comment there"
        del graph[src][dst]
    cycle = _cycle(graph)
    steps = [f"{a.removeprefix('chunkq.core.')} -> {b.removeprefix('chunkq.core.')} (line {graph[a][b]})"
             for a, b in itertools.pairwise(cycle)]
    assert cycle == [], "import cycle in core: " + ", ".join(steps)
