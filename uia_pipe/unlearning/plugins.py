"""Your own unlearning method, no package edit: `unlearn.method:
package.module:function` (importable from the repository root, e.g. a module
under plugins/, which the stages that run methods depend on), or the name of an
entry point in the group `uia_pipe.unlearning` of an installed package.

The function is a method like the built-in ones: `function(problem, forget,
cfg) -> θ_u` (see methods.py). `cfg` is the params block `unlearn.plugin`,
validated by the module's own `Config` (a pydantic model) where it defines one,
else passed through as a frozen model with the block's keys as attributes.
Import failures, a wrong signature or a wrong return type are one-line errors
that name the method."""

from __future__ import annotations

import functools
import importlib
import inspect
from importlib import metadata
from typing import Callable

from pydantic import BaseModel, ConfigDict
from torch import nn

from ..errors import UiaError

ENTRY_POINTS = "uia_pipe.unlearning"


class PluginConfig(BaseModel):
    """The `unlearn.plugin` block as given, for a plugin without its own `Config`."""

    model_config = ConfigDict(extra="allow", frozen=True)


def reference(name: str) -> str:
    """'module:function' for a plugin reference or an installed entry point's name."""
    if ":" in name:
        return name
    found = metadata.entry_points(group=ENTRY_POINTS).select(name=name)
    if not found:
        raise UiaError(f"unlearn.method: no entry point {name!r} in the group {ENTRY_POINTS}")
    return next(iter(found)).value


@functools.lru_cache(maxsize=None)
def load(name: str) -> tuple[Callable, type[BaseModel]]:
    """(the method, its config type) for a plugin reference or entry-point name; UiaError on any problem."""
    ref = reference(name)
    module_name, _, attribute = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 — whatever the user's module raises on import
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UiaError(f"unlearn.method: cannot import {module_name!r} ({type(exc).__name__}: {first})") from None
    fn = getattr(module, attribute, None)
    if not callable(fn):
        raise UiaError(f"unlearn.method: {module_name} has no function {attribute!r}")
    try:
        inspect.signature(fn).bind(None, None, None)
    except (TypeError, ValueError):
        raise UiaError(f"unlearn.method: {ref} must take (problem, forget, cfg), "
                       f"not {attribute}{inspect.signature(fn)}") from None
    config = getattr(module, "Config", None)
    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        config = PluginConfig
    return _checked(fn, ref), config


def _checked(fn: Callable, ref: str) -> Callable:
    """`fn`, refusing a result that is no model of θ's architecture."""

    @functools.wraps(fn)
    def method(problem, forget, cfg) -> nn.Module:
        theta_u = fn(problem, forget, cfg)
        if not isinstance(theta_u, nn.Module):
            raise UiaError(f"unlearn.method: {ref} returned {type(theta_u).__name__}, expected a torch.nn.Module (θ_u)")
        shapes = [p.shape for p in theta_u.parameters()]
        if shapes != [p.shape for p in problem.theta_original.parameters()]:
            raise UiaError(f"unlearn.method: {ref} returned a model of another architecture than θ's")
        return theta_u

    return method
