"""Settings of each unlearning method and the unlearn section: a schema leaf
(pydantic and the params machinery only), so that a stage that validates
`unlearn` imports no method. Each method module takes its `Config` from here."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import MAX_BATCH, MAX_EPOCHS, MAX_REQUESTS, MAX_SAMPLES, MAX_SEED, MAX_STEPS, registry_settings


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ExactConfig(MethodConfig):
    pass


class ApproxConfig(MethodConfig):
    eta: float = Field(
        1.0, gt=0, description="ascent step size η (reference: 1 for feature recovery, 1e-3 for label inference)"
    )


class RetrainConfig(MethodConfig):
    pass


class FinetuneConfig(MethodConfig):
    epochs: int = Field(5, ge=1, le=MAX_EPOCHS, description="epochs over D_u \\ X")
    lr: float = Field(0.01, gt=0, description="SGD step size")
    momentum: float = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    seed_offset: int = Field(100, ge=0, le=MAX_SEED, description="added to the fine-tune seed for the batch order")


class NegGradConfig(MethodConfig):
    steps: int = Field(5, ge=1, le=MAX_STEPS, description="full-batch ascent steps on X")
    lr: float = Field(0.01, gt=0, description="SGD step size")
    retain_weight: float = Field(
        0.0, ge=0, description="weight of the descent term on D_u \\ X: 0 = NegGrad, > 0 = NegGrad+"
    )


class RandomLabelConfig(MethodConfig):
    steps: int = Field(5, ge=1, le=MAX_STEPS, description="full-batch steps on X with relabelled targets")
    lr: float = Field(0.01, gt=0, description="SGD step size")
    retain_weight: float = Field(0.0, ge=0, description="weight of a descent term on D_u \\ X")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the random labels")


class InfluenceConfig(MethodConfig):
    damping: float = Field(0.01, gt=0, description="λ added to the Hessian's diagonal (keeps CG well posed)")
    cg_iterations: int = Field(50, ge=1, le=MAX_STEPS, description="maximum conjugate-gradient iterations")
    tolerance: float = Field(1e-6, gt=0, description="CG stops when the residual norm falls below this × |b|")


class SisaConfig(MethodConfig):
    # Each ≤ 10,000 (a model per shard, a checkpoint per slice); together also ≤ train.n (config._Params checks).
    shards: int = Field(4, ge=1, le=10_000, description="S, isolated shard models in the served ensemble")
    slices: int = Field(2, ge=1, le=10_000, description="R, slices per shard (a checkpoint after each)")


class ScrubConfig(MethodConfig):
    epochs: int = Field(
        8, ge=1, le=MAX_EPOCHS, description="rounds of (max-step, min-steps) (reference: sgda_epochs, 3–10)"
    )
    max_steps: int = Field(
        4, ge=0, le=MAX_EPOCHS,
        description="the first this many epochs open with a max-step on X (reference: msteps, 2–5)",
    )
    min_steps: int = Field(
        1, ge=1, le=MAX_EPOCHS, description="min-step passes over D_u \\ X per epoch (reference: 1)"
    )
    lr: float = Field(0.05, gt=0, description="SGD step size (reference: 5e-4 with momentum 0.9, many batches)")
    alpha: float = Field(0.5, ge=0, description="weight of KL(teacher ‖ student) on D_u \\ X (reference: 0.001)")
    gamma: float = Field(1.0, ge=0, description="weight of the cross-entropy on D_u \\ X (reference: 0.99)")
    temperature: float = Field(4.0, gt=0, description="distillation temperature T (reference: 4)")
    batch_size: int = Field(
        128, ge=1, le=MAX_BATCH, description="samples per step (reference: 128 retained, 32 forgotten)"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the minibatch order when a set exceeds batch_size")
    max_grad_norm: float = Field(
        5.0, ge=0, description="clip each step's gradient norm to this, 0 = never (reference: no clipping)"
    )


class FisherConfig(MethodConfig):
    alpha: float = Field(
        3e-8, gt=0, description="noise scale: θ_u = θ + sqrt(alpha · min(1/F, max_variance)) · ε, F the diagonal Fisher on "
        "D_u \\ X (reference: 1e-6 to 1e-7)",
    )
    max_variance: float = Field(1e3, gt=0, description="cap on 1/F per parameter (reference: 1e3; the head 1e2)")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the noise")


class CertifiedConfig(MethodConfig):
    l2: float = Field(1.0, gt=0, description="λ of the head's objective Σ ℓ + λN/2 ‖w − w₀‖² + bᵀw (Guo et al.)")
    sigma: float = Field(0.1, ge=0, description="std of the loss perturbation b at training, 0 = none (no certificate)")
    epsilon: float = Field(1.0, gt=0, description="ε of the (ε, δ) removal certificate the budget is kept against")
    delta: float = Field(1e-4, gt=0, lt=1, description="δ of the certificate")
    iterations: int = Field(100, ge=1, le=MAX_STEPS, description="most Newton iterations fitting the served head")


class AmnesiacConfig(MethodConfig):
    repair_steps: int = Field(0, ge=0, le=MAX_STEPS, description="full-batch SGD steps on D_u \\ X after the "
                              "subtraction, 0 = none (Graves et al. repair with a few)")
    repair_lr: float = Field(0.01, gt=0, description="step size of the repair")


class SalUnConfig(MethodConfig):
    saliency: float = Field(0.5, gt=0, le=1, description="fraction of weights updated: those of largest |∇ CE(X)| "
                            "(reference: 0.5)")
    steps: int = Field(5, ge=1, le=MAX_STEPS, description="full-batch steps on X with random labels + the retain term")
    lr: float = Field(0.01, gt=0, description="SGD step size")
    retain_weight: float = Field(1.0, ge=0, description="weight of the descent term on D_u \\ X (reference: 1)")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the random labels")


class ShapleyConfig(MethodConfig):
    # Each ≤ 10,000; together also ≤ train.n (config._Params checks), as for sisa.
    shards: int = Field(4, ge=1, le=10_000, description="S shard models, each given an equal share of D_u's value")
    slices: int = Field(2, ge=1, le=10_000, description="R slices per shard (a checkpoint after each)")
    neighbours: int = Field(5, ge=1, le=10_000, description="K of the KNN utility whose Shapley values rank D_u "
                            "(on θ₀'s features; each sample of D_u validates the others)")


METHOD_CONFIGS: dict[str, type[MethodConfig]] = {
    "exact": ExactConfig,
    "approx": ApproxConfig,
    "retrain": RetrainConfig,
    "finetune": FinetuneConfig,
    "neggrad": NegGradConfig,
    "random_label": RandomLabelConfig,
    "influence": InfluenceConfig,
    "sisa": SisaConfig,
    "scrub": ScrubConfig,
    "fisher": FisherConfig,
    "certified": CertifiedConfig,
    "amnesiac": AmnesiacConfig,
    "salun": SalUnConfig,
    "shapley": ShapleyConfig,
}


# A plugin method: `package.module:function`; a bare name that is no built-in method is an entry point's.
PLUGIN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def known_method(name: str) -> str:
    """`name` if it is a built-in method, a plugin reference or an installed entry point (not imported here)."""
    if name in METHOD_CONFIGS or PLUGIN.fullmatch(name):
        return name
    from importlib import metadata

    if metadata.entry_points(group="uia_pipe.unlearning").select(name=name):
        return name
    raise ValueError(f"unknown unlearning method {name!r}; expected one of: {', '.join(METHOD_CONFIGS)}, "
                     "or package.module:function (your own)")


# Methods that only make sense for classifiers (train.task: classification) -> why.
CLASSES_ONLY: dict[str, str] = {
    "random_label": "it relabels X with wrong classes",
    "salun": "it relabels X with wrong classes",
    "scrub": "its KL divergence is between class distributions",
    "fisher": "its Fisher information samples classes from θ's softmax",
    "certified": "its convex head is one-vs-all over classes",
    "sisa": "its ensemble averages class probabilities",
    "shapley": "its ensemble averages class probabilities and its KNN utility counts label matches",
}


class UnlearnParams(registry_settings("MethodSettings", METHOD_CONFIGS)):
    method: str = "exact"
    requests: int = Field(8, ge=1, le=MAX_REQUESTS)
    selection: Literal["random", "class", "canary"] = "random"
    k: int = Field(1, ge=1, le=MAX_SAMPLES)
    fraction: float = Field(0.5, gt=0, le=1)
    compare: tuple[str, ...] = Field((), description="methods also run on the same requests and attacked, side by side")
    plugin: dict[str, Any] = Field({}, description="settings passed to a plugin method (unlearn.method module:function)")

    @field_validator("method")
    @classmethod
    def _known(cls, v: str) -> str:
        return known_method(v)

    @field_validator("compare")
    @classmethod
    def _known_all(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            known_method(name)
        if len(set(v)) != len(v):
            raise ValueError(f"listed twice: {list(v)}")
        return v

    def task_error(self, task: str) -> str | None:
        """Why a listed method cannot unlearn a model of `task` (one line), or None."""
        if task != "classification" and self.selection == "class":
            return f"unlearn.selection: class needs classes; train.task is {task}"
        if task != "language_model" and self.selection == "canary":
            return f"unlearn.selection: canary deletes a text's canaries; train.task is {task}"
        for name in self.methods:
            if task != "classification" and name in CLASSES_ONLY:
                key = "unlearn.method" if name == self.method else "unlearn.compare"
                return f"{key}: {name} needs classes ({CLASSES_ONLY[name]}); train.task is {task}"
        return None

    @property
    def compared(self) -> tuple[str, ...]:
        """The compared methods other than unlearn.method: listing it is a no-op, so that with
        `compare: [exact, approx]` either method as unlearn.method is compared with the other."""
        return tuple(m for m in self.compare if m != self.method)

    @property
    def methods(self) -> tuple[str, ...]:
        """unlearn.method first, then the compared methods."""
        return (self.method, *self.compared)
