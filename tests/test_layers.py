"""The package's imports point down only: no import cycle, no upward import; the science packages import
nothing distributed; only hpcinv.distributed imports Ray (launch/ and benchmarks/ included); inference
(predict, evaluate, refine) does not import training. Read from the source (every import, including
those inside functions)."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import ROOT

# lowest first; a package may import its own layer (without a cycle) and every layer below
LAYERS = [
    ["errors", "presets", "argv"],
    ["fileio", "environment", "threads", "folders"],
    ["config"],
    ["physics", "velocity", "nets", "store", "metrics", "doctor", "field"],  # science and data
    ["feed"],  # the training input path
    ["checkpoint"],  # the trained network as an artifact
    ["generate", "train", "predict", "evaluate", "refine"],  # each stage's own science: no Ray
    ["distributed"],  # the only package that imports Ray: session, shard pool, Ray Train adapter, cluster
    ["stages"],  # each stage's request and run(request, execution); the table of stages
    ["jobs"],  # the submitit job that runs a stage on SLURM
    ["cli"],
]
SCIENCE = ["physics", "velocity", "nets", "store", "metrics", "field", "feed", "checkpoint"]
DISTRIBUTED = ("ray", "submitit", "torch.distributed", "hpcinv.distributed", "hpcinv.jobs", "launch")


def _modules(top: str = "hpcinv") -> dict[str, Path]:
    found = {}
    for path in (ROOT / top).rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (absolute names; ``from pkg import sub`` as ``pkg.sub`` when a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out |= {f"{base}.{alias.name}" for alias in node.names} | {base}
    return out


MODULES = _modules()
GRAPH = {name: {m for m in _imports(name, path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "hpcinv"


def test_every_package_has_a_layer():
    layered = {p for layer in LAYERS for p in layer}
    assert {_package(m) for m in MODULES} - {"hpcinv"} <= layered


def test_no_import_cycle():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while not component or v not in component:
                component.add(stack.pop())
            on_stack.difference_update(component)
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles


def test_no_upward_import():
    level = {p: k for k, layer in enumerate(LAYERS) for p in layer}
    upward = defaultdict(set)
    for a, targets in GRAPH.items():
        for b in targets:
            pa, pb = _package(a), _package(b)
            if pa != "hpcinv" and pb != "hpcinv" and level[pb] > level[pa]:
                upward[a].add(b)
    assert not upward


@pytest.mark.parametrize("package", SCIENCE)
def test_science_imports_nothing_distributed(package):
    bad = {
        name: sorted(m for m in _imports(name, path) if m.startswith(DISTRIBUTED))
        for name, path in MODULES.items()
        if _package(name) == package
    }
    assert not {k: v for k, v in bad.items() if v}


OUTSIDE = {**_modules("launch"), **_modules("benchmarks")}


def test_only_the_distributed_package_imports_ray():
    everywhere = {**MODULES, **OUTSIDE}
    importing = {
        name: ray
        for name, path in everywhere.items()
        if not name.startswith("hpcinv.distributed")
        and (ray := sorted(m for m in _imports(name, path) if m == "ray" or m.startswith("ray.")))
    }
    assert not importing


@pytest.mark.parametrize("package", ["predict", "evaluate", "refine"])
def test_inference_does_not_import_training(package):
    imported = {m for name, path in MODULES.items() if _package(name) == package for m in _imports(name, path)}
    assert not [m for m in imported if m == "hpcinv.train" or m.startswith("hpcinv.train.")]


def test_launchers_build_on_the_stages_and_the_job():
    """launch/ submits StageJob through the table of stages; it reaches into no stage's internals."""
    for name, path in _modules("launch").items():
        for m in _imports(name, path):
            if m.startswith("hpcinv."):
                assert m.split(".")[1] in ("argv", "config", "errors", "folders", "jobs", "stages", "store"), (name, m)
