"""The evaluator's side of a run: the models, D_u and the deletion requests, as
the unlearn stage left them. Attack families get grants built from it
(`grants`); only the scoring reads the removed samples."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import BaseModel
from torch import nn

from .. import io, tasks
from ..config import OptimParams
from ..data import as_inputs
from ..metrics import class_mean_images, mean_image
from ..unlearning import exact, plugins
from ..unlearning.config import METHOD_CONFIGS
from ..attacks.view import Limits
from ..unlearning.problem import UnlearningProblem
from ..unlearning.sisa import unflatten


@dataclass(frozen=True)
class SisaStore:
    """A SISA server's checkpoint store: slices[s][j] are the D_u indices of
    shard s's slice j, before[s][j] its checkpoint after slices 0..j−1, and
    after[r][s][j] the same after request r's deletion."""

    slices: list[list[list[int]]]
    before: list[list[nn.Module]]
    after: list[list[list[nn.Module]]]


@dataclass(frozen=True)
class Setting:
    """What the evaluator knows about one run: the models, D_u and the requests."""

    theta_pretrained: nn.Module
    theta_original: nn.Module
    method: str
    card: dict
    du_x: torch.Tensor
    du_y: torch.Tensor
    requests: list[dict]  # {"index", "forget", "target_class"}
    mean_guess: torch.Tensor  # baseline guess of the features (training mean)
    class_guess: torch.Tensor | None  # per-class mean images (images only)
    train_x: torch.Tensor  # pretraining features (tabular decoding baselines)
    finetune_batch_size: int | None = None  # B of the fine-tune θ₀ → θ (label inference's θ₀ reference)
    sisa: SisaStore | None = None  # the checkpoint store, where the method is sisa
    # How the server made θ and θ_u, and the pool's records outside D_u (never members): what an
    # attack that repeats the server's process (membership's shadow and audit pairs) needs.
    finetune: OptimParams | None = None
    finetune_seed: int = 0
    method_config: BaseModel | None = None
    outside_x: torch.Tensor | None = None
    outside_y: torch.Tensor | None = None
    # What the evaluator made once of this setting (`retrained`); a setting replaced by another starts afresh.
    made: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def image(self) -> bool:
        return self.card["kind"] == "image"

    @property
    def task(self) -> str:
        """The served model's task (`uia_pipe.tasks`)."""
        return tasks.task_of(self.theta_original)

    @property
    def num_outputs(self) -> int:
        """The model's output size: the classes, 1 (regression) or the input's size (autoencoder)."""
        return tasks.num_outputs(self.task, self.card)

    @property
    def ks(self) -> list[int]:
        """|X| of each request."""
        return [len(r["forget"]) for r in self.requests]

    def forget_mask(self, req: dict) -> torch.Tensor:
        """A bool mask over D_u of the samples request `req` removed."""
        mask = torch.zeros(len(self.du_y), dtype=torch.bool)
        mask[torch.tensor(req["forget"])] = True
        return mask

    def truth(self, req: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples request `req` removed and their labels (the evaluator's knowledge only)."""
        forget = torch.tensor(req["forget"])
        return self.du_x[forget], self.du_y[forget]

    def retrained(self) -> list[nn.Module]:
        """Each request's gold standard, θ₀ fine-tuned on D_u without its records as the server fine-tuned θ
        (`exact`: for exact and retrain unlearning, θ_u itself), made once."""
        if "retrained" not in self.made:
            problem = UnlearningProblem(self.theta_pretrained, self.theta_original, self.du_x, self.du_y,
                                        self.finetune, self.finetune_seed)
            self.made["retrained"] = [exact.unlearn(problem, self.forget_mask(r), exact.Config())
                                      for r in self.requests]
        return self.made["retrained"]


@dataclass(frozen=True)
class Run:
    """One unlearning method's run as the evaluator attacks it: its setting, one θ_u per request as
    released, how the server releases a model the evaluator makes alike (`release`: a defence or later
    requests, applied to membership's audit pairs; None: as made) and what the attacker is denied (`limits`:
    an access level)."""

    setting: Setting
    thetas_u: list[nn.Module]
    test_x: torch.Tensor  # the public test set: auxiliary probes' source, utility of defended models
    test_y: torch.Tensor
    compare: tuple[str, ...] = ()  # the methods compared with it (unlearn.method's folder only)
    # release(θ, θ_u, forget_x, forget_y, retain_x, retain_y, seed) -> the released θ_u
    release: Callable[..., nn.Module] | None = None
    limits: Limits = Limits()
    sisa_view: str = "ensemble"  # under sisa: "shard" when the attacker holds the server's checkpoint store
    asked: dict[str, Any] = field(default_factory=dict)  # questions made once per served θ (membership's audit)



def load_run(data: Path, trained: Path, unlearned: Path, device, max_requests: int = 0) -> Run:
    """The run of the method whose θ_u lie in `unlearned` (the unlearn stage's folder or one of its
    compare/<method>/ folders), the first `max_requests` requests (0 = all)."""
    ds = io.load_dataset_artifact(data)
    card = ds.card
    split, _ = io.load_tensors(trained / "split.safetensors")
    record = io.load_json(unlearned / "requests.json")
    requests = record["requests"][: max_requests or None]
    train_x = as_inputs(ds.x_train[split["pretrain"]])
    finetune = io.load_json(trained / "finetune.json")
    outside = split["pool"][~torch.isin(split["pool"], split["du"])]
    config_type = METHOD_CONFIGS.get(record["method"]) or plugins.load(record["method"])[1]
    config = config_type(**record["config"]) if "config" in record else None
    theta = io.load_model(unlearned / "theta_original.safetensors", device)[0]
    task = tasks.task_of(theta)
    classes = card["kind"] == "image" and task == "classification"
    du_x, outside_x = as_inputs(ds.x_train[split["du"]]), as_inputs(ds.x_train[outside])
    setting = Setting(
        theta_pretrained=io.load_model(trained / "theta_pretrained.safetensors", device)[0],
        theta_original=theta, method=record["method"], card=card,
        du_x=du_x, du_y=tasks.targets(task, du_x, ds.y_train[split["du"]]), requests=requests,
        mean_guess=mean_image(train_x),
        class_guess=class_mean_images(train_x, ds.y_train[split["pretrain"]], card["num_classes"]) if classes else None,
        train_x=train_x, finetune_batch_size=finetune["batch_size"],
        finetune=OptimParams(**{k: v for k, v in finetune.items() if k != "seed"}), finetune_seed=finetune["seed"],
        method_config=config, outside_x=outside_x, outside_y=tasks.targets(task, outside_x, ds.y_train[outside]),
    )
    thetas_u = [io.load_model(unlearned / f"theta_unlearned_{r['index']:03d}.safetensors", device)[0]
                for r in requests]
    if "slices" in record.get("server_state", {}):  # sisa and shapley: the checkpoint store
        setting = replace(setting, sisa=_sisa_store(unlearned, record, requests, device))
    test_x = as_inputs(ds.x_test)
    return Run(setting, thetas_u, test_x, tasks.targets(task, test_x, ds.y_test), tuple(record.get("compare", ())))


def _sisa_store(unlearned: Path, record: dict, requests: list[dict], device) -> SisaStore:
    """SISA's checkpoint store before and after each request, as the unlearn stage kept it."""
    slices = record["server_state"]["slices"]

    def load(name: str):
        return unflatten(io.load_model(unlearned / name, device)[0], slices)

    return SisaStore(slices, load("server_state.safetensors"),
                     [load(f"server_state_{r['index']:03d}.safetensors") for r in requests])

