"""Mutation testing of the guards, the request guard, the registry and teardown: not part of CI (minutes).

    python -m benchmarks.mutation                     # every target, its quick tests, a report
    python -m benchmarks.mutation --target registry --budget 120
    python -m benchmarks.mutation --patch local_server.request_guard 'found != elements' \\
        'found < elements' -- tests/test_mutants.py -k 'not through_the_server'   # one hand-made mutant

A small runner of its own rather than mutmut 3.8 (not tried here): mutmut writes its
mutants into a copy of the tree and runs the tests from there; this checkout is shared by
several people on two cores, so this runner writes nothing at all. It changes one site at
a time (a comparison, a boolean operator, a ``not``, an integer or boolean constant, an
arithmetic or bit operator) in the named functions only; each mutant is compiled into a
forked copy of this process through an import hook, and that copy runs the target's
quick tests (``pytest -x``) under a timeout. A mutant the tests
pass on survives; docs/mutation-testing.md explains or kills each survivor.
"""
from __future__ import annotations

import argparse
import ast
import copy
import importlib.abc
import importlib.util
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("builders", "clients", "defect_classifier", "defect_data", "local_server", "model_versions",
                    "products", "sagemaker_deploy", "tests")


@dataclass(frozen=True)
class Target:
    module: str
    functions: tuple[str, ...]  # empty: every function of the module
    tests: tuple[str, ...]  # pytest arguments: quick tests only, no server


TARGETS = {
    "image_headers": Target("builders.runners.image_headers", (), (
        "tests/test_mutants.py::test_a_20000x20000_jpeg_reads_at_full_size_and_is_refused_by_the_16_7_mp_guard",
        "tests/test_mutants.py::test_a_tall_16x2056_image_is_refused_by_lamas_side_limit",
        "tests/test_mutants.py::test_an_image_of_exactly_the_limit_is_accepted_and_one_pixel_more_is_not",
        "tests/test_mutants.py::test_a_bmp_declaring_no_positive_width_is_refused_as_corrupt",
        "tests/test_mutants.py::test_formats_the_guard_cannot_measure_are_named_or_refused_as_no_image",
        "tests/test_mutants.py::test_limits_read_back_from_the_config_parameters_are_the_guards",
        "tests/test_fuzz.py::test_header_reader_measures_what_it_reads",
        "tests/test_fuzz.py::test_header_reader_refuses_any_bytes_clearly",
        "tests/test_image_limits.py::test_header_sizes_equal_pillows_for_the_formats_taken")),
    "request_guard": Target("local_server.request_guard", (), (
        "tests/test_mutants.py::test_data_with_more_elements_than_the_declared_shape_is_refused",
        "tests/test_mutants.py::test_a_shape_written_in_exactly_200_characters_is_shown_whole_and_a_longer_one_cut",
        "tests/test_mutants.py::test_a_shape_of_exactly_int64_max_elements_is_counted_and_one_more_is_not",
        "tests/test_mutants.py::test_bytes_of_exactly_four_bytes_per_element_pass",
        "tests/test_fuzz.py::test_request_guard_refuses_any_body_clearly",
        "tests/test_fuzz.py::test_request_guard_passes_every_well_formed_request",
        "tests/test_request_guard.py", "-k", "not route")),  # the route tests start a server
    "registry": Target("model_versions.local", ("approve", "validation_f1"), (
        "tests/test_mutants.py::test_approve_refuses_a_candidate_that_only_ties_the_served_validation_f1",)),
    "teardown": Target("sagemaker_deploy.deploy", ("owned", "teardown", "delete_objects", "remove_alarms"), (
        "tests/test_teardown_mutants.py",)),
}

SWAPPED_OPERATORS = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.And: ast.Or, ast.Or: ast.And,
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult, ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd, ast.LShift: ast.RShift, ast.RShift: ast.LShift,
}


@dataclass(frozen=True)
class Mutant:
    number: int
    line: int
    change: str


class Mutator(ast.NodeTransformer):
    """Numbers every mutation site in the chosen functions; applies only site ``chosen`` (-1: none)."""

    def __init__(self, functions: tuple[str, ...], chosen: int = -1):
        self.functions, self.chosen = functions, chosen
        self.sites: list[Mutant] = []
        self._depth = 0  # > 0 inside a chosen function

    def _site(self, node: ast.AST, change: str) -> bool:
        """Record a site; True when it is the one to apply."""
        self.sites.append(Mutant(len(self.sites), node.lineno, change))
        return self.sites[-1].number == self.chosen

    def visit_FunctionDef(self, node):
        chosen = not self.functions or node.name in self.functions
        self._depth += chosen
        node.body = [self.visit(statement) for statement in node.body]  # not the decorators or defaults
        self._depth -= chosen
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Compare(self, node):
        self.generic_visit(node)
        for index, op in enumerate(node.ops):
            if self._depth and type(op) in SWAPPED_OPERATORS:
                swapped = SWAPPED_OPERATORS[type(op)]
                if self._site(node, f"{type(op).__name__} -> {swapped.__name__}"):
                    node.ops[index] = swapped()
        return node

    def _swap_operator(self, node):
        self.generic_visit(node)
        if self._depth and type(node.op) in SWAPPED_OPERATORS:
            swapped = SWAPPED_OPERATORS[type(node.op)]
            if self._site(node, f"{type(node.op).__name__} -> {swapped.__name__}"):
                node.op = swapped()
        return node

    visit_BoolOp = visit_BinOp = _swap_operator

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if self._depth and isinstance(node.op, ast.Not) and self._site(node, "drop 'not'"):
            return node.operand
        return node

    def visit_Constant(self, node):
        if not self._depth:
            return node
        if isinstance(node.value, bool):
            if self._site(node, f"{node.value} -> {not node.value}"):
                return ast.copy_location(ast.Constant(not node.value), node)
        elif isinstance(node.value, int) and self._site(node, f"{node.value} -> {node.value + 1}"):
            return ast.copy_location(ast.Constant(node.value + 1), node)
        return node


def module_path(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def mutants_of(target: Target) -> tuple[ast.Module, list[Mutant]]:
    tree = ast.parse(module_path(target.module).read_text())
    finder = Mutator(target.functions)
    finder.visit(copy.deepcopy(tree))
    return tree, finder.sites


def mutated_source(tree: ast.Module, target: Target, number: int) -> str:
    return ast.unparse(Mutator(target.functions, number).visit(copy.deepcopy(tree)))


class MutantLoader(importlib.abc.SourceLoader):
    """Loads ``module`` from the mutated source, under the original file name; no bytecode cache."""

    def __init__(self, path: Path, source: str):
        self.path, self.source = str(path), source

    def get_filename(self, fullname):
        return self.path

    def get_data(self, path):
        return self.source.encode()


class MutantFinder(importlib.abc.MetaPathFinder):
    def __init__(self, module: str, source: str):
        self.module, self.loader = module, MutantLoader(module_path(module), source)

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.module:
            return None
        return importlib.util.spec_from_file_location(fullname, self.loader.path, loader=self.loader)


def run_tests(module: str, source: str | None, tests: tuple[str, ...], timeout_s: float) -> str:
    """'passed', 'failed' or 'timeout': the tests in a forked child that imports ``module`` from ``source``."""
    child = os.fork()
    if child == 0:
        _child(module, source, tests)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            return "passed" if os.waitstatus_to_exitcode(status) == 0 else "failed"
        time.sleep(0.05)
    os.killpg(child, signal.SIGKILL)  # the child and any server it started
    os.waitpid(child, 0)
    return "timeout"


def _child(module: str, source: str | None, tests: tuple[str, ...]) -> None:
    os.setpgid(0, 0)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1), os.dup2(quiet, 2)
    for name in [name for name in sys.modules if name.split(".")[0] in PROJECT_PACKAGES]:
        del sys.modules[name]  # re-imported below, through the mutant
    if source is not None:
        sys.meta_path.insert(0, MutantFinder(module, source))
    import pytest

    code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *tests])
    os._exit(int(code))


@dataclass
class Result:
    target: str
    survivors: list[Mutant] = field(default_factory=list)
    killed: int = 0
    timeouts: int = 0
    untried: int = 0
    seconds: float = 0.0


def mutate(name: str, target: Target, timeout_s: float, budget_s: float, only: set[int] | None = None) -> Result:
    tree, mutants = mutants_of(target)
    mutants = [mutant for mutant in mutants if only is None or mutant.number in only]
    result = Result(name)
    started = time.monotonic()
    if run_tests(target.module, None, target.tests, timeout_s * 3) != "passed":
        raise SystemExit(f"{name}: the tests fail on the unmutated code; fix them first")
    for mutant in mutants:
        if time.monotonic() - started > budget_s:
            result.untried = len(mutants) - mutants.index(mutant)
            break
        outcome = run_tests(target.module, mutated_source(tree, target, mutant.number), target.tests, timeout_s)
        if outcome == "passed":
            result.survivors.append(mutant)
        result.killed += outcome == "failed"
        result.timeouts += outcome == "timeout"
        print(f"  {name} #{mutant.number} line {mutant.line} {mutant.change}: {outcome}", flush=True)
    result.seconds = time.monotonic() - started
    return result


def report(results: list[Result]) -> str:
    lines = ["| target | mutants | killed | timed out (killed) | survived | untried | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        total = r.killed + r.timeouts + len(r.survivors) + r.untried
        lines.append(f"| {r.target} | {total} | {r.killed} | {r.timeouts} | {len(r.survivors)} | {r.untried} | "
                     f"{r.seconds:.0f} |")
    for r in results:
        lines += [f"- survivor {r.target} #{m.number}, line {m.line}: {m.change}" for m in r.survivors]
    return "\n".join(lines)


def patch(module: str, old: str, new: str, tests: list[str], timeout_s: float) -> int:
    """One hand-made mutant: ``old`` replaced by ``new`` (exactly once) in the module's source."""
    source = module_path(module).read_text()
    if source.count(old) != 1:
        raise SystemExit(f"{old!r} occurs {source.count(old)} times in {module}, not once")
    outcome = run_tests(module, source.replace(old, new), tuple(tests), timeout_s)
    print(f"{module}: {old!r} -> {new!r}: the tests {outcome}" + (" (the mutant SURVIVES)" if outcome == "passed"
                                                                    else " (killed)"))
    return 0 if outcome != "passed" else 1


def warm_up() -> None:
    """Import the heavy libraries once, before forking, so that each mutant's run starts fast."""
    for name in ("numpy", "PIL.Image", "pytest", "hypothesis", "requests", "torch", "onnx", "google.protobuf"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=sorted(TARGETS), action="append", help="default: every target")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per mutant's test run")
    parser.add_argument("--budget", type=float, default=900, help="seconds per target; the rest stays untried")
    parser.add_argument("--only", type=lambda text: {int(n) for n in text.split(",")},
                        help="with one --target: only these mutant numbers (e.g. 24,31), to recheck survivors")
    parser.add_argument("--patch", nargs=3, metavar=("MODULE", "OLD", "NEW"),
                        help="run the pytest arguments after -- against one hand-made mutant of MODULE")
    parser.add_argument("tests", nargs="*", help="with --patch: pytest arguments, after --")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    warm_up()
    if args.patch:
        if not args.tests:
            parser.error("--patch needs the tests to run, after --")
        return patch(*args.patch, args.tests, args.timeout)
    if args.only and len(args.target or []) != 1:
        parser.error("--only needs exactly one --target")
    results = [mutate(name, TARGETS[name], args.timeout, args.budget, args.only)
               for name in args.target or sorted(TARGETS)]
    print(f"\nmutation run {time.strftime('%Y-%m-%d')}\n" + report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
