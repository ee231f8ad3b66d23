"""The pipeline's promise: a stage's deps in dvc.yaml are every repository file
its command imports (read statically from the code), so an edit reruns exactly
the stages it affects; train imports no attack, defence or unlearning code."""

from __future__ import annotations

import ast
import subprocess

import pytest
import yaml

from tests.conftest import ROOT, imported, repo_copy

PACKAGES = ("stages", "uia_pipe")


def _module_file(name: str) -> str | None:
    base = name.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if (ROOT / candidate).is_file():
            return candidate
    return None


def import_closure(entry: str) -> set[str]:
    """Repository files (relative paths) that running module file `entry` imports, directly or not,
    with the __init__ of every package on the way."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path is None or path in seen:
            continue
        seen.add(path)
        parts = path.split("/")
        todo += [f"{'/'.join(parts[:i])}/__init__.py" for i in range(1, len(parts))
                 if (ROOT / "/".join(parts[:i]) / "__init__.py").is_file()]
        todo += [_module_file(n) for n in imported(ROOT / path) if n.split(".")[0] in PACKAGES]
    return seen


def stage_entries() -> dict[str, str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        words = stage["cmd"].split()
        out[name] = _module_file(words[words.index("-m") + 1])
    return out


def _deps(stage: str) -> list[str]:
    return [str(d) for d in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage].get("deps", [])]


@pytest.mark.parametrize("stage", list(stage_entries()))
def test_deps_cover_every_imported_file(stage):
    deps = _deps(stage)
    closure = import_closure(stage_entries()[stage])
    missing = sorted(f for f in closure if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))
    assert not missing, f"dvc.yaml: stage {stage} imports files not in its deps: {missing}"
    code_deps = [d for d in deps if d.endswith(".py")]
    assert not set(code_deps) - closure, f"stage {stage} lists code it does not import: {set(code_deps) - closure}"


def test_train_imports_no_attack_defence_or_unlearning_code():
    closure = import_closure(stage_entries()["train"])
    heavy = sorted(f for f in closure if any(part in f for part in ("attacks", "defenses", "unlearning")))
    assert not heavy, f"train imports {heavy}"


def test_no_library_module_imports_stages():
    for path in sorted((ROOT / "uia_pipe").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] == "stages" for n in names), f"{path} imports stages"


def _pipeline_file(rel: str) -> bool:
    """The code and the pipeline's definition, what `dvc status` hashes: every .py file, dvc.yaml,
    params.yaml, .dvcignore and grids/ (a folder evaluate depends on)."""
    return rel.endswith(".py") or rel in ("dvc.yaml", "params.yaml", ".dvcignore") or rel.startswith("grids/")


@pytest.mark.slow
def test_editing_an_imported_file_makes_dvc_status_list_the_stage(tmp_path):
    """A locked pipeline whose outputs are stand-ins: after editing one file a stage
    imports, `dvc status` lists that stage (and only the stages that import it, plus
    those downstream of them, never train for an attack file)."""
    repo, env = repo_copy(tmp_path, keep=_pipeline_file, commit=False)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():  # every stage a no-op that makes its outputs
        stage["cmd"] = "python -c pass"
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    subprocess.run(["dvc", "init", "-q"], cwd=repo, env=env, check=True)
    for name, stage in stages.items():
        for out in stage.get("outs", []) + [m for key in ("metrics", "plots") for m in stage.get(key, [])]:
            path = repo / (out if isinstance(out, str) else next(iter(out)))
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.suffix:
                path.mkdir(exist_ok=True)
                (path / "x").write_text(name)
            else:
                path.write_text("{}")
    for name in stages:
        subprocess.run(["dvc", "commit", "-f", "-q", name], cwd=repo, env=env, check=True)
    closures = {name: import_closure(entry) for name, entry in stage_entries().items()}
    for edited in ("uia_pipe/io.py", "uia_pipe/attacks/protocol.py", "uia_pipe/unlearning/config.py",
                   "uia_pipe/evaluation/sweep.py", "uia_pipe/summary.py"):
        original = (repo / edited).read_text()
        (repo / edited).write_text(original + "\n# edited\n")
        status = subprocess.run(["dvc", "status"], cwd=repo, env=env, capture_output=True, text=True).stdout
        listed = {line.rstrip(":").strip() for line in status.splitlines() if line and not line.startswith((" ", "\t"))}
        expected = {name for name, files in closures.items() if edited in files}
        assert expected and expected <= listed, f"edit of {edited}: dvc status lists {listed}, expected {expected}"
        assert "train" not in listed or "train" in expected
        (repo / edited).write_text(original)


def test_dvc_yaml_declares_one_metrics_file_the_headline():
    """`dvc exp show` stays readable: the pipeline's only metrics file is evaluate's headline; the detailed
    JSON files are plain outputs kept in git (cache: false)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = [m for stage in stages.values() for m in stage.get("metrics", [])]
    assert [next(iter(m)) if isinstance(m, dict) else m for m in declared] == ["metrics/headline.json"]
    assert "--headline metrics/headline.json" in " ".join(stages["evaluate"]["cmd"].split())
    outs = {next(iter(o)): o[next(iter(o))] for stage in stages.values() for o in stage.get("outs", [])
            if isinstance(o, dict)}
    for name in ("train", "unlearn", "attack", "defend", "access", "evaluate"):
        assert outs[f"metrics/{name}.json"] == {"cache": False}
