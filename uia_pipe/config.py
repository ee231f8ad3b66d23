"""Typed params: params.yaml is read and validated once, here.

Unknown keys, wrong types, out-of-range values and unknown registry names all
become a `UiaError` whose one-line message names the key. The settings of each
registered model and unlearning method form a sub-section named after it
(`train.convnet.width`, `unlearn.approx.eta`), generated from the registries,
so a new entry needs no edit here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from .attacks import feature_recovery as fr
from .attacks import label_inference as li
from .data import DATASETS
from .defenses import DEFENSES
from .errors import UiaError
from .models import MODELS
from .registry import one_of as _one_of
from .unlearning import METHODS


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _all_of(kind: str, names: tuple[str, ...], registry: dict) -> tuple[str, ...]:
    """Each name known, none twice."""
    for name in names:
        _one_of(kind, name, registry)
    if len(set(names)) != len(names):
        raise ValueError(f"listed twice: {list(names)}")
    return names


def _registry_settings(name: str, registry: dict) -> type[Section]:
    """A section with one optional sub-section per registry entry."""
    fields: dict[str, Any] = {key: (cfg_type, cfg_type()) for key, (_, cfg_type) in registry.items()}
    return create_model(name, __base__=Section, **fields)


class BaseParams(Section):
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    threads: int = Field(
        2, ge=0, description="torch threads of every stage (the attack's own loop: attack.threads); 0 = torch's "
        "default. Float reductions, so trained weights, depend on it: pinned, a run gives the same numbers in any "
        "shell and on bigger CPUs",
    )


class DownloadParams(Section):
    dataset: str = "fashion_mnist"
    cache_dir: str = "~/.cache/uia-pipe"

    @field_validator("dataset")
    @classmethod
    def _known(cls, v: str) -> str:
        return _one_of("dataset", v, DATASETS)


class OptimParams(Section):
    epochs: int = Field(1, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, ge=1)


class PretrainParams(OptimParams):
    augment: bool = False
    max_samples: int = Field(0, ge=0)


_ModelSettings = _registry_settings("ModelSettings", MODELS)


class TrainParams(_ModelSettings):
    model: str = "lenet"
    precision: Literal["float32", "float64"] = Field(
        "float32", description="dtype of every model trained, unlearned and released (float32: rounding of the "
        "released weights hides well-fitted samples' exact-unlearning update; float64 removes that)",
    )
    pool_size: int = Field(1000, ge=1)
    n: int = Field(32, ge=1)
    pretrain: PretrainParams = PretrainParams()
    finetune: OptimParams = OptimParams(lr=1e-3)

    @field_validator("model")
    @classmethod
    def _known(cls, v: str) -> str:
        return _one_of("model", v, MODELS)


_MethodSettings = _registry_settings("MethodSettings", METHODS)


class UnlearnParams(_MethodSettings):
    method: str = "exact"
    requests: int = Field(8, ge=1)
    selection: Literal["random", "class"] = "random"
    k: int = Field(1, ge=1)
    fraction: float = Field(0.5, gt=0, le=1)
    compare: tuple[str, ...] = Field((), description="methods also run on the same requests and attacked, side by side")

    @field_validator("method")
    @classmethod
    def _known(cls, v: str) -> str:
        return _one_of("unlearning method", v, METHODS)

    @field_validator("compare")
    @classmethod
    def _known_all(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _all_of("unlearning method", v, METHODS)

    @property
    def compared(self) -> tuple[str, ...]:
        """The compared methods other than unlearn.method (listing it is a no-op,
        so that `-S unlearn.method=approx` works beside `compare: [approx]`)."""
        return tuple(m for m in self.compare if m != self.method)

    @property
    def methods(self) -> tuple[str, ...]:
        """unlearn.method first, then the compared methods."""
        return (self.method, *self.compared)


class AttackParams(Section):
    max_requests: int = Field(0, ge=0, description="attack the first this many requests; 0 = all")
    threads: int = Field(1, ge=0, description="torch threads while attacking; 0 = torch's default")
    sisa_view: Literal["shard", "ensemble"] = Field(
        "shard", description="under sisa: shard = invert the changed shard's retrained stage from the server's "
        "checkpoints; ensemble = the served ensemble's parameters, as for any method"
    )
    feature_recovery: fr.Config = fr.Config()
    label_inference: li.Config = li.Config()


_DefenceSettings = _registry_settings("DefenceSettings", DEFENSES)


class DefendParams(_DefenceSettings):
    max_requests: int = Field(2, ge=1, description="defend the first this many requests")
    defences: tuple[str, ...] = Field(tuple(DEFENSES), min_length=1, description="defences to run, in order")
    attack_iterations: int = Field(200, ge=0, description="feature-recovery iterations on defended models; 0 = attack's")

    @field_validator("defences")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _all_of("defence", v, DEFENSES)


class EvaluateParams(Section):
    level: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")
    small_sample: int = Field(30, ge=1, description="a result over fewer requests gets a caveat")


class Params(Section):
    base: BaseParams = BaseParams()
    download: DownloadParams = DownloadParams()
    train: TrainParams = TrainParams()
    unlearn: UnlearnParams = UnlearnParams()
    attack: AttackParams = AttackParams()
    defend: DefendParams = DefendParams()
    evaluate: EvaluateParams = EvaluateParams()

    @model_validator(mode="after")
    def _cross(self) -> "Params":
        t, u = self.train, self.unlearn
        if t.n > t.pool_size:
            raise ValueError(f"train.n: must be <= train.pool_size (got {t.n} > {t.pool_size})")
        if "sisa" in u.methods and u.sisa.shards * u.sisa.slices > t.n:
            raise ValueError(
                f"unlearn.sisa: shards × slices must be <= train.n (got {u.sisa.shards} × {u.sisa.slices} > {t.n})"
            )
        if u.selection == "random" and u.k > t.n:
            raise ValueError(f"unlearn.k: must be <= train.n (got {u.k} > {t.n})")
        return self


def _describe(err: dict) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or err["type"] == "value_error" else f" (got {got!r})"
    return f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a params mapping; UiaError with one line per the first problem."""
    if not isinstance(raw, dict):
        raise UiaError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params(**raw)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UiaError(f"{source}: {_describe(errors[0])}{more}") from None


def load_params(path: Path) -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise UiaError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UiaError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_params(raw, str(path))


def section_hash(*sections: BaseModel) -> str:
    """A short stable hash of the params a stage read."""
    blob = json.dumps([s.model_dump(mode="json") for s in sections], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
