"""Layout checks: module size, module docstrings, no MLflow in ``measure/``, no import circles.

Static (AST) checks plus a few subprocesses; no MLflow server. Each check is a function of a root
folder that holds an ``mlflow_green/`` package, so that the tests below run it both on the real
package and on a small tree in ``tmp_path`` with a planted violation (a check that cannot fail
checks nothing).
"""

from __future__ import annotations

import ast
import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "mlflow_green"
MEASURE = f"{PACKAGE}.measure"
#: The issue's limit on the length of a module.
MAX_LINES = 400
#: Top-level modules that ``measure/`` may import; they must not import MLflow themselves.
MEASURE_MAY_IMPORT = (f"{PACKAGE}._warnings", f"{PACKAGE}._version")
#: Modules exempt from the docstring rule (a generated-style one-liner).
NO_DOCSTRING_NEEDED = (f"{PACKAGE}._version",)


# --- reading the package ------------------------------------------------------------------------


@dataclass(frozen=True)
class Module:
    """One ``.py`` file of the package."""

    name: str  # dotted module name; a package's ``__init__.py`` carries the package's name
    path: Path
    is_package: bool

    def tree(self) -> ast.Module:
        return ast.parse(self.path.read_text(encoding="utf-8"), filename=str(self.path))


@dataclass(frozen=True)
class Import:
    """One import in a module, resolved to the dotted name it asks for."""

    target: str  # for ``from x import y``: ``x.y`` when that is a module of the package, else ``x``
    line: int


def package_modules(root: Path, package: str = PACKAGE) -> dict[str, Module]:
    """Every module under ``root/package``, by dotted name."""
    modules: dict[str, Module] = {}
    for path in sorted((root / package).rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(root).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = Module(name, path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments, to resolve ``import_module(NAME)``."""
    constants: dict[str, str] = {}
    for node in tree.body:
        value = getattr(node, "value", None)
        if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name):
                constants[target.id] = value.value
    return constants


def _dynamic_import_name(call: ast.Call, constants: dict[str, str]) -> str | None:
    """The module named by ``importlib.import_module(...)`` / ``__import__(...)``, if constant."""
    func = call.func
    named = (isinstance(func, ast.Name) and func.id in ("__import__", "import_module")) or (
        isinstance(func, ast.Attribute) and func.attr == "import_module"
    )
    if not named or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.Name):
        return constants.get(arg.id)
    return None


def module_imports(module: Module, known: set[str], *, skip_type_checking: bool) -> list[Import]:
    """Every import in ``module``, anywhere in the file (functions included).

    ``skip_type_checking`` leaves out the body of ``if TYPE_CHECKING:`` blocks (never executed);
    ``known`` (the package's module names) decides whether ``from x import y`` imports module
    ``x.y`` or a name of ``x``. Calls of ``import_module``/``__import__`` with a constant name
    count as imports too.
    """
    tree = module.tree()
    constants = _string_constants(tree)
    own_package = module.name if module.is_package else module.name.rpartition(".")[0]
    found: list[Import] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno) for alias in node.names)
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = own_package.split(".")
                anchor = ".".join(parts[: len(parts) - (node.level - 1)])
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(sub if sub in known else base, node.lineno))
            continue
        if isinstance(node, ast.Call):
            name = _dynamic_import_name(node, constants)
            if name is not None and not name.startswith("."):
                found.append(Import(name, node.lineno))
        if skip_type_checking and isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    # ``from x import a, b`` names one module once.
    return sorted(set(found), key=lambda imp: (imp.line, imp.target))


def _is_within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# --- the checks: each returns its violations, empty when the layout is right ------------------


def oversized_modules(root: Path, limit: int = MAX_LINES) -> list[str]:
    """``path: N lines`` for every module of the package longer than ``limit`` lines."""
    too_long = []
    for module in package_modules(root).values():
        count = len(module.path.read_text(encoding="utf-8").splitlines())
        if count > limit:
            too_long.append(f"{module.path.relative_to(root)}: {count} lines")
    return too_long


def modules_without_docstring(root: Path) -> list[str]:
    """Modules that do not start with a docstring whose first line says something."""
    missing = []
    for module in package_modules(root).values():
        if module.name in NO_DOCSTRING_NEEDED:
            continue
        body = module.tree().body
        first = body[0] if body else None
        is_doc = (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        )
        if not is_doc:
            missing.append(f"{module.path.relative_to(root)}: no module docstring")
        elif not first.value.value.split("\n", 1)[0].strip():
            missing.append(f"{module.path.relative_to(root)}: the docstring's first line is empty")
    return missing


def measure_import_violations(root: Path) -> list[str]:
    """Imports in ``measure/`` (and the top-level modules it may use) that could load MLflow.

    Every import counts, ``TYPE_CHECKING`` blocks and function bodies included: ``mlflow`` and
    ``mlflow.*`` are refused, and so is any module of the package outside ``measure/`` and
    :data:`MEASURE_MAY_IMPORT`, since it could import MLflow in turn.
    """
    modules = package_modules(root)
    known = set(modules)
    checked = [m for m in modules.values() if _is_within(m.name, MEASURE)]
    checked += [modules[name] for name in MEASURE_MAY_IMPORT if name in modules]
    violations = []
    for module in checked:
        for imp in module_imports(module, known, skip_type_checking=False):
            where = f"{module.path.relative_to(root)}:{imp.line}: imports {imp.target}"
            if _is_within(imp.target, "mlflow"):
                violations.append(f"{where} (MLflow)")
            elif (
                _is_within(imp.target, PACKAGE)
                and not _is_within(imp.target, MEASURE)
                and imp.target not in MEASURE_MAY_IMPORT
            ):
                violations.append(f"{where} (outside {MEASURE}: it could import MLflow)")
    return violations


_IMPORT_ALL = """
import importlib, json, sys
names = json.loads(sys.argv[1])
errors = {}
for name in names:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        errors[name] = repr(exc)
print(json.dumps({
    "file": sys.modules["mlflow_green"].__file__,
    "errors": errors,
    "mlflow": sorted(m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")),
}))
"""


def measure_loads_mlflow(root: Path) -> list[str]:
    """Import every ``measure/`` module of ``root`` in a clean interpreter; what went wrong.

    Wrong: a module that fails to import (it is then not checked), another copy of the package
    imported than the one under ``root``, or any ``mlflow``/``mlflow.*`` module loaded.
    """
    names = [name for name in package_modules(root) if _is_within(name, MEASURE)]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "PYTHONPATH": str(root),
    }
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, json.dumps(names)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        return [f"the import subprocess failed ({done.returncode}): {done.stderr.strip()}"]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    problems = [f"{name} does not import: {error}" for name, error in result["errors"].items()]
    imported = Path(result["file"] or "(a namespace package)").resolve()
    if not imported.is_relative_to((root / PACKAGE).resolve()):
        problems.append(f"imported {imported}, not the package under {root}")
    if result["mlflow"]:
        problems.append(f"importing {MEASURE} loaded MLflow: {', '.join(result['mlflow'])}")
    return problems


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    """The package's import graph: importer -> modules whose import it runs.

    Module-level and function-level imports count, ``if TYPE_CHECKING:`` blocks do not. Importing
    ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` too: edges to those ancestors are added,
    except to the importer's own ancestors (already imported before the importer runs). Also
    returns, per edge, the first ``path:line`` that makes it.
    """
    modules = package_modules(root)
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    where: dict[tuple[str, str], str] = {}
    for module in modules.values():
        own_ancestors = {
            module.name.rsplit(".", n)[0] for n in range(1, module.name.count(".") + 1)
        }
        for imp in module_imports(module, known, skip_type_checking=True):
            if not _is_within(imp.target, PACKAGE):
                continue
            parts = imp.target.split(".")
            prefixes = [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
            prefixes = [p for p in prefixes if p in known]
            if not prefixes:
                continue
            target, ancestors = prefixes[-1], prefixes[:-1]
            targets = [target] + [a for a in ancestors if a not in own_ancestors]
            for name in targets:
                if name != module.name:
                    graph[module.name].add(name)
                    where.setdefault(
                        (module.name, name), f"{module.path.relative_to(root)}:{imp.line}"
                    )
    return graph, where


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (recursive: the graph is a few dozen modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _shortest_cycle(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """A shortest path ``start -> ... -> start`` inside one component (breadth first)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node] & within):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    return [start]


def import_cycles(root: Path) -> list[str]:
    """One line per import circle: its modules, and one concrete cycle with the importing lines."""
    graph, where = import_graph(root)
    cycles = []
    for component in _strongly_connected(graph):
        if len(component) < 2:
            continue
        path = _shortest_cycle(graph, component[0], set(component))
        steps = " -> ".join(f"{a} ({where[(a, b)]})" for a, b in itertools.pairwise(path))
        cycles.append(f"circle among {', '.join(component)}: {steps} -> {path[-1]}")
    return sorted(cycles)


# --- the real package ---------------------------------------------------------------------------


def test_no_module_over_the_line_limit() -> None:
    too_long = oversized_modules(REPO)
    assert not too_long, f"modules over {MAX_LINES} lines:\n" + "\n".join(too_long)


def test_every_module_starts_with_a_docstring() -> None:
    missing = modules_without_docstring(REPO)
    assert not missing, "modules without a useful first docstring line:\n" + "\n".join(missing)


def test_measure_imports_nothing_from_mlflow_statically() -> None:
    violations = measure_import_violations(REPO)
    assert not violations, "imports that could bring MLflow into measure/:\n" + "\n".join(
        violations
    )


def test_measure_loads_no_mlflow_when_imported() -> None:
    problems = measure_loads_mlflow(REPO)
    assert not problems, "\n".join(problems)


def test_no_import_circles() -> None:
    cycles = import_cycles(REPO)
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_public_api_script_runs_clean() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_public_api.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- each check on a tree with a planted violation ----------------------------------------------


def _plant(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path -> source) under ``root``; every package gets a docstring."""
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    folders = {f for p in root.rglob("*.py") for f in p.parents if f != root and root in f.parents}
    for folder in folders:
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text('"""A package."""\n', encoding="utf-8")
    return root


def test_line_limit_flags_a_long_module(tmp_path: Path) -> None:
    doc = '"""A module."""\n'
    _plant(
        tmp_path,
        {
            "mlflow_green/measure/long.py": doc + "x = 1\n" * MAX_LINES,
            "mlflow_green/measure/full.py": doc + "x = 1\n" * (MAX_LINES - 1),
        },
    )
    assert oversized_modules(tmp_path) == [f"mlflow_green/measure/long.py: {MAX_LINES + 1} lines"]


def test_docstring_check_flags_missing_and_empty_first_lines(tmp_path: Path) -> None:
    _plant(
        tmp_path,
        {
            "mlflow_green/_version.py": '__version__ = "0"\n',
            "mlflow_green/none.py": "import os\n",
            "mlflow_green/late.py": 'import os\n"""Not first."""\n',
            "mlflow_green/blank.py": '"""\nThe text starts on line two."""\n',
            "mlflow_green/empty/__init__.py": "",
            "mlflow_green/good.py": '#!/usr/bin/env python\n"""Owns good things.\n\nMore."""\n',
        },
    )
    assert sorted(modules_without_docstring(tmp_path)) == [
        "mlflow_green/blank.py: the docstring's first line is empty",
        "mlflow_green/empty/__init__.py: no module docstring",
        "mlflow_green/late.py: no module docstring",
        "mlflow_green/none.py: no module docstring",
    ]


def test_measure_static_check_finds_every_way_in(tmp_path: Path) -> None:
    _plant(
        tmp_path,
        {
            "mlflow_green/_warnings.py": '"""W."""\nfrom mlflow.utils import x\n',
            "mlflow_green/_version.py": '__version__ = "0"\n',
            "mlflow_green/runs/hooks.py": '"""H."""\nimport mlflow\n',
            "mlflow_green/measure/ok.py": '''\
                """Fine: siblings, the allowed top-level modules, look-alike names."""
                import mlflow_green.measure.meters
                from mlflow_green._warnings import warn
                from mlflow_green import _version
                from . import meters
                import mlflowish
            ''',
            "mlflow_green/measure/meters/bad.py": '''\
                """Every way in."""
                from typing import TYPE_CHECKING
                import importlib
                if TYPE_CHECKING:
                    from mlflow import MlflowClient
                NAME = "mlflow.tracking"
                def lazy():
                    import mlflow.tracking
                    from ...runs import hooks
                    from mlflow_green import runs
                    importlib.import_module(NAME)
                    __import__("mlflow")
            ''',
        },
    )
    assert measure_import_violations(tmp_path) == [
        "mlflow_green/measure/meters/bad.py:5: imports mlflow (MLflow)",
        "mlflow_green/measure/meters/bad.py:8: imports mlflow.tracking (MLflow)",
        "mlflow_green/measure/meters/bad.py:9: imports mlflow_green.runs.hooks"
        " (outside mlflow_green.measure: it could import MLflow)",
        "mlflow_green/measure/meters/bad.py:10: imports mlflow_green.runs"
        " (outside mlflow_green.measure: it could import MLflow)",
        "mlflow_green/measure/meters/bad.py:11: imports mlflow.tracking (MLflow)",
        "mlflow_green/measure/meters/bad.py:12: imports mlflow (MLflow)",
        "mlflow_green/_warnings.py:2: imports mlflow.utils (MLflow)",
    ]


def test_measure_dynamic_check_sees_mlflow_loaded(tmp_path: Path) -> None:
    # A stand-in ``mlflow`` package on PYTHONPATH: the check looks at module names only.
    files = {
        "mlflow/__init__.py": '"""Stand-in."""\n',
        "mlflow/tracking.py": '"""Stand-in."""\n',
        "mlflow_green/measure/clean.py": '"""Clean."""\n',
    }
    _plant(tmp_path, files)
    assert measure_loads_mlflow(tmp_path) == []
    _plant(tmp_path, {"mlflow_green/measure/sneaky.py": '"""S."""\nimport mlflow.tracking\n'})
    assert measure_loads_mlflow(tmp_path) == [
        "importing mlflow_green.measure loaded MLflow: mlflow, mlflow.tracking"
    ]
    _plant(tmp_path, {"mlflow_green/measure/broken.py": '"""B."""\nraise RuntimeError("no")\n'})
    assert measure_loads_mlflow(tmp_path)[0].startswith("mlflow_green.measure.broken does not")


def test_cycle_check_counts_lazy_relative_and_ancestor_imports(tmp_path: Path) -> None:
    _plant(
        tmp_path,
        {
            # a lazy (function-level) circle
            "mlflow_green/runs/hooks.py": '"""H."""\nfrom mlflow_green.runs import spool\n',
            "mlflow_green/runs/spool.py": '"""S."""\ndef f():\n    from .hooks import g\n',
            # a circle through a package __init__ that importing a submodule runs
            "mlflow_green/cli/__init__.py": '"""C."""\nimport mlflow_green.registry.rank\n',
            "mlflow_green/registry/rank.py": '"""R."""\nfrom mlflow_green.cli.rank import x\n',
            "mlflow_green/cli/rank.py": '"""CR."""\n',
            # no circle: the way back is only for type checkers, or to the importer's ancestor
            "mlflow_green/measure/a.py": '"""A."""\nfrom mlflow_green.measure import b\n',
            "mlflow_green/measure/b.py": '''\
                """B."""
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from mlflow_green.measure.a import A
                else:
                    import os
                from mlflow_green.measure.meters import base
            ''',
            "mlflow_green/measure/meters/base.py": '"""Base."""\n',
        },
    )
    assert import_cycles(tmp_path) == [
        "circle among mlflow_green.cli, mlflow_green.registry.rank: "
        "mlflow_green.cli (mlflow_green/cli/__init__.py:2) -> "
        "mlflow_green.registry.rank (mlflow_green/registry/rank.py:2) -> mlflow_green.cli",
        "circle among mlflow_green.runs.hooks, mlflow_green.runs.spool: "
        "mlflow_green.runs.hooks (mlflow_green/runs/hooks.py:2) -> "
        "mlflow_green.runs.spool (mlflow_green/runs/spool.py:3) -> mlflow_green.runs.hooks",
    ]


@pytest.mark.parametrize("bad", ["readme", "entry_point"])
def test_public_api_script_fails_on_a_missing_name(tmp_path: Path, bad: str) -> None:
    readme = "`mlflow_green.autolog`\n```python\nfrom mlflow_green import track, phase\n```\n"
    entry = "mlflow_green.cli:main"
    if bad == "readme":
        readme += "and `mlflow_green.no_such_name`.\n"
    else:
        entry = "mlflow_green.no_such_module:main"
    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    (tmp_path / "setup.cfg").write_text(
        f"[options.entry_points]\nconsole_scripts =\n    mlflow-green = {entry}\n", encoding="utf-8"
    )
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_public_api.py"), "--root", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    failed = done.stdout.split("FAILED", 1)[-1]
    assert ("no_such_name" in failed) == (bad == "readme"), done.stdout
    assert ("no_such_module" in failed) == (bad == "entry_point"), done.stdout
