"""pyproject.toml declares what the package imports, as ranges, so `pip install .` gives a package that
imports; requirements.txt stays the pinned lock `make setup` installs, and its pins satisfy those ranges."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

PACKAGES = ("uia_pipe", "stages")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _declared(*, extras: bool) -> dict[str, Requirement]:
    project = _pyproject()
    reqs = [Requirement(r) for r in project["project"]["dependencies"]]
    if extras:
        reqs += [Requirement(r) for group in project["project"].get("optional-dependencies", {}).values()
                 for r in group]
        reqs += [Requirement(r) for r in project["build-system"]["requires"]]
    return {canonicalize_name(r.name): r for r in reqs}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not a pin (name==version)"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _third_party_imports() -> dict[str, str]:
    """Top-level third-party module -> one file importing it (every import, lazy ones in functions too)."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES and top != "__future__":
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_a_declared_dependency():
    declared = _declared(extras=False)
    distributions = packages_distributions()
    imports = _third_party_imports()
    assert "torch" in imports and "pydantic" in imports  # the scan sees the code
    missing = {module: where for module, where in imports.items()
               if not {canonicalize_name(d) for d in distributions.get(module, [module])} & declared.keys()}
    assert not missing, f"imported but not in pyproject.toml's [project] dependencies: {missing}"


def test_every_pin_is_declared_and_satisfies_its_range():
    declared = _declared(extras=True)
    for name, version in _pins().items():
        assert name in declared, f"requirements.txt pins {name}, which pyproject.toml does not declare"
        spec = declared[name].specifier
        assert spec.contains(version, prereleases=True), f"{name}=={version} (requirements.txt) is outside {spec}"


def test_every_declared_dependency_is_a_range_with_a_lower_bound():
    for name, req in _declared(extras=True).items():
        operators = {s.operator for s in req.specifier}
        assert operators & {">=", "~=", ">"}, f"pyproject.toml: {req} has no lower bound"
        assert "==" not in operators, f"pyproject.toml: {req} is a pin (pins live in requirements.txt)"
