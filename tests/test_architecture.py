"""The house's rules, checked on the code: layers import only downward, no cycles, no private
names across modules, no import hidden in a function, modules and functions of a readable size.

The layers are written down in docs/architecture.md; :data:`LAYERS` is the same list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fer_mm"

# lowest first; a module belongs to the first layer with a prefix of its name (longest prefix wins)
LAYERS = (
    ("ground", ("fer_mm", "fer_mm.vocab", "fer_mm.files", "fer_mm.environment")),
    ("data: sources", ("fer_mm.data", "fer_mm.data.sources", "fer_mm.data.parallel")),
    ("data: media", ("fer_mm.data.media",)),
    ("data: twins", ("fer_mm.data.twins",)),
    ("data: cache and batches", ("fer_mm.data.cache", "fer_mm.data.preprocessing", "fer_mm.data.images", "fer_mm.data.clips",
                                 "fer_mm.data.protocols", "fer_mm.data.targets")),
    ("data: datamodule", ("fer_mm.data.datamodule", "fer_mm.data.mixed")),
    ("models", ("fer_mm.models",)),
    ("system and records", ("fer_mm.system", "fer_mm.evaluation", "fer_mm.runs", "fer_mm.loggers", "fer_mm.stacked",
                            "fer_mm.losses", "fer_mm.balancing")),
    ("entry points", ("fer_mm.train", "fer_mm.report", "fer_mm.preprocess", "fer_mm.synth", "fer_mm.doctor")),
    ("inference and benchmarks", ("fer_mm.inference", "fer_mm.bench", "fer_mm.predict", "fer_mm.export")),
)
# imports of fer_mm inside a function, kept on purpose (module -> why)
LAZY_ON_PURPOSE = {
    "fer_mm.doctor": "each check imports what it checks, so a broken dependency is reported, not a crash",
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# functions allowed to be longer (qualified name -> why)
LONG_FUNCTIONS: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def _layer(module: str) -> int:
    best, level = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), i
    assert level is not None, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return level


def _imports(module: str, tree: ast.Module):
    """(imported fer_mm module, names taken from it, line, inside a function?) for every import."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    inner = {id(n) for f in functions for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fer_mm"):
                    yield alias.name, [], node.lineno, id(node) in inner
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("fer_mm"):
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in MODULES:  # ``from fer_mm.data import cache``: the module itself
                    yield target, [], node.lineno, id(node) in inner
                else:
                    yield base, [alias.name], node.lineno, id(node) in inner


EDGES = [(m, *imp) for m, tree in TREES.items() for imp in _imports(m, tree)]


def test_every_module_is_in_a_layer():
    for module in MODULES:
        _layer(module)


def test_layers_import_only_downward():
    upward = sorted({f"{m}:{line} imports {t} ({LAYERS[_layer(t)][0]} above {LAYERS[_layer(m)][0]})"
              for m, t, _, line, _ in EDGES if _layer(t) > _layer(m)})
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, t, *_ in EDGES:
        if t != m and t in graph:
            graph[m].add(t)
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "\n".join(cycles)


def test_no_private_names_across_modules():
    taken = [f"{m}:{line} imports {name} from {t}" for m, t, names, line, _ in EDGES
             for name in names if name.startswith("_") and t != m]
    # ``module._name`` on an imported fer_mm module
    for module, tree in TREES.items():
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fer_mm"):
                for a in node.names:
                    if f"{node.module}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("fer_mm") and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                taken.append(f"{module}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    assert not taken, "\n".join(taken)


def test_no_fer_mm_import_hidden_in_a_function():
    hidden = sorted({f"{m}:{line} imports {t} inside a function" for m, t, _, line, inner in EDGES
              if inner and m not in LAZY_ON_PURPOSE})
    assert not hidden, "\n".join(hidden)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_are_of_a_readable_size(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines: split it by what its parts are"
    long = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}.{child.name}"
                n = child.end_lineno - child.lineno + 1
                if not isinstance(child, ast.ClassDef) and n > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS:
                    long.append(f"{name}: {n} lines")
                walk(child, name)

    walk(TREES[module], module)
    assert not long, "\n".join(long)
