"""The public surface is written down: ``__all__`` in every package and core module.

A package's ``__all__`` names the modules the rest of the project imports (or the names it
re-exports); a core module's ``__all__`` names everything it offers, and whatever it
keeps to itself starts with ``_``. No module reaches for another module's ``_`` names.
"""

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import homecare

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [
    "homecare", "cli", "ingest", "detectors", "escalation", "dashboards", "device_sim", "certify",
    "evaluation", "devices", "privacy", "bench", "harness", "broker", "care",
]  # fmt: skip
CORE = sorted(m.name for m in pkgutil.iter_modules(homecare.__path__) if m.name != "__main__")
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return list(ast.literal_eval(node.value))
    return None


def _is_type_var(value: ast.expr) -> bool:
    return isinstance(value, ast.Call) and getattr(value.func, "id", None) == "TypeVar"


def _defined(tree: ast.Module) -> set[str]:
    """Names a module defines at top level (imports and type variables left out)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign) and not _is_type_var(node.value):
            for target in node.targets:
                elts = target.elts if isinstance(target, ast.Tuple) else [target]
                names.update(e.id for e in elts if isinstance(e, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_declares_what_it_offers(package):
    module = importlib.import_module(package)
    assert hasattr(module, "__all__"), f"{package}/__init__.py has no __all__"
    for name in module.__all__:
        if not hasattr(module, name):
            importlib.import_module(f"{package}.{name}")  # a public module of the package


@pytest.mark.parametrize("name", CORE)
def test_every_core_module_lists_its_public_names_and_underscores_the_rest(name):
    tree = _tree(ROOT / "homecare" / f"{name}.py")
    listed = _declared_all(tree)
    assert listed is not None, f"homecare/{name}.py has no __all__"
    module = importlib.import_module(f"homecare.{name}")
    assert [n for n in listed if not hasattr(module, n)] == []
    public = {n for n in _defined(tree) if not n.startswith("_") and n != "log"}
    assert sorted(public - set(listed)) == [], "list these in __all__, or start them with _"


def test_no_module_imports_another_modules_internals():
    leaks = []
    for path in SOURCES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                leaks += [
                    f"{path.relative_to(ROOT)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert leaks == []
