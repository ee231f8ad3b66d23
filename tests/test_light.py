"""Validating params is light and the code has no import cycle.

`uia check`'s validation (`uia_pipe.params.load_params`) reads only schema leaves:
pydantic types and the registries' names as plain data, never torch, pandas,
scikit-learn, scipy or matplotlib. And no repository module imports, directly or
through others, a module that imports it back: every import counts, at module
level or inside a function."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import BaseModel, ConfigDict

from tests.conftest import ROOT, committed_params_text

HEAVY = ("torch", "torchvision", "pandas", "sklearn", "scipy", "matplotlib")
PACKAGES = ("uia_pipe", "stages")

_VALIDATE = """
import json, sys
import uia_pipe
from uia_pipe.params import load_params
load_params(sys.argv[1])
print(json.dumps({"file": uia_pipe.__file__, "modules": sorted(sys.modules)}))
"""
# `uia check` itself, as a user runs it: the CLI loads a stage's module only when that stage runs.
_CHECK = """
import json, sys
from stages.cli import app
try:
    app(["check", "--params", sys.argv[1]])
except SystemExit as done:
    assert not done.code, done.code
print(json.dumps({"file": __import__("uia_pipe").__file__, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("script", [_VALIDATE, _CHECK], ids=["load_params", "uia check"])
def test_validating_the_committed_params_imports_no_heavy_package(tmp_path, script):
    params = tmp_path / "params.yaml"
    params.write_text(committed_params_text())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script, str(params)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert Path(out["file"]).resolve().is_relative_to(ROOT)  # this checkout's code, not an installed copy
    loaded = out["modules"]
    heavy = sorted({m.split(".")[0] for m in loaded} & set(HEAVY))
    assert not heavy, f"validating params imports {heavy}"
    ours = [m for m in loaded if m.split(".")[0] in PACKAGES]
    assert "uia_pipe.params" in ours and not any(m.startswith("uia_pipe.attacks.families") for m in ours), ours


def test_the_schema_leaves_agree_with_the_registries():
    """The names validation checks against are the registries' own, in their order (each registry also asserts
    it when imported)."""
    from uia_pipe import data, models
    from uia_pipe.attacks import ATTACKS
    from uia_pipe.attacks.schema import FAMILY_CONFIGS
    from uia_pipe.data_config import DATASET_NAMES
    from uia_pipe.defenses import DEFENSES
    from uia_pipe.defenses.config import DEFENCE_CONFIGS
    from uia_pipe.model_config import MODEL_CONFIGS, TASKS

    assert tuple(data.DATASETS) == DATASET_NAMES
    assert {name: cfg for name, (_, cfg) in models.MODELS.items()} == MODEL_CONFIGS
    assert tuple(models.WRAPPERS) == TASKS
    assert [(name, attack.config) for name, attack in ATTACKS.items()] == list(FAMILY_CONFIGS.items())
    assert [(name, cfg) for name, (_, cfg) in DEFENSES.items()] == list(DEFENCE_CONFIGS.items())


class _ToyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sign: float = 1.0


def test_a_family_registered_at_run_time_gets_its_block_in_the_stages_schema(monkeypatch):
    from uia_pipe.attacks import ATTACKS
    from uia_pipe.attacks.config import attack_params
    from uia_pipe.attacks.schema import FAMILY_CONFIGS

    monkeypatch.setitem(ATTACKS, "toy", SimpleNamespace(config=_ToyConfig))  # attack_params reads .config only
    section = attack_params()(toy={"sign": -1.0})  # the stages': the live registry
    assert section.toy == _ToyConfig(sign=-1.0)
    assert "toy" not in attack_params(FAMILY_CONFIGS).model_fields  # `uia check`'s: the built-in families


def _modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the repository modules it imports, read from every import statement anywhere in its
    file (module level, functions, TYPE_CHECKING blocks). `from pkg import name` is an edge to the
    submodule pkg.name when there is one, else to pkg; a package's loading of its parents when one of
    its submodules is imported is no edge (it is what Python does, not what the code asks for)."""
    modules = _modules(root, packages)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                wanted = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            for target in wanted:
                while target and target not in modules:  # `import a.b.c` of a name inside a.b, ...
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle of the graph as one path that closes on itself (one per strongly connected component)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)

    def path_back(component: set[str]) -> list[str]:  # shortest way from the first module back to itself
        start = min(component)
        paths = {w: [start, w] for w in sorted(graph[start] & component)}
        todo = list(paths)
        while start not in paths:
            v = todo.pop(0)
            for w in sorted(graph[v] & component):
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    todo.append(w)
        return paths[start]

    return [path_back(c) for c in components]


def test_no_import_cycle_among_the_repository_modules():
    cycles = import_cycles(import_graph(ROOT))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_sees_imports_hidden_in_functions(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n    return g\n")
    (pkg / "c.py").write_text("def g():\n    import pkg.a\n")
    (pkg / "d.py").write_text("from . import a\n")  # on the cycle's way in, not on it
    assert import_cycles(import_graph(tmp_path, ("pkg",))) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (pkg / "c.py").write_text("def g():\n    pass\n")
    assert import_cycles(import_graph(tmp_path, ("pkg",))) == []
