"""The layout read from the imports: no import circle, and the sample renderer kept to the sample's data.

Every import counts, at module level or inside a function: an import a function hides still ties
the two modules together.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.quick

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("builders", "clients", "defect_classifier", "defect_data", "local_server", "products",
            "sagemaker_deploy", "benchmarks", "model_versions", "demo")
SAMPLE_RENDERER = "defect_data.pcb"
# Outside defect_data, only these render the sample board's data: its labels (the demo) and its boards (the
# two benchmarks' requests). No stage does: builders, training, serving and deploy read the product's definition.
RENDERS_THE_SAMPLE = {"demo.__main__", "benchmarks.gpu_smoke", "benchmarks.multi_model"}


def module_name(path: Path) -> str:
    """``builders/repository.py`` -> ``builders.repository``; a package's ``__init__.py`` is the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    """Every module of the project's packages: name -> file."""
    return {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def package_of(name: str, path: Path) -> str:
    """The package a module's relative imports start from."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def named_modules(node: ast.Import | ast.ImportFrom, name: str, path: Path) -> list[str]:
    """What one import statement names: modules, and for ``from X import Y`` both X and X.Y."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = package_of(name, path).split(".")
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules one module imports, anywhere in its file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    named = {target for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for target in named_modules(node, name, path)}
    return {target for target in named if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None: a depth-first walk that meets a module on its path."""
    finished: set[str] = set()
    path: list[str] = []

    def walk(module: str) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in finished:
            return None
        path.append(module)
        for imported in sorted(graph[module]):
            cycle = walk(imported)
            if cycle:
                return cycle
        path.pop()
        finished.add(module)
        return None

    for module in sorted(graph):
        cycle = walk(module)
        if cycle:
            return cycle
    return None


def test_find_cycle_names_the_circle_it_finds():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_relative_imports_resolve_to_the_modules_they_name():
    package = ROOT / "builders" / "__init__.py"
    module = ROOT / "builders" / "repository.py"
    relative = ast.parse("from .config import parse\nfrom . import dali").body
    assert named_modules(relative[0], "builders.repository", module) == ["builders.config", "builders.config.parse"]
    assert named_modules(relative[1], "builders", package) == ["builders", "builders.dali"]


def test_the_graph_reads_every_package():
    graph = import_graph()
    assert {name.partition(".")[0] for name in graph} == set(PACKAGES)


def test_no_module_imports_itself_back_through_others():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_only_the_sample_boards_data_comes_from_its_renderer():
    importers = {name for name, imported in import_graph().items()
                 if SAMPLE_RENDERER in imported and not name.startswith("defect_data.")}
    strays = sorted(importers - RENDERS_THE_SAMPLE)
    assert not strays, (f"{', '.join(strays)} imports {SAMPLE_RENDERER} (the sample renderer); a stage reads "
                        "the product's definition (products/) instead")
