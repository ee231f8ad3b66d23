"""The one check of a name against a registry (a dict keyed by params value)."""

from __future__ import annotations


def one_of(kind: str, value: str, registry: dict) -> str:
    """`value` if it is a key of `registry`, else a one-line ValueError naming `kind` and the keys."""
    if value not in registry:
        raise ValueError(f"unknown {kind} {value!r}; expected one of: {', '.join(registry)}")
    return value
