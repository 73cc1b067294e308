"""The package's import graph, read from the source with ``ast`` (nothing is imported).

Rules:

* no library module (anything outside ``cevit.cli`` and ``cevit.api``) imports ``cevit.cli`` or ``cevit.api``:
  the front ends depend on the library, never the reverse;
* ``cevit.training`` and ``cevit.evaluation`` do not import each other: what both need lives in a neutral
  module (``cevit.metrics`` for the metric functions, ``cevit.data`` for face indexes and saved crops,
  ``cevit.preprocess`` for the contract);
* the data layer ``cevit.data`` imports none of its consumers (training, evaluation, inference).

Every import counts: module level and inside functions (lazy imports), absolute and relative, and the literal
module names given to ``importlib.import_module``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cevit"
FRONT_ENDS = ("cevit.cli", "cevit.api")


@dataclass(frozen=True, kw_only=True)
class Edge:
    importer: str  #: module name
    imported: str  #: module name (the longest known module the import names)
    line: int

    def __str__(self) -> str:
        path = module_path(self.importer).relative_to(SRC.parent)
        return f"{path}:{self.line}: {self.importer} imports {self.imported}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def module_path(name: str) -> Path:
    return modules()[name]


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _resolve(name: str) -> str | None:
    """The longest known module that ``name`` (a module or ``module.attribute``) starts with; None if not cevit."""
    if not within(name, "cevit"):
        return None
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules():
            return candidate
    return None


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = module_path(importer).name == "__init__.py"
    base = importer.split(".")
    base = base if is_package else base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(importer: str) -> Iterator[Edge]:
    tree = ast.parse(module_path(importer).read_text(encoding="utf-8"), filename=str(module_path(importer)))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(importer, node)
            # ``from cevit import cli`` imports the module cevit.cli; ``from cevit.x import f`` imports cevit.x
            names = [base, *(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if called in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names = [arg.value]
        targets = {t for t in map(_resolve, names) if t is not None and t != importer}
        for target in sorted(targets):
            yield Edge(importer=importer, imported=target, line=getattr(node, "lineno", 0))


@cache
def graph() -> tuple[Edge, ...]:
    return tuple(edge for name in modules() for edge in imports_of(name))


def violations(
    importers: str | tuple[str, ...], imported: str | tuple[str, ...], *, exclude: tuple[str, ...] = ()
) -> list[str]:
    def match(name: str, packages: str | tuple[str, ...]) -> bool:
        return any(within(name, p) for p in ((packages,) if isinstance(packages, str) else packages))

    return sorted(
        str(e)
        for e in graph()
        if match(e.importer, importers) and not match(e.importer, exclude) and match(e.imported, imported)
    )


# ----------------------------------------------------------------------------------------------------------


def test_the_parser_sees_the_imports_that_exist() -> None:
    """Guards the checks below against passing vacuously (e.g. after a path change)."""
    assert {"cevit.training.trainer", "cevit.evaluation.metrics", "cevit.cli.main", "cevit.metrics"} <= set(modules())
    edges = {(e.importer, e.imported) for e in graph()}
    assert ("cevit.training.trainer", "cevit.metrics") in edges  # module level
    assert ("cevit.evaluation.metrics", "cevit.metrics") in edges
    assert ("cevit.training.trainer", "cevit.checkpoint") in edges  # lazy, inside a method
    assert any(imp == "cevit.cli.main" for imp, _ in edges)
    assert any(within(imported, "cevit.api") for imp, imported in edges if within(imp, "cevit.cli"))  # cevit serve


def test_library_modules_do_not_import_the_cli_or_the_api() -> None:
    bad = violations("cevit", FRONT_ENDS, exclude=FRONT_ENDS)
    assert not bad, "library modules must not depend on the front ends:\n" + "\n".join(bad)


def test_training_does_not_import_evaluation() -> None:
    bad = violations("cevit.training", "cevit.evaluation")
    assert not bad, "training must not import evaluation (shared code goes to a neutral module):\n" + "\n".join(bad)


def test_evaluation_does_not_import_training() -> None:
    bad = violations("cevit.evaluation", "cevit.training")
    assert not bad, "evaluation must not import training (shared code goes to a neutral module):\n" + "\n".join(bad)


@pytest.mark.parametrize("upper", ["cevit.training", "cevit.evaluation", "cevit.inference"])
def test_the_data_layer_imports_no_consumer(upper: str) -> None:
    bad = violations("cevit.data", upper)
    assert not bad, f"cevit.data is shared by its consumers and must not import {upper}:\n" + "\n".join(bad)


def test_training_and_evaluation_import_together_in_a_fresh_interpreter() -> None:
    code = "import cevit.training, cevit.evaluation, cevit.metrics, cevit.training.trainer, cevit.evaluation.runner"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
