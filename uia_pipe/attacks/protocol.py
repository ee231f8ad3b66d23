"""What an attack family is: the seam between the attacker's side (this package) and the evaluator's side
(`uia_pipe.evaluation`), which runs every family of the registry on every (θ, θ_u) pair of a run.

A family is one `Attack`: a typed config (its params block `attack.<name>`), a run function that attacks
a `Grant` — what its threat model grants of one run: the released models, public facts of the setting, the
server's recipe as a replay, and the evaluator's question where it asks one (views, audit candidates,
line-ups) — and never the removed samples; and the evaluator's half, which the evaluator alone calls: a
score that compares the results with its `Setting` (handed in, never imported here), a summary, and the
numbers the family contributes to each table of the report (`Number`), from which every table is built.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
from pydantic import BaseModel
from torch import nn

from ..config import OptimParams
from ..executor import LOCAL, Executor


class Store(Protocol):
    """Reusable work kept between runs and stages (label inference's probes, membership's shadows and audit
    pairs), keyed by what made it (`digest`): the evaluator's side gives a file-backed one, or none."""

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict] | None: ...

    def save(self, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> None: ...


def digest(*parts: Any) -> str:
    """A `Store` key: a hash of `parts` in order — tensors (dtype, shape and bytes), modules (their state
    dicts), pydantic models (type and fields), bytes (e.g. source code), lists and tuples of these, and
    anything else as JSON."""
    key = hashlib.sha256()

    def add(part: Any) -> None:
        if isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            key.update(f"tensor {t.dtype} {tuple(t.shape)};".encode())
            key.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(part, nn.Module):
            key.update(b"module;")
            for name, t in part.state_dict().items():
                key.update(name.encode())
                add(t)
        elif isinstance(part, BaseModel):
            key.update(f"{type(part).__name__} {part.model_dump_json()};".encode())
        elif isinstance(part, bytes):
            key.update(b"bytes %d;" % len(part) + part)
        elif isinstance(part, (list, tuple)):
            key.update(b"list %d;" % len(part))
            for p in part:
                add(p)
        else:
            key.update(json.dumps(part, sort_keys=True).encode() + b";")

    for part in parts:
        add(part)
    return key.hexdigest()[:32]


@dataclass
class Context:
    """What every family gets besides its grant and config: the seed, public data, a store for reusable
    work, where independent work runs, callbacks, and what the families of the same run prepared and
    found (a compound attack builds on it)."""

    seed: int
    public_x: torch.Tensor  # public data (the test set): auxiliary probes, the attacker's shadow records
    public_y: torch.Tensor | None = None  # labels of public_x
    store: Store | None = None
    executor: Executor = LOCAL  # maps a family's independent work (requests, shadow pairs): here or on Ray
    progress: Callable[[int, float], None] | None = None  # (iteration, loss) of an optimising attack
    on_request: Callable[[str, int], None] | None = None  # (family, request index) once each is attacked
    prepared: dict[str, Any] = field(default_factory=dict)  # family -> what its prepare() made
    stats: dict[str, dict] = field(default_factory=dict)  # family -> numbers about that (e.g. queries)
    earlier: dict[str, Any] = field(default_factory=dict)  # family -> its results on this run


@dataclass(frozen=True)
class Grant:
    """What one family's run receives about one run (built by the evaluator's side): the models the server
    released, public facts of the setting and the server's recipe — the paper's threat model — and the
    evaluator's `question` to the family, where it asks one. There is deliberately no field for D_u, the
    requests' removed samples or their labels."""

    theta_original: nn.Module
    thetas_u: list[nn.Module]  # one θ_u per request, in order
    theta_pretrained: nn.Module  # θ₀
    method: str  # the unlearning method the server runs
    requests: tuple[int, ...]  # each request's index
    ks: tuple[int, ...]  # |X| of each request
    n: int  # N = |D_u|
    task: str
    input_shape: tuple[int, ...]
    num_outputs: int  # classes, 1 (regression) or the input's size (autoencoder)
    num_classes: int
    finetune: OptimParams | None = None  # the fine-tune θ₀ → θ (B: its batch size)
    server: Any = None  # the server's recipe as a replay (shadow pairs): .pair(x, y, forget), .pairs, .n, .k, .fingerprint(), ...
    question: Any = None  # the evaluator's question (feature recovery's views, membership's candidates, ...)


# The report's tables a family's number can appear in: the run's headline table, methods side by side, and
# under each defence and each access level (`figure`: also the defence and access figures' panels).
TABLES = ("headline", "methods", "defence", "access")


@dataclass(frozen=True)
class Number:
    """A number a family contributes to the report: `key` in its summary (attack.json `<family>.<key>`, and
    the same name under each defence and access level, in evaluate.json and MLflow), `name` as the tables
    show it, `column` the per-request score it is the mean of (attack_requests.csv `<family>.<column>`;
    None: pooled over the run), the tables it appears in (TABLES, "figure"), its interval over requests:
    "t" (Student-t of the mean), "wilson" (of a proportion) or None (the summary's own `<key>_ci95_low/_high`,
    where it gives them), the summary key of the guess it is read against (`baseline`), and whether a higher
    value means more leaked (False for an error)."""

    key: str
    name: str
    column: str | None = None
    tables: tuple[str, ...] = TABLES
    interval: str | None = None
    baseline: str | None = None
    higher_leaks: bool = True


@dataclass(frozen=True)
class Attack:
    """One attack family (see the module docstring)."""

    config: type[BaseModel]
    run: Callable[[Grant, BaseModel, Context], Any]  # -> the family's results
    score: Callable[[Any, Any], Any]  # (the evaluator's Setting, results) -> DataFrame, a row a request
    summarise: Callable[[Any, Any, BaseModel, dict], dict]  # (scored, results, config, prepare's stats) -> numbers
    numbers: tuple[Number, ...] = ()
    tasks: tuple[str, ...] = ("classification",)  # the models it can attack (uia_pipe.tasks); others skip it
    prepare: Callable[[Grant, BaseModel, Context], tuple[Any, dict]] | None = None  # once per served θ
    # (the evaluator's Setting, grant, results, config, ctx) -> {relative path: Figure | {name: tensor}} and
    # {plot name: DataFrame}: the family's artifacts and DVC plot data
    outputs: Callable[..., tuple[dict[str, Any], dict[str, Any]]] | None = None
    # Several grants of one config at once (a sweep's variants), results in order: where batching pays
    run_many: Callable[[list[Grant], BaseModel, Context], list[Any]] | None = None


def for_task(attacks: dict[str, Attack], task: str) -> dict[str, Attack]:
    """The families that can attack a model of `task`, in registry order."""
    return {name: attack for name, attack in attacks.items() if task in attack.tasks}
