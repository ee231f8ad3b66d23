"""Typed params: each stage validates the sections of params.yaml it reads, once, here.

Unknown keys, wrong types, out-of-range values and unknown registry names all
become a `UiaError` whose one-line message names the key. This module holds
the machinery and the sections every stage may read (base, train, evaluate);
the sections of the algorithm families sit beside them as leaf schemas
(`uia_pipe.data_config.DownloadParams`, `uia_pipe.unlearning.config.UnlearnParams`,
`uia_pipe.attacks.config.attack_params`, `uia_pipe.defenses.config.DefendParams`),
so that validating the train section imports no attack, defence or unlearning
code. `uia_pipe.params` puts all of them together for the whole file (`uia check`).
Every schema imports pydantic and other schemas only (the models' settings and the
task names: `uia_pipe.model_config`), never torch, pandas or scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from .errors import UiaError
from .model_config import MODEL_CONFIGS, TASKS
from .registry import one_of

# Every section params.yaml may hold, in the order of the pipeline.
SECTIONS = ("base", "download", "train", "unlearn", "attack", "defend", "evaluate")

# Upper bounds of the knobs that size work or memory. Generous: 10-100x the paper's full scale on a GPU
# (ResNet-18 on CIFAR-10, 200 epochs, 10,000 iterations x 5 restarts, N = 512), far below what hangs or
# exhausts a machine; they turn a typo such as 10^12 into one line instead of a crash mid-stage.
MAX_SEED = 2**32 - 1  # seeds are summed with offsets and request indices; torch takes up to 2^64 - 1
MAX_EPOCHS = 10_000
MAX_STEPS = 1_000_000  # optimisation steps or iterations of one loop
MAX_SAMPLES = 10_000_000  # samples, pools, D_u
MAX_BATCH = 100_000  # a minibatch: more than any dataset here, so full-batch stays expressible
MAX_REQUESTS = 100_000


class Section(BaseModel):
    # inf and nan are no setting of any knob (they would only surface as nan weights mid-stage).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def all_of(kind: str, names: tuple[str, ...], registry: dict) -> tuple[str, ...]:
    """Each name known, none twice."""
    for name in names:
        one_of(kind, name, registry)
    if len(set(names)) != len(names):
        raise ValueError(f"listed twice: {list(names)}")
    return names


def registry_settings(name: str, registry: dict[str, type[BaseModel]]) -> type[Section]:
    """A section with one optional sub-section per registry entry (name -> config type)."""
    fields: dict[str, Any] = {key: (cfg_type, cfg_type()) for key, cfg_type in registry.items()}
    return create_model(name, __base__=Section, **fields)


class RayParams(Section):
    address: str | None = Field(
        None, description="null: a Ray instance on this machine for the stage; auto: the cluster this node joined "
        "(`ray start`); host:port: that cluster's head")
    workers: int = Field(0, ge=0, le=100_000, description="CPUs of the instance started for address null; 0 = all")
    cpus_per_task: float = Field(0.0, ge=0, le=1024, description="0 = the stage's torch threads (its tasks use "
                                 "as many, so that their float reductions split as the local run's do)")
    gpus_per_task: float = Field(0.0, ge=0, le=64)
    retries: int = Field(2, ge=0, le=100, description="retries of a task whose worker died")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        host, _, port = (value or "").rpartition(":")
        if value not in (None, "auto") and not (host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"expected null, auto or host:port (the head's GCS port, 6379 by default), got {value!r}")
        return value


class BaseParams(Section):
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    threads: int = Field(
        2, ge=0, le=1024, description="torch threads of every stage (the attack's own loop: attack.threads); 0 = "
        "torch's default. Float reductions, so trained weights, depend on it: pinned, a run gives the same numbers "
        "in any shell and on bigger CPUs",
    )
    executor: Literal["local", "ray"] = "local"
    ray: RayParams = RayParams()


class OptimParams(Section):
    epochs: int = Field(1, ge=1, le=MAX_EPOCHS)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)


class PretrainParams(OptimParams):
    augment: bool = False
    max_samples: int = Field(0, ge=0, le=MAX_SAMPLES)


_ModelSettings = registry_settings("ModelSettings", MODEL_CONFIGS)


class TrainParams(_ModelSettings):
    task: Literal[TASKS] = Field(
        "classification", description="what θ learns (uia_pipe/tasks.py): labels (cross-entropy), a value "
        "(squared error) or its input (an autoencoder's reconstruction error)")
    model: str = "lenet"
    precision: Literal["float32", "float64"] = Field(
        "float32", description="dtype of every model trained, unlearned and released (float32: rounding of the "
        "released weights hides well-fitted samples' exact-unlearning update; float64 removes that)",
    )
    pool_size: int = Field(1000, ge=1, le=MAX_SAMPLES)
    n: int = Field(32, ge=1, le=MAX_SAMPLES)
    pretrain: PretrainParams = PretrainParams()
    finetune: OptimParams = OptimParams(lr=1e-3)

    @field_validator("model")
    @classmethod
    def _known(cls, v: str) -> str:
        return one_of("model", v, MODEL_CONFIGS)


class EvaluateParams(Section):
    level: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")
    small_sample: int = Field(30, ge=1, le=MAX_REQUESTS, description="a result over fewer requests gets a caveat")


class _Params(BaseModel):
    """The sections a stage reads; the other sections of the file are some other stage's."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="after")
    def _cross(self) -> "_Params":
        t, u = getattr(self, "train", None), getattr(self, "unlearn", None)
        if t is not None and t.n > t.pool_size:
            raise ValueError(f"train.n: must be <= train.pool_size (got {t.n} > {t.pool_size})")
        if t is not None and u is not None:
            for name in ("sisa", "shapley"):  # the sharded methods
                cfg = getattr(u, name)
                if name in u.methods and cfg.shards * cfg.slices > t.n:
                    raise ValueError(f"unlearn.{name}: shards × slices must be <= train.n "
                                     f"(got {cfg.shards} × {cfg.slices} > {t.n})")
            if u.task_error(t.task):
                raise ValueError(u.task_error(t.task))
            if u.selection == "random" and u.k > t.n:
                raise ValueError(f"unlearn.k: must be <= train.n (got {u.k} > {t.n})")
        return self


def schema(**sections: type[Section]) -> type[BaseModel]:
    """The params model of a stage that reads `sections` (name -> section type), each defaulted."""
    return create_model("Params", __base__=_Params, **{name: (cls, cls()) for name, cls in sections.items()})


def _key(part: Any) -> str:
    """A key as the message shows it: itself, or its repr where printing it would break the line."""
    return str(part) if str(part).isprintable() else repr(part)


def _shown(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters; an int too long for repr (over 4,300 digits) by its size."""
    try:
        text = repr(value)
    except ValueError:
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(err: dict) -> str:
    loc = ".".join(_key(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or err["type"] == "value_error" else f" (got {_shown(got)})"
    return f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}"


def parse_sections(raw: Any, model: type[BaseModel], source: str = "params.yaml") -> Any:
    """Validate a params mapping against `model` (see `schema`); UiaError with one line for the first problem.
    A top-level key that is no section of any stage is refused too."""
    if not isinstance(raw, dict):
        raise UiaError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    unknown = [key for key in raw if key not in SECTIONS]
    if unknown:
        raise UiaError(f"{source}: {_key(unknown[0])}: unknown key (sections: {', '.join(SECTIONS)})")
    try:
        return model(**{name: value for name, value in raw.items() if name in model.model_fields})
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UiaError(f"{source}: {_describe(errors[0])}{more}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # a validator that failed outside pydantic
        raise UiaError(f"{source}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def parse_block(model: type[BaseModel], raw: Any, where: str) -> Any:
    """`raw` validated as `model` outside the params schema (a plugin's own settings); UiaError with one
    line naming `where` and the key on the first problem."""
    if not isinstance(raw, dict):
        raise UiaError(f"{where}: expected a mapping, got {type(raw).__name__}")
    try:
        return model(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UiaError(f"{where}.{_describe(err)}" if err["loc"] else f"{where}: {_describe(err)}") from None


def read_params(path: Path) -> dict:
    """params.yaml as a plain mapping (not yet validated)."""
    path = Path(path)
    if not path.is_file():
        raise UiaError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: an int over 4,300 digits
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UiaError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(raw, dict):
        raise UiaError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def load_sections(path: Path, **sections: type[Section]) -> Any:
    """Read params.yaml and validate the named sections: `load_sections(path, base=BaseParams, train=TrainParams)`."""
    return parse_sections(read_params(path), schema(**sections), str(path))


def section_hash(*sections: BaseModel | dict) -> str:
    """A short stable hash of the params a stage read."""
    blob = json.dumps([s if isinstance(s, dict) else s.model_dump(mode="json") for s in sections], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
