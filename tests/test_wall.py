"""The threat model is a wall in the layout: the attacker's side (uia_pipe/attacks/) never imports the
evaluator's side (uia_pipe/evaluation/), the unlearning methods, the data, file I/O, defences or tracking,
directly or through another module — read from the code (every import, those inside functions too) — and a
family's run receives a Grant, which has no field for D_u or what a request removed."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from tests.conftest import ROOT, imported
from uia_pipe.attacks import ATTACKS
from uia_pipe.attacks.protocol import Grant

ATTACKER = ROOT / "uia_pipe" / "attacks"
FORBIDDEN = ("uia_pipe.evaluation", "uia_pipe.unlearning", "uia_pipe.data", "uia_pipe.io", "uia_pipe.defenses",
             "uia_pipe.tracking", "stages")


def reaches(module: str, forbidden: str) -> bool:
    return module == forbidden or module.startswith(forbidden + ".")


def module_file(module: str) -> Path | None:
    base = ROOT / module.replace(".", "/")
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def closure(path: Path) -> dict[str, Path]:
    """Every repository module `path` reaches through imports (and the packages above each), with the file
    that imports it first."""
    seen, todo = {}, [path]
    while todo:
        here = todo.pop()
        for module in sorted(imported(here)):
            found = module_file(module) if module.split(".")[0] in ("uia_pipe", "stages") else None
            if found is not None and module not in seen:
                seen[module] = here
                todo.append(found)
                parent = module.rsplit(".", 1)[0]
                while "." in parent and parent not in seen:
                    seen[parent] = here
                    todo.append(module_file(parent))
                    parent = parent.rsplit(".", 1)[0]
    return seen


@pytest.mark.parametrize("path", sorted(ATTACKER.rglob("*.py")), ids=lambda p: str(p.relative_to(ATTACKER)))
def test_the_attackers_side_reaches_nothing_of_the_evaluators(path):
    crossing = {m: str(by.relative_to(ROOT)) for m, by in closure(path).items() for f in FORBIDDEN if reaches(m, f)}
    assert not crossing, f"{path.relative_to(ROOT)} reaches {crossing} (module: the file importing it)"


def test_the_check_itself_sees_a_crossing_directly_or_through_another_module(tmp_path):
    bad = ATTACKER / "families" / "_probe_of_the_wall_test.py"
    try:
        bad.write_text("def run(grant, cfg, ctx):\n    from ...evaluation.setting import Setting\n    return Setting\n")
        assert any(reaches(m, "uia_pipe.evaluation") for m in closure(bad))
        bad.write_text("from ... import summary\n")  # summary is allowed; what it imports is looked at too
        assert "uia_pipe.report" in closure(bad)
    finally:
        bad.unlink()


def test_a_grant_holds_no_field_for_the_removed_records():
    fields = {f.name for f in dataclasses.fields(Grant)}
    assert not fields & {"du_x", "du_y", "forget", "truth", "setting", "outside_x", "outside_y"}


def test_each_familys_run_takes_a_grant_not_the_setting():
    for name, attack in ATTACKS.items():
        first = next(iter(inspect.signature(attack.run).parameters))
        assert first == "grant", f"{name}.run's first parameter is {first!r}"
