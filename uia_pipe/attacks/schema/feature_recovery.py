"""Feature recovery's settings (`attack.feature_recovery`): every knob, typed and checked,
and the names they are checked against. A schema leaf (pydantic only);
`uia_pipe.attacks.feature_recovery` is the attack (its config.OPTIMIZERS asserts it
agrees with OPTIMIZER_NAMES)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...registry import one_of

# Optimisers of the dummy inputs, names of feature_recovery.OPTIMIZERS in its order.
OPTIMIZER_NAMES = ("signed_adamw", "signed_adam", "adam", "adamw")

# Exact unlearning's estimators of Δ = −(a(θ−θ₀) − b(θ_u−θ₀)), by params name: what (a, b) are (update.py forms
# them; N = |D_u|, k removed samples, B the fine-tune batch size).
EXACT_UPDATES: dict[str, str] = {
    "count_weighted": "a = N, b = N − k (the reference)",
    "batch_weighted": "a = min(N, B), b = min(N − k, B)",
}


class Config(BaseModel):
    """Every knob of the attack; the reference's value is given in each description."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # Loop lengths, restarts and depths are bounded at ~100x the reference's full scale (10,000 iterations ×
    # 5 restarts), far below what hangs a stage or exhausts memory (batched restarts hold one dummy batch each).
    # 500, not 1,000: the milestones scale with `iterations`, and at 1,000 the plateau stop fired before the
    # first milestone, so lr never decayed (measured: benchmarks/RESULTS.md, "Feature recovery").
    iterations: int = Field(
        500, ge=1, le=1_000_000,
        description="most optimisation steps per restart (reference: 10,000, always run in full)"
    )
    restarts: int = Field(2, ge=1, le=500, description="random restarts (reference: 5, one after another)")
    lr: float = Field(0.1, gt=0, description="step size (reference: 0.04)")
    optimizer: str = Field(
        "adam", description="key of OPTIMIZERS: adam | adamw | signed_adam | signed_adamw (reference: signed_adamw)"
    )
    milestones: tuple[float, ...] = Field(
        (3 / 8, 5 / 8, 7 / 8),
        max_length=64,
        description="fractions of `iterations` at which lr is multiplied by `gamma` (reference: 3/8, 5/8, 7/8)",
    )
    gamma: float = Field(0.5, gt=0, le=1, description="lr factor at each milestone (reference: 0.5)")
    tv: float = Field(0.01, ge=0, description="total-variation weight λ, images only (reference: 0.01)")
    labels: Literal["oracle", "analytic", "inferred"] = Field(
        "analytic",
        description="oracle: the true labels passed by the caller (the reference's assumption); "
        "inferred: labels from the label-inference attack, passed by the caller; "
        "analytic: read from the last layer's update (no caller input)",
    )
    early_stop: bool = Field(True, description="stop a restart whose loss has plateaued (reference: no)")
    patience: int = Field(
        150, ge=1, le=1_000_000,
        description="steps without a relative improvement of min_improvement that count as a plateau"
    )
    min_improvement: float = Field(
        0.005, ge=0, description="relative decrease of the best loss that resets the patience counter"
    )
    prune_after: int = Field(
        100, ge=0, le=1_000_000,
        description="after this many steps only the `keep` best restarts go on; 0 = never (reference: never)",
    )
    keep: int = Field(1, ge=1, le=500, description="restarts that survive pruning")
    delta_dtype: Literal["float64", "float32"] = Field(
        "float64", description="dtype in which Δ is formed (reference: float32)"
    )
    exact_update: str = Field(
        "count_weighted",
        description="key of EXACT_UPDATES, exact unlearning's Δ: count_weighted (the reference) | batch_weighted "
        "(needs the fine-tune batch size in the view; identical for N ≤ B)",
    )
    init: Literal["randn_clamped", "uniform", "gray"] = Field(
        "randn_clamped",
        description="start: randn clamped to the box (reference), uniform in the box, or 0.5 plus small noise",
    )
    analytic_init: bool = Field(
        True,
        description="k=1 and a first linear layer with bias: start restart 0 at x = ΔW_i/Δb_i; or a patch "
        "embedding with a position embedding (the ViT): each patch from ΔW = Σ_p Δpos_p u_pᵀ by least squares "
        "(APRIL) (reference: no)",
    )
    analytic_refine: bool = Field(
        True, description="optimise the closed-form start further, as one of the restarts; false: it is the "
        "result, no restart runs (for a noisy Δ, exact unlearning's, whose cosine the optimiser fits noise and all)",
    )
    guide: float = Field(
        3.0, ge=0, description="weight β of the layered-features term β‖φ(x) − â‖²/‖â‖² on guided restarts, â solved "
        "from Δ layer by layer (R-GAP), falling linearly to 0 over `iterations`; ReLU conv/linear stacks, k < the "
        "class count; 0 = off (reference: none)",
    )
    guide_depth: int = Field(
        3, ge=1, le=256,
        description="parametrised layers from the head down whose input â is matched: 1 = the head's input "
        "(closed form), each further layer one least-squares solve (reference: none)",
    )
    joint_guide_depth: int = Field(
        0, ge=0, le=256,
        description="guide_depth for 1 < k < C samples, whose head is fitted jointly; 0 = no guide for k > 1. "
        "Off by default: with the true labels it lifts k > 1 only to the level of the class-mean images, and with "
        "analytic labels it gains nothing for the time it costs (reference: none)",
    )
    k_strategy: Literal["joint", "backfit"] = Field(
        "backfit", description="k > 1: joint = all k dummies against Δ at once (the reference); backfit = one "
        "sample at a time, the single-sample attack on what the others' estimates leave of Δ, peeled in order of "
        "the label's output-bias change and re-solved `backfit_rounds` times ((1 + backfit_rounds)·k single-sample "
        "attacks), then refined jointly: one more restart, kept when its plain objective is lower (reference: joint)",
    )
    backfit_rounds: int = Field(2, ge=0, le=100, description="passes re-solving each sample after the first peel")
    backfit_lr: float = Field(0.03, gt=0, description="step size of the joint refinement from the backfitted start")
    guide_restarts: int = Field(
        1, ge=0, le=500,
        description="the first this many restarts are guided, the rest plain; pruning keeps `keep` of each "
        "kind and the plain objective chooses between them (reference: none)",
    )
    # The image priors (GradViT, Hatamizadeh et al., CVPR 2022) are per-restart terms like the guide: left out of
    # the plain objective that chooses the restart, and off on the restart begun at a closed-form start.
    patch_prior: float = Field(0.0, ge=0, description="weight of the patch-order prior, the mean squared jump "
                               "across patch borders; images only, 0 = off (reference: none)")
    patch_size: int = Field(0, ge=0, le=4096, description="side of the patches of patch_prior: 0 = the model's own "
                            "patch embedding's (the ViT's), none on a model without one")
    image_prior: float = Field(0.0, ge=0, description="weight of the image prior, the batch-norm statistics of a "
                               "small CNN the attacker trains on public data (the test set), matched by the "
                               "dummies' (DeepInversion); images only, 0 = off (reference: none)")
    image_prior_epochs: int = Field(2, ge=1, le=1000, description="epochs of the image prior's CNN")
    box: Literal["auto", "unit", "none"] = Field(
        "auto", description="auto: [0,1] for images, unbounded for 1-d (tabular) inputs (reference: [0,1])"
    )
    second_order: Literal["double_backward", "finite_difference"] = Field(
        "finite_difference", description="how a step differentiates the cosine in x: double_backward (autograd, "
        "exact; the reference) | finite_difference (one more pass at θ + h·∂loss/∂g under the same ReLU and "
        "max-pool pattern, no second-order graph; relative error ~1e-3 in float32; batched steps stay exact)",
    )
    batch_requests: int = Field(
        32, ge=1, le=100_000, description="requests inverted together as one batch, each with its own objective, "
        "restarts and stopping rule (1 = one at a time)",
    )
    vmap: Literal["auto", "yes", "no"] = Field(
        "auto", description="step every restart of a batch as one vmapped call (an exact double backward): auto = "
        "on CUDA, and on a CPU for small models, where per-call overhead dominates a step",
    )
    record_every: int = Field(10, ge=1, le=1_000_000, description="loss-curve sampling interval in steps")

    @field_validator("vmap", mode="before")
    @classmethod
    def _yaml_yes_no(cls, v):
        # YAML 1.1 (params.yaml, `dvc exp run -S`) reads a bare yes/no as a boolean.
        return {True: "yes", False: "no"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("exact_update")
    @classmethod
    def _known_exact_update(cls, v: str) -> str:
        return one_of("exact_update", v, EXACT_UPDATES)

    # Field validators, not one on the model, so that a refusal names the key (attack.feature_recovery.optimizer).
    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        return one_of("optimizer", v, OPTIMIZER_NAMES)

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < m < 1 for m in v):
            raise ValueError(f"milestones are fractions of `iterations`, each in (0, 1) (got {list(v)})")
        return v

