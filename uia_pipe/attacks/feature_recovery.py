"""Feature recovery: invert the unlearning update (Hu et al., S&P 2024, §feature recovery).

The server holds θ and θ_u (and θ₀ for exact unlearning). Their difference is,
up to a positive factor, the gradient of the cross-entropy on the removed
samples X, so X is recovered by finding dummy inputs whose gradient points the
same way:

    minimise  1 − cos(g(x), Δ) + λ·TV(x),   g(x) = ∇_θ CE(f(x), y)

with one global cosine over all parameter tensors. The sign convention here is
that Δ ∝ +Σ_{x∈X} ∇_θ CE at the point where dummy gradients are taken:

- approx (one ascent step θ_u = θ + η∇CE(θ; X)): Δ = θ_u − θ, gradients at θ;
- exact (one SGD epoch from θ₀ redone without X): Δ = −(a(θ−θ₀) − b(θ_u−θ₀)),
  gradients at θ₀, with (a, b) from `exact_update` (EXACT_UPDATES):
  count_weighted (the reference) a = N, b = N−k; batch_weighted a = min(N, B),
  b = min(N−k, B), B the fine-tune batch size. For one full-batch step (N ≤ B,
  the default N = 32) both give lr·Σ_X ∇CE(θ₀) exactly and are bit-identical.

  With several minibatches neither is exact. To first order in lr (which
  matched the real update at cosine ≈ 0.99 on Fashion-MNIST, N = 512),
  θ−θ₀ = −lr Σ_i g_i/B_i; for N a multiple of B the retrain's last batch L
  is k short, so θ_u − θ = (lr/B)(Σ_X g − (k/(B−k)) Σ_L g). The plain
  difference (batch_weighted) keeps L's mean gradient, often larger than a
  well-fitted sample's own. count_weighted = N(θ_u−θ) − k(θ_u−θ₀) also
  subtracts k times the retrain's update, whose mean-gradient part cancels
  L's, leaving only L's deviation from the mean. Measured mean cosine to
  Σ_X ∇CE(θ₀), count vs batch (benchmarks/exact_leakage.py): pipeline θ₀
  0.58 vs 0.53 at N = 256, 0.32 vs 0.37 at N = 512; a less fitted θ₀ 0.86
  vs 0.77 and 0.78 vs 0.68; so count_weighted stays the default. Either way
  a sample leaks only where its gradient outweighs that residue: misfit
  samples (‖g‖ ≳ 1) are still recovered at N = 512, well-fitted ones are not.
  (For N ≤ B what is lost is float32 rounding of the released weights alone.)

Δ is formed in float64 by default: N·(θ−θ₀) multiplies float32 rounding, which
swamps the signal of well-fitted samples.

What differs from the reference, and why (see benchmarks/feature_recovery.py):
- the default optimiser is unsigned Adam (the reference's signed AdamW is a
  registry entry, "signed_adamw"): it reaches higher PSNR in fewer steps;
- restarts stop on a plateau and hopeless ones are dropped after a warm-up, in
  place of a fixed 10,000 × 5 iterations;
- the best restart is chosen by the very objective that was optimised (the
  reference scored it without the input normalisation);
- labels can be read from the last layer's update ("analytic") instead of being
  handed over ("oracle", the reference's assumption);
- when the first parametrised layer is linear with a bias and k = 1 the input
  is read off in closed form, x = ΔW_i / Δb_i, and used as a restart's start;
- otherwise, on a ReLU conv/linear stack (DLG's LeNet, MLPs), a hidden
  layer's input â is solved from Δ layer by layer (R-GAP,
  `layered_features`) and a guided restart also matches φ(x) to â, with a
  weight that falls to 0; the plain objective chooses between guided and
  plain restarts. On the default requests: approx 27.5 -> 39.0 dB, exact
  28.0 -> 29.6 dB (exact is limited by the float32 rounding of θ and θ_u).
  For 1 < k < C samples (opt-in, `joint_guide_depth`) the head's update is
  first fitted as k outer products (`_head_factors`): k = 4 with true
  labels 12.1 -> 13.4 dB, level with the class-mean images, and no gain
  with analytic labels; with the true hidden inputs as the guide the same
  attack reaches 23 dB (one layer below the head) and 43 dB (two), so what
  limits k > 1 is how well the sum of k updates is split;
- for k > 1 a backfitted restart (`_backfit`, k_strategy "backfit") splits
  it one sample at a time: the single-sample attack on what the others'
  estimates leave of Δ, then a joint refinement; the plain objective chooses.
  k = 4 with true labels: approx 12.1 -> 15.0, exact 11.7 -> 14.6 dB;
- a step takes ∇x of the cosine by a finite difference in θ (`second_order`,
  `_Objective._fd_step`) instead of a double backward: one more pass at
  θ + h·∂loss/∂g under the first pass's ReLU masks and max-pool choices, so no
  second-order graph is built (width-64 ConvNet: 3.54 -> 1.72x one
  forward+backward; the same PSNR);
- batch norm runs as its eval-mode affine map, which torch.func.vmap can batch,
  so restarts can run as one batched step (worth it on a GPU, not on a CPU).
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn
from torch.func import functional_call

from ..registry import one_of
from .view import AttackerView

Progress = Callable[[int, float], None]


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimiser of the dummy inputs: torch class, extra kwargs, and whether
    it is fed sign(∇x) (the reference) or ∇x itself."""

    cls: type[torch.optim.Optimizer]
    signed: bool
    kwargs: dict = field(default_factory=dict)


OPTIMIZERS: dict[str, OptimizerSpec] = {
    # The reference: AdamW (torch defaults, weight decay 0.01) on the sign of ∇x.
    "signed_adamw": OptimizerSpec(torch.optim.AdamW, signed=True),
    "signed_adam": OptimizerSpec(torch.optim.Adam, signed=True),
    "adam": OptimizerSpec(torch.optim.Adam, signed=False),
    "adamw": OptimizerSpec(torch.optim.AdamW, signed=False),
}


class Config(BaseModel):
    """Every knob of the attack; the reference's value is given in each description."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # 500, not 1,000: the milestones scale with `iterations`, and at 1,000 the plateau stop fired first
    # (mean 347 it) so lr never decayed. Default run's 8 exact requests, one thread: 25.84 -> 28.00 dB at
    # 1.23x the steps; over init seeds +0, +100, +200 pooled 26.45 -> 27.79 dB (+1.34) at 1.06-1.23x the
    # steps. Cutting lr on each restart's own plateau instead (patience 75-150) gave 27.7 dB at 1.2-1.8x.
    iterations: int = Field(
        500, ge=1, description="most optimisation steps per restart (reference: 10,000, always run in full)"
    )
    restarts: int = Field(2, ge=1, description="random restarts (reference: 5, one after another)")
    lr: float = Field(0.1, gt=0, description="step size (reference: 0.04)")
    optimizer: str = Field(
        "adam", description="key of OPTIMIZERS: adam | adamw | signed_adam | signed_adamw (reference: signed_adamw)"
    )
    milestones: tuple[float, ...] = Field(
        (3 / 8, 5 / 8, 7 / 8),
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
        150, ge=1, description="steps without a relative improvement of min_improvement that count as a plateau"
    )
    min_improvement: float = Field(
        0.005, ge=0, description="relative decrease of the best loss that resets the patience counter"
    )
    prune_after: int = Field(
        100, ge=0, description="after this many steps only the `keep` best restarts go on; 0 = never (reference: never)"
    )
    keep: int = Field(1, ge=1, description="restarts that survive pruning")
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
        description="k=1 and a first linear layer with bias: start restart 0 at x = ΔW_i/Δb_i (reference: no)",
    )
    guide: float = Field(
        3.0, ge=0, description="weight β of the layered-features term β‖φ(x) − â‖²/‖â‖² on guided restarts, â solved "
        "from Δ layer by layer (R-GAP), falling linearly to 0 over `iterations`; ReLU conv/linear stacks, k < the "
        "class count; 0 = off (reference: none)",
    )
    guide_depth: int = Field(
        3, ge=1, description="parametrised layers from the head down whose input â is matched: 1 = the head's input "
        "(closed form), each further layer one least-squares solve (reference: none)",
    )
    joint_guide_depth: int = Field(
        0, ge=0, description="guide_depth for 1 < k < C samples, whose head is fitted jointly; 0 = no guide for k > 1. "
        "Off by default: k = 4, N = 32, true labels, 6 requests: none 12.1 dB, depth 2 13.4, depth 3 12.0 (class "
        "means 13.3); the default run with k = 4 (analytic labels, 66% right): 13.1 vs 13.3 dB unguided at 1.9x "
        "the time (reference: none)",
    )
    k_strategy: Literal["joint", "backfit"] = Field(
        "backfit", description="k > 1: joint = all k dummies against Δ at once (the reference); backfit = one "
        "sample at a time, the single-sample attack on what the others' estimates leave of Δ, peeled in order of "
        "the label's output-bias change and re-solved `backfit_rounds` times ((1 + backfit_rounds)·k single-sample "
        "attacks), then refined jointly: one more restart, kept when its plain objective is lower (reference: joint)",
    )
    backfit_rounds: int = Field(2, ge=0, description="passes re-solving each sample after the first peel")
    backfit_lr: float = Field(0.03, gt=0, description="step size of the joint refinement from the backfitted start")
    guide_restarts: int = Field(
        1, ge=0, description="the first this many restarts are guided, the rest plain; pruning keeps `keep` of each "
        "kind and the plain objective chooses between them (reference: none)",
    )
    box: Literal["auto", "unit", "none"] = Field(
        "auto", description="auto: [0,1] for images, unbounded for 1-d (tabular) inputs (reference: [0,1])"
    )
    second_order: Literal["double_backward", "finite_difference"] = Field(
        "finite_difference", description="how a step differentiates the cosine in x: double_backward (autograd, "
        "exact; the reference) | finite_difference (one more pass at θ + h·∂loss/∂g under the same ReLU and "
        "max-pool pattern, no second-order graph; relative error ~1e-3 in float32; batched steps stay exact)",
    )
    batch_restarts: Literal["auto", "yes", "no"] = Field(
        "auto", description="run restarts as one vmapped step: auto = on CUDA only (the CPU is compute-bound)"
    )
    record_every: int = Field(10, ge=1, description="loss-curve sampling interval in steps")

    @field_validator("batch_restarts", mode="before")
    @classmethod
    def _yaml_yes_no(cls, v):
        # YAML 1.1 (params.yaml, `dvc exp run -S`) reads a bare yes/no as a boolean.
        return {True: "yes", False: "no"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("exact_update")
    @classmethod
    def _known_exact_update(cls, v: str) -> str:
        return one_of("exact_update", v, EXACT_UPDATES)

    @model_validator(mode="after")
    def _check(self) -> "Config":
        one_of("optimizer", self.optimizer, OPTIMIZERS)
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError("milestones are fractions of `iterations`, each in (0, 1)")
        return self


@dataclass
class Result:
    """What the attack recovered. `reconstruction` is [k, *input_shape] on the
    data's natural scale ([0,1] images, encoded tabular rows), in the order of
    `labels` (the identity of each slot is not identifiable: match before scoring)."""

    reconstruction: torch.Tensor
    labels: torch.Tensor
    label_source: str
    loss: float
    restart_losses: list[float]
    curve: list[tuple[int, float]]
    iterations: int
    seconds: float


# --------------------------------------------------------------------------- the update


def _named_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _count_weighted(view: AttackerView) -> tuple[int, int]:
    return view.n, view.n - view.k


def _batch_weighted(view: AttackerView) -> tuple[int, int]:
    b = view.finetune_batch_size
    if b is None:
        raise ValueError("exact_update 'batch_weighted' needs the fine-tune batch size (finetune_batch_size) "
                         "in the view")
    return min(view.n, b), min(view.n - view.k, b)


# Exact unlearning's Δ = −(a(θ−θ₀) − b(θ_u−θ₀)): name -> (a, b) from the view.
EXACT_UPDATES: dict[str, Callable[[AttackerView], tuple[int, int]]] = {
    "count_weighted": _count_weighted,
    "batch_weighted": _batch_weighted,
}


def observed_update(
    view: AttackerView, dtype: torch.dtype = torch.float64, exact_update: str = "count_weighted"
) -> dict[str, torch.Tensor]:
    """Δ per parameter, oriented along +Σ_X ∇CE at the point where dummy
    gradients are taken (θ for approx, θ₀ for exact; `exact_update` names
    the exact estimator, a key of EXACT_UPDATES)."""
    theta = _named_params(view.theta_original)
    theta_u = _named_params(view.theta_unlearned)
    if view.method == "approx":
        return {n: theta_u[n].detach().to(dtype) - theta[n].detach().to(dtype) for n in theta}
    if view.method == "exact":
        if view.theta_pretrained is None:
            raise ValueError("exact unlearning's update needs θ₀ (theta_pretrained) in the view")
        one_of("exact_update", exact_update, EXACT_UPDATES)
        theta0 = _named_params(view.theta_pretrained)
        a, b = EXACT_UPDATES[exact_update](view)
        out = {}
        for name in theta:
            t0 = theta0[name].detach().to(dtype)
            out[name] = -(a * (theta[name].detach().to(dtype) - t0) - b * (theta_u[name].detach().to(dtype) - t0))
        return out
    raise ValueError(f"unknown unlearning method {view.method!r}; expected approx or exact")


def _attack_point(view: AttackerView) -> nn.Module:
    return view.theta_original if view.method == "approx" else view.theta_pretrained


# --------------------------------------------------------------------------- labels


def _output_layer(delta: dict[str, torch.Tensor], num_classes: int) -> tuple[str | None, str | None]:
    """Names of the output layer's bias and weight: the last parameters shaped
    [C] and [C, h]."""
    bias = weight = None
    for name, d in delta.items():
        if d.dim() == 1 and d.shape[0] == num_classes:
            bias = name
        elif d.dim() == 2 and d.shape[0] == num_classes:
            weight = name
    return bias, weight


def _label_scores(delta: dict[str, torch.Tensor], num_classes: int) -> torch.Tensor:
    """Per class, the output bias's change (or the weight rows' summed change): about −(1 − p_y) per removed
    sample of class y, positive where no removed sample is."""
    bias, weight = _output_layer(delta, num_classes)
    if bias is not None:
        return delta[bias].double()
    if weight is not None:
        return delta[weight].double().sum(1)
    raise ValueError("analytic labels need an output layer with `num_classes` outputs")


def analytic_labels(delta: dict[str, torch.Tensor], num_classes: int, k: int) -> torch.Tensor:
    """Labels read from the output layer's update.

    With Δ ∝ Σ_X ∇CE, the output bias moves by Σ_i (p_i − e_{y_i}): negative
    exactly at the removed samples' classes (for k = 1, the unique negative
    entry), positive elsewhere. Without a bias, the rows of ΔW = Σ_i (p_i −
    e_{y_i}) h_iᵀ with h ≥ 0 (ReLU features) give the same signs by row sum.

    For k > 1, the k most negative classes when at least k are negative;
    otherwise repeats are allowed: k is split over the negative classes in
    proportion to their magnitude (largest remainder, at least one each),
    since each sample of a class contributes about −(1 − p_y) to its entry.
    """
    score = _label_scores(delta, num_classes)
    order = torch.argsort(score)
    negative = order[score[order] < 0]
    if len(negative) == 0:
        negative = order[:1]
    if len(negative) >= k:
        return order[:k].sort().values.long()
    mags = -score[negative]
    mags = mags / mags.sum()
    counts = torch.ones(len(negative), dtype=torch.long)
    extra = k - len(negative)
    share = mags * extra
    counts += share.floor().long()
    remainder = share - share.floor()
    for i in torch.argsort(remainder, descending=True)[: k - int(counts.sum())]:
        counts[i] += 1
    return torch.repeat_interleave(negative, counts).sort().values.long()


# --------------------------------------------------------------------------- the model as a function


class _EvalBatchNorm(nn.Module):
    """Eval-mode batch norm as its affine map (same parameter names): torch.func.vmap
    has no fast batching rule for F.batch_norm, and the affine form is as cheap."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.weight = bn.weight
        self.bias = bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.eps = bn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.dim() - 2)
        inv = torch.rsqrt(self.running_var + self.eps)
        scale = inv if self.weight is None else self.weight * inv
        shift = -self.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        return x * scale.reshape(shape) + shift.reshape(shape)


class _Tape:
    """The activation pattern of one forward pass (ReLU masks, max-pool choices), recorded and then replayed
    in a forward pass at other parameters: the network restricted to that pattern is smooth in θ, so a
    finite difference in θ differentiates the same piece as autograd does (a ReLU that flipped between the
    two passes would add a jump divided by the step)."""

    def __init__(self):
        self.mode: str | None = None  # None | "record" | "replay"
        self.items: list[torch.Tensor] = []
        self.at = 0

    @contextmanager
    def recording(self):
        self.mode, self.items = "record", []
        try:
            yield
        finally:
            self.mode = None

    @contextmanager
    def replaying(self):
        self.mode, self.at = "replay", 0
        try:
            yield
        finally:
            self.mode = None

    def next(self) -> torch.Tensor:
        self.at += 1
        return self.items[self.at - 1]


class _TapedReLU(nn.Module):
    def __init__(self, tape: _Tape):
        super().__init__()
        self.tape = tape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tape.mode == "replay":
            return x * self.tape.next()
        out = F.relu(x)
        if self.tape.mode == "record":
            self.tape.items.append((out > 0).to(out.dtype))
        return out


class _TapedMaxPool2d(nn.Module):
    def __init__(self, pool: nn.MaxPool2d, tape: _Tape):
        super().__init__()
        self.args = (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
        self.tape = tape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tape.mode == "replay":
            idx = self.tape.next()
            return x.flatten(2).gather(2, idx.flatten(2)).view_as(idx)
        if self.tape.mode == "record":
            out, idx = F.max_pool2d(x, *self.args, return_indices=True)
            self.tape.items.append(idx)
            return out
        return F.max_pool2d(x, *self.args)


# Piecewise-linear modules a finite-difference step could not replay (the registry's models use none).
_UNTAPED = (nn.LeakyReLU, nn.PReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Threshold,
            nn.Hardshrink, nn.Softshrink, nn.MaxPool1d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
            nn.AdaptiveMaxPool3d)


def _functional_copy(model: nn.Module, tape: _Tape) -> nn.Module:
    """A private eval-mode copy with batch norm as an affine op and ReLU / max-pool taped (the same
    values; see `_Tape`); the view's model is untouched."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, _EvalBatchNorm(child))
            elif isinstance(child, nn.ReLU):
                setattr(parent, name, _TapedReLU(tape))
            elif isinstance(child, nn.MaxPool2d) and not child.return_indices:
                setattr(parent, name, _TapedMaxPool2d(child, tape))
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _tv(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV as in the reference: mean|dx| + mean|dy| (images [.., H, W])."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


class _Objective:
    """1 − cos(∇_θ CE(f(x), y), Δ) + λ·TV(x) and its gradient in x, one dummy
    batch at a time (`step`) or R restarts at once (`batched_step`, torch.func).
    With a `guide` (layer name, â from `layered_features`), a step given a
    weight β > 0 adds β‖φ(x) − â‖²/‖â‖², φ(x) the input of that layer; `value`
    is always the plain objective, so guided and plain restarts compare alike."""

    def __init__(self, model: nn.Module, delta: dict[str, torch.Tensor], tv: float, image: bool,
                 guide: tuple[str, torch.Tensor] | None = None, finite_difference: bool = False):
        self.tape = _Tape()
        self.model = _functional_copy(model, self.tape)
        self.finite_difference = finite_difference
        self.shifted = None
        if self.finite_difference:
            untaped = sorted({type(m).__name__ for m in self.model.modules() if isinstance(m, _UNTAPED)})
            if untaped:
                raise ValueError(f"attack.feature_recovery.second_order=finite_difference cannot replay "
                                 f"{', '.join(untaped)}: use double_backward")
            # A second copy, replaying the first's tape, holds θ + h·u (in place: no functional_call overhead).
            self.shifted = _functional_copy(model, self.tape).requires_grad_(False)
        self.params = dict(self.model.named_parameters())
        self.names = list(self.params)
        self.buffers = dict(self.model.named_buffers())
        dev = next(iter(self.params.values())).device
        dt = next(iter(self.params.values())).dtype
        norm = torch.sqrt(sum((d.double() ** 2).sum() for d in delta.values()))
        if not torch.isfinite(norm) or norm == 0:
            raise ValueError("the observed update Δ is zero or not finite: nothing to invert")
        # A unit Δ, flattened once; float32 suffices once the large cancelling terms are gone.
        self.delta = torch.cat([(delta[n].double() / norm).reshape(-1) for n in self.names]).to(dev, dt)
        self.delta_parts = self.delta.split([self.params[n].numel() for n in self.names])
        self.tv = tv if image else 0.0
        if finite_difference:
            # The step's size ‖h·u‖: √(machine epsilon)·‖θ‖ balances truncation and rounding.
            theta_norm = float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in self.params.values())))
            self.fd_scale = torch.finfo(dt).eps ** 0.5 * theta_norm
        self._features: list[torch.Tensor] = []
        self.target = None
        if guide is not None:
            name, target = guide
            self.target = target.to(dev, dt)
            self.target_norm = (self.target * self.target).sum()
            module = dict(self.model.named_modules())[name]
            module.register_forward_pre_hook(self._record)

    def _record(self, _, args) -> None:
        self._features.append(args[0])

    def _loss(self, g: list[torch.Tensor] | tuple, x: torch.Tensor) -> torch.Tensor:
        flat = torch.cat([gi.reshape(-1) for gi in g])
        loss = 1 - flat @ self.delta / (flat.norm() + 1e-12)
        if self.tv:
            loss = loss + self.tv * _tv(x)
        return loss

    def _forward(self, x: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor]):
        """(logits, the guided layer's input flattened or None) from one forward pass."""
        self._features.clear()
        out = forward(x)
        feats = self._features[-1].reshape(-1) if self.target is not None else None
        self._features.clear()
        return out, feats

    def _guided(self, loss: torch.Tensor, feats: torch.Tensor | None, weight) -> torch.Tensor:
        if self.target is None:
            return loss
        return loss + weight * ((feats - self.target) ** 2).sum() / self.target_norm

    def step(self, x: torch.Tensor, y: torch.Tensor, weight: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, ∇x loss) for one dummy batch x [k, ...]; loss includes the guide term when weight > 0."""
        if self.finite_difference:
            return self._fd_step(x, y, weight)
        x = x.detach().requires_grad_(True)
        params = [self.params[n] for n in self.names]
        out, feats = self._forward(x, self.model)
        g = torch.autograd.grad(F.cross_entropy(out.double(), y), params, create_graph=True)
        loss = self._loss(g, x)
        if weight:
            loss = self._guided(loss, feats, weight)
        (gx,) = torch.autograd.grad(loss, x)
        return loss.detach(), gx

    def _fd_step(self, x: torch.Tensor, y: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """`step` without the double backward. With u = ∂(1 − cos)/∂g the cosine's ∇x is ∇x⟨g(x), u⟩, the
        derivative of ∇x CE along u in θ: one pass at θ + h·u under the first pass's activation pattern
        gives it as (∇x CE(θ + h·u) − ∇x CE(θ)) / h. Two forward+backward passes, the second without
        weight gradients, against a double backward's ~2.3 (relative error ~1e-3 in float32)."""
        x = x.detach().requires_grad_(True)
        params = [self.params[n] for n in self.names]
        with self.tape.recording():
            out, feats = self._forward(x, self.model)
        ce = F.cross_entropy(out.double(), y)
        guided = bool(weight) and self.target is not None
        *g, gx0 = torch.autograd.grad(ce, params + [x], retain_graph=guided)
        # Per tensor, no 2.9M-entry temporaries: u = a·g − b·Δ with ‖Δ‖ = 1, so ‖u‖ = √(1 − cos²)/‖g‖.
        flat = [gi.reshape(-1) for gi in g]
        norm = float(sum(torch.dot(f, f) for f in flat)) ** 0.5 + 1e-12
        cos = float(sum(torch.dot(f, d) for f, d in zip(flat, self.delta_parts))) / norm
        loss = torch.tensor(1 - cos, dtype=x.dtype, device=x.device)
        gx = torch.zeros_like(x)
        u_norm = max(1 - cos * cos, 0.0) ** 0.5 / norm
        if u_norm > 0:
            h = self.fd_scale / u_norm
            with torch.no_grad():
                for p, q, f, d in zip(params, self.shifted.parameters(), flat, self.delta_parts):
                    torch.add(p, f.view_as(p), alpha=h * cos / norm**2, out=q)
                    q.add_(d.view_as(p), alpha=-h / norm)
            x1 = x.detach().requires_grad_(True)
            with self.tape.replaying():
                out1 = self.shifted(x1)
            (gx1,) = torch.autograd.grad(F.cross_entropy(out1.double(), y), x1)
            gx = (gx1 - gx0) / h
        # TV and the guide term are first-order in x: plain autograd.
        extra = self.tv * _tv(x) if self.tv else x.new_zeros(())
        if guided:
            extra = self._guided(extra, feats, weight)
        if extra.requires_grad:
            gx = gx + torch.autograd.grad(extra, x)[0]
        return loss + extra.detach(), gx

    def _gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.enable_grad():
            out, _ = self._forward(x, self.model)
            return torch.autograd.grad(F.cross_entropy(out.double(), y), [self.params[n] for n in self.names])

    @torch.no_grad()
    def value(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """The plain objective (no guide term)."""
        return float(self._loss(self._gradients(x, y), x))

    @torch.no_grad()
    def gradient(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """∇_θ CE(f(x), y) of a dummy batch, flattened in the order of `delta` (float64)."""
        return torch.cat([g.reshape(-1).double() for g in self._gradients(x, y)])

    def batched_step(
        self, xs: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(losses [R], ∇x [R, k, ...]) for R restarts at once; weights [R] are each restart's β (default 0)."""
        params = {n: p.detach() for n, p in self.params.items()}
        if weights is None:
            weights = torch.zeros(len(xs), dtype=xs.dtype, device=xs.device)

        def ce(p, x):
            out, feats = self._forward(x, lambda v: functional_call(self.model, (p, self.buffers), (v,)))
            return F.cross_entropy(out.double(), y), (out.new_zeros(()) if feats is None else feats)

        def obj(x, w):
            g, feats = torch.func.grad(ce, has_aux=True)(params, x)
            return self._guided(self._loss([g[n] for n in self.names], x), feats, w)

        gx, loss = torch.func.vmap(torch.func.grad_and_value(obj))(xs, weights.to(xs.dtype))
        return loss, gx


# --------------------------------------------------------------------------- closed form


def _first_linear(model: nn.Module) -> tuple[str, str] | None:
    """Names of (weight, bias) of the first parametrised layer if it is an
    nn.Linear with a bias (after at most a Flatten)."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            if mod.bias is None:
                return None
            prefix = f"{name}." if name else ""
            return f"{prefix}weight", f"{prefix}bias"
        if any(True for _ in mod.parameters(recurse=False)):
            return None
    return None


def analytic_input(model: nn.Module, delta: dict[str, torch.Tensor], input_shape: tuple[int, ...]) -> torch.Tensor | None:
    """One sample through a first layer z = Wu + b (u = (x − mean)/std, the
    model's own normalisation): ∂L/∂W = (∂L/∂b) uᵀ, so u = ΔW_i/Δb_i for every
    row i; rows are combined by least squares (weights Δb_i²). Returns x
    [*input_shape] in float64, or None when the model has no such layer."""
    names = _first_linear(model)
    if names is None:
        return None
    w, b = delta[names[0]].double(), delta[names[1]].double()
    denom = (b * b).sum()
    if denom == 0 or w.shape[1] != math.prod(input_shape):
        return None
    u = ((b[:, None] * w).sum(0) / denom).reshape(input_shape)
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    if isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor):
        u = u * std.double() + mean.double()
    return u


def _relu_stack(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """(name, layer) of each Conv2d/Linear, in order, when the model's body is an
    nn.Sequential of Conv2d/Linear, ReLU and Flatten with a ReLU after every
    parametrised layer but the last, which has a bias; None otherwise."""
    body = getattr(model, "body", model)
    if not isinstance(body, nn.Sequential):
        return None
    prefix = "body." if body is not model else ""
    layers: list[tuple[str, nn.Module]] = []
    relu_after: list[bool] = []
    for name, mod in body.named_children():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            layers.append((prefix + name, mod))
            relu_after.append(False)
        elif isinstance(mod, nn.ReLU) and relu_after and not relu_after[-1]:
            relu_after[-1] = True
        elif not isinstance(mod, nn.Flatten):
            return None
    if not layers or relu_after[-1] or not all(relu_after[:-1]) or layers[-1][1].bias is None:
        return None
    return layers


def _cgls(
    op: Callable, adjoint: Callable, rhs: list[torch.Tensor], x: torch.Tensor, iters: int, tol: float = 1e-10
) -> torch.Tensor:
    """Least squares min ‖op(x) − rhs‖² by conjugate gradients on the normal equations (CGLS), stopped once
    ‖opᵀ r‖² falls below tol × its start: past convergence, rounding makes CGLS's iterates blow up."""
    r = [b - a for b, a in zip(rhs, op(x))]
    s = adjoint(r)
    p, gamma = s.clone(), (s * s).sum()
    stop = tol * gamma
    for _ in range(iters):
        q = op(p)
        qq = sum((qi * qi).sum() for qi in q)
        if gamma <= stop or qq == 0:
            break
        alpha = gamma / qq
        x = x + alpha * p
        r = [ri - alpha * qi for ri, qi in zip(r, q)]
        s = adjoint(r)
        gamma_next = (s * s).sum()
        p, gamma = s + (gamma_next / gamma) * p, gamma_next
    return x


def _solve_layer_input(
    layer: nn.Module, err: torch.Tensor, out: torch.Tensor, mask: torch.Tensor, dw: torch.Tensor,
    in_shape: torch.Size, iters: int,
) -> torch.Tensor:
    """The input a of a conv/linear layer (float64) from the gradient equations dw = ∂⟨err, W ⋆ a⟩/∂W and
    the forward equations W ⋆ a + b = out where mask is 1, each block scaled to unit norm, by CGLS."""
    weight = layer.weight.detach().requires_grad_(True)
    bias = 0.0 if layer.bias is None else layer.bias.detach().reshape((-1,) + (1,) * (out.dim() - 2))
    if isinstance(layer, nn.Conv2d):
        def linear(u: torch.Tensor) -> torch.Tensor:
            return F.conv2d(u, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    else:
        def linear(u: torch.Tensor) -> torch.Tensor:
            return F.linear(u, weight)
    g_scale = dw.norm() + 1e-300
    f_scale = (out * mask).norm() + 1e-300

    def op(u: torch.Tensor) -> list[torch.Tensor]:
        lin = linear(u)
        (gw,) = torch.autograd.grad((lin * err).sum(), weight, create_graph=True)
        return [gw / g_scale, mask * lin / f_scale]

    def adjoint(r: list[torch.Tensor]) -> torch.Tensor:
        u = torch.zeros(in_shape, dtype=dw.dtype, device=dw.device, requires_grad=True)
        (gu,) = torch.autograd.grad(sum((o * ri).sum() for o, ri in zip(op(u), r)), u)
        return gu

    def forward(u: torch.Tensor) -> list[torch.Tensor]:
        return [t.detach() for t in op(u)]

    rhs = [dw / g_scale, mask * (out - bias) / f_scale]
    with torch.enable_grad():
        x0 = torch.zeros(in_shape, dtype=dw.dtype, device=dw.device)
        return _cgls(forward, adjoint, [t.detach() for t in rhs], x0, iters).reshape(-1)


def _head_factors(
    weight: torch.Tensor, bias: torch.Tensor, dw: torch.Tensor, db: torch.Tensor, labels: torch.Tensor, iters: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k samples' inputs A [k, h] to a linear head z = Wa + b and their errors E [k, C], from the head's update
    ΔW = Σ_j e_j a_jᵀ, Δb = Σ_j e_j with e_j = c·(softmax(W a_j + b) − onehot(y_j)) (all float64).

    The head is linear, so E is a function of A: A is fitted by L-BFGS to 1 − cos([ΣE_jA_jᵀ, ΣE_j], [ΔW, Δb])
    (c cancels), from the rows ΔW_y/Δb_y of each sample's class (exact for one sample per class when the
    others put no mass on it), then clamped at 0 (post-ReLU features); c follows by least squares on Δb.
    Samples whose own error is tiny (p_y ≈ 1) are swamped by the others and come back poorly."""
    onehot = F.one_hot(labels.long(), weight.shape[0]).to(weight)
    pooled = (db[:, None] * dw).sum(0) / (db * db).sum()
    start = torch.stack([dw[c] / db[c] if db[c] < 0 else pooled for c in labels.tolist()]).clamp_min(0)
    target = torch.cat([dw / dw.norm(), (db / db.norm())[:, None]], 1)

    def errors(a: torch.Tensor) -> torch.Tensor:
        return torch.softmax(a @ weight.T + bias, 1) - onehot

    def residual(a: torch.Tensor) -> torch.Tensor:
        e = errors(a)
        m = torch.cat([(e.T @ a) / dw.norm(), (e.sum(0) / db.norm())[:, None]], 1)
        return 1 - (m * target).sum() / (m.norm() * target.norm())

    a = start.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([a], lr=1, max_iter=iters, history_size=50, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-14, tolerance_change=1e-16)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = residual(a)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    a = a.detach().clamp_min(0)
    e = errors(a)
    scale = (e.sum(0) @ db) / (e.sum(0) @ e.sum(0))
    return a, scale * e


def layered_features(
    model: nn.Module, delta: dict[str, torch.Tensor], input_shape: tuple[int, ...], depth: int,
    labels: torch.Tensor | None = None, iters: int | None = None, tau: float = 1e-3, head_iters: int = 500,
) -> tuple[str, torch.Tensor] | None:
    """The removed samples' activations read from Δ layer by layer (R-GAP: Zhu & Blaschko, ICLR 2021).

    With Δ = c·∇CE (c > 0 unknown) and layer l: z_l = W_l ⋆ a_{l−1} + b_l,
    a_l = relu(z_l), write e_l = c·∂CE/∂z_l. Then ΔW_l = ∂⟨e_l, W_l ⋆ a_{l−1}⟩/∂W_l
    (an outer product, summed over positions for a conv) and Δb_l = Σ e_l, so:
    - the head: e_m = Δb_m and a_{m−1} = Σ_i Δb_i ΔW_i / ‖Δb‖² exactly;
    - below it: e_l = (W_{l+1}ᵀ e_{l+1}) ⊙ 1[a_l > τ·max a_l], and a_{l−1} is
      the least-squares solution of the gradient equations ΔW_l = ∂⟨e_l, W_l ⋆ a⟩/∂W_l
      and the forward equations W_l ⋆ a + b_l = a_l where a_l > 0 (each block
      scaled by its norm; CGLS), clamped at 0. c cancels throughout.
    For k = len(labels) > 1 samples the head's update is a sum of k outer
    products: `_head_factors` fits each sample's a_{m−1} and e_m (identifiable
    for k < C only: each e_j sums to 0); below the head the same equations hold
    with a batch of k (the gradient equations summed over it, the forward
    equations per sample).
    `depth` counts parametrised layers down from the head (1: a_{m−1}); the
    recursion stops at the model's input. CGLS runs `iters` steps: 300 for one
    sample, 100 for several (fewer steps regularise the poorly held directions
    of samples whose own error is small; at 300 they blew up to 5-7× the true
    norm). Returns (name of the layer whose input was solved, that input
    [k, ...] flattened in the order of `labels`, float64), or None for models
    that are not ReLU conv/linear stacks, whose head did not move, k ≥ C, or
    whose solve did not stay finite.
    """
    layers = _relu_stack(model)
    if layers is None:
        return None
    k = 1 if labels is None else len(labels)
    if k >= layers[-1][1].out_features:
        return None  # e_j sum to 0, so ΔW has rank ≤ C − 1: k ≥ C samples' factors are not identifiable
    if iters is None:
        iters = 300 if k == 1 else 100
    model = copy.deepcopy(model).double().eval()
    layers = _relu_stack(model)
    assert layers is not None
    f64 = dict(dtype=torch.float64, device=next(model.parameters()).device)
    in_shapes: list[torch.Size] = []
    out_shapes: list[torch.Size] = []

    def record(_, args, out) -> None:
        in_shapes.append(args[0].shape)
        out_shapes.append(out.shape)

    hooks = [m.register_forward_hook(record) for _, m in layers]
    with torch.no_grad():
        model(torch.zeros(k, *input_shape, **f64))
    for h in hooks:
        h.remove()
    head, head_layer = layers[-1]
    db, dw = delta[f"{head}.bias"].to(**f64), delta[f"{head}.weight"].to(**f64)
    if not (db * db).sum() > 0:
        return None
    if k == 1:
        err = db.reshape(1, -1)
        a = (db[:, None] * dw).sum(0) / (db * db).sum()
    else:
        a, err = _head_factors(head_layer.weight.detach(), head_layer.bias.detach(), dw, db, labels.to(f64["device"]),
                               head_iters)
    last = len(layers) - 1
    stop = max(last - depth + 1, 0)
    for li in range(last - 1, stop - 1, -1):
        name, layer = layers[li]
        a_l = a.reshape(out_shapes[li]).clamp_min(0)
        peak = a_l.reshape(k, -1).max(1).values.reshape((k,) + (1,) * (a_l.dim() - 1))
        mask = (a_l > tau * peak).double()
        with torch.enable_grad():
            z = torch.zeros(in_shapes[li + 1], **f64, requires_grad=True)
            (back,) = torch.autograd.grad((layers[li + 1][1](z) * err).sum(), z)
        err = back.reshape(out_shapes[li]) * mask
        a = _solve_layer_input(layer, err, a_l, mask, delta[f"{name}.weight"].to(**f64), in_shapes[li], iters)
        if li > 0:
            a = a.clamp_min(0)
    if not torch.isfinite(a).all():
        return None  # the head fit ran off (seen with wrongly inferred, repeated labels under a defence)
    return layers[stop][0], a


# --------------------------------------------------------------------------- the attack


@dataclass
class _Restart:
    x: torch.Tensor
    opt: torch.optim.Optimizer
    best_loss: float = math.inf
    best_x: torch.Tensor | None = None
    ref_loss: float = math.inf  # best loss when the patience counter was last reset
    last_improved: int = 0
    steps: int = 0
    active: bool = True
    guide: float = 0.0  # β of the guide term on this restart's objective (0 = plain)
    curve: list[tuple[int, float]] = field(default_factory=list)


def _resolve_labels(cfg: Config, delta, view: AttackerView, labels: torch.Tensor | None) -> torch.Tensor:
    if cfg.labels == "analytic":
        return analytic_labels(delta, view.num_classes, view.k)
    if labels is None:
        raise ValueError(f"labels={cfg.labels!r} needs the labels passed in (use 'analytic' otherwise)")
    labels = torch.as_tensor(labels).long().reshape(-1)
    if len(labels) != view.k:
        raise ValueError(f"got {len(labels)} labels for k={view.k} removed samples")
    return labels


def _init(cfg: Config, shape: tuple[int, ...], gen: torch.Generator, boxed: bool) -> torch.Tensor:
    if cfg.init == "randn_clamped":
        x = torch.randn(shape, generator=gen)
    elif cfg.init == "uniform":
        x = torch.rand(shape, generator=gen) if boxed else torch.randn(shape, generator=gen)
    else:
        x = (0.5 if boxed else 0.0) + 0.01 * torch.randn(shape, generator=gen)
    return x.clamp(0, 1) if boxed else x


def recover(
    view: AttackerView,
    cfg: Config,
    seed: int,
    labels: torch.Tensor | None = None,
    progress: Progress | None = None,
    *,
    snapshot: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[Result, dict]:
    """Recover the k removed samples' features from (θ, θ_u[, θ₀]).

    Promises:
    - uses only `view` (never the forget set) and, for labels="oracle" or
      "inferred", the `labels` tensor [k] the caller passes (ignored for
      "analytic", which reads them from Δ);
    - returns a `Result` whose reconstruction is [k, *view.input_shape], float32
      on the CPU, in [0,1] for images (box "unit"), unbounded for tabular rows;
      `labels` are the labels the dummies were optimised with;
    - the chosen restart is the one with the lowest value of the plain
      objective 1 − cos + λ·TV (guided restarts' guide term left out),
      re-evaluated at each restart's best iterate;
    - deterministic for a given seed on a given device and thread count;
    - `progress(iteration, loss)` is called once per round of steps
      (iteration ≤ cfg.iterations; loss = best so far over restarts);
      `snapshot(iteration, x)` (benchmarks) gets the current best iterate of
      the leading restart every `record_every` rounds.

    For k > 1, "joint" (`cfg.k_strategy`, the reference) optimises all k
    dummies against Δ at once; "backfit" adds one more restart: `_backfit`'s
    one-sample-at-a-time estimate, then refined jointly at `cfg.backfit_lr`,
    which wins when its plain objective is lower.

    `stats` holds timing and bookkeeping: steps (all restarts), ms_per_step,
    stopped (why each restart ended), delta_norm, batched, guide_layer (the
    layer whose input guided restart(s) matched, or None); under "backfit",
    steps and ms_per_step count every single-sample attack too, and
    backfit_weights (each sample's least-squares weight), backfit_loss and
    backfit_chosen say how the backfitted restart fared.
    """
    started = time.perf_counter()
    dtype = torch.float64 if cfg.delta_dtype == "float64" else torch.float32
    delta = observed_update(view, dtype, cfg.exact_update)
    point = _attack_point(view)
    y = _resolve_labels(cfg, delta, view, labels).to(next(point.parameters()).device)
    result, stats = _invert(point, delta, y, view.input_shape, cfg, seed, progress, snapshot)
    if view.k > 1 and cfg.k_strategy == "backfit":
        start, steps, weights = _backfit(point, delta, y, view, cfg, seed, progress)
        polish = cfg.model_copy(update={"lr": cfg.backfit_lr, "restarts": 1, "prune_after": 0})
        refined, refined_stats = _invert(point, delta, y, view.input_shape, polish, seed, progress, snapshot, start)
        chosen = refined.loss < result.loss
        losses, total = result.restart_losses + [refined.loss], stats["steps"] + steps + refined_stats["steps"]
        if chosen:
            result, stats = refined, refined_stats
            result.iterations += steps
        result.restart_losses = losses
        stats.update(steps=total, backfit_weights=weights, backfit_chosen=chosen, backfit_loss=refined.loss)
    result.label_source = cfg.labels
    result.seconds = time.perf_counter() - started
    stats["ms_per_step"] = 1000 * result.seconds / max(stats["steps"], 1)
    return result, stats


def _invert(
    point: nn.Module,
    delta: dict[str, torch.Tensor],
    y: torch.Tensor,
    input_shape: tuple[int, ...],
    cfg: Config,
    seed: int,
    progress: Progress | None = None,
    snapshot: Callable[[int, torch.Tensor], None] | None = None,
    start: torch.Tensor | None = None,
) -> tuple[Result, dict]:
    """Gradient inversion of Δ at `point` for len(y) dummies labelled y: `recover`'s promises, restarts and
    all; restart 0 begins at `start` [k, *input_shape] when given."""
    started = time.perf_counter()
    k = len(y)
    device = next(point.parameters()).device
    image = len(input_shape) >= 2
    boxed = cfg.box == "unit" or (cfg.box == "auto" and image)
    spec = OPTIMIZERS[cfg.optimizer]
    shape = (k, *input_shape)
    gen = torch.Generator().manual_seed(seed)
    batched = cfg.batch_restarts == "yes" or (cfg.batch_restarts == "auto" and device.type == "cuda")

    starts = [_init(cfg, shape, gen, boxed) for _ in range(cfg.restarts)]
    used_analytic = False
    if start is not None:
        starts[0] = start.float()
    elif cfg.analytic_init and k == 1:
        x0 = analytic_input(point, delta, input_shape)
        if x0 is not None and torch.isfinite(x0).all():
            starts[0] = (x0.clamp(0, 1) if boxed else x0).float().unsqueeze(0)
            used_analytic = True
    # The closed-form input, where there is one, is exact: no guide is needed then.
    guide = None
    if cfg.guide > 0 and cfg.guide_restarts > 0 and not used_analytic:
        if k == 1:
            guide = layered_features(point, delta, input_shape, cfg.guide_depth)
        elif cfg.joint_guide_depth:
            guide = layered_features(point, delta, input_shape, cfg.joint_guide_depth, y)
    objective = _Objective(point, delta, cfg.tv, image, guide, cfg.second_order == "finite_difference")

    runs = []
    for i, x0 in enumerate(starts):
        x = x0.to(device).requires_grad_(True)
        beta = cfg.guide if guide is not None and i < cfg.guide_restarts else 0.0
        runs.append(_Restart(x=x, opt=spec.cls([x], lr=cfg.lr, **spec.kwargs), guide=beta))
    milestones = sorted({max(1, round(m * cfg.iterations)) for m in cfg.milestones})
    stopped: list[str] = ["max_iterations"] * len(runs)
    total_steps = 0

    it = 0
    for it in range(1, cfg.iterations + 1):
        active = [i for i, r in enumerate(runs) if r.active]
        if not active:
            it -= 1
            break
        lr = cfg.lr * cfg.gamma ** sum(it > m for m in milestones)
        fade = 1 - (it - 1) / cfg.iterations  # the guide's weight falls linearly towards 0
        if batched and len(active) > 1:
            weights = torch.tensor([runs[i].guide * fade for i in active], device=device)
            losses, grads = objective.batched_step(torch.stack([runs[i].x.detach() for i in active]), y, weights)
            pairs = list(zip(active, losses.tolist(), grads))
        else:
            pairs = []
            for i in active:
                loss, gx = objective.step(runs[i].x, y, runs[i].guide * fade)
                pairs.append((i, float(loss), gx))
        for i, loss, gx in pairs:
            r = runs[i]
            r.steps += 1
            total_steps += 1
            if loss < r.best_loss:
                r.best_loss = loss
                r.best_x = r.x.detach().clone()
            if r.best_loss < r.ref_loss * (1 - cfg.min_improvement):
                r.ref_loss = r.best_loss
                r.last_improved = it
            if it % cfg.record_every == 0 or it == 1:
                r.curve.append((it, loss))
            if cfg.early_stop and it - r.last_improved >= cfg.patience:
                r.active = False
                stopped[i] = f"plateau@{it}"
                continue
            for group in r.opt.param_groups:
                group["lr"] = lr
            r.x.grad = gx.sign() if spec.signed else gx
            r.opt.step()
            if boxed:
                with torch.no_grad():
                    r.x.clamp_(0, 1)
        if cfg.prune_after and it == cfg.prune_after:
            # Guided and plain restarts optimise different objectives: keep the best of each kind.
            for guided in (True, False):
                alive = sorted((i for i, r in enumerate(runs) if r.active and (r.guide > 0) == guided),
                               key=lambda i: runs[i].best_loss)
                for i in alive[cfg.keep :]:
                    runs[i].active = False
                    stopped[i] = f"pruned@{it}"
        if progress is not None:
            progress(it, min(r.best_loss for r in runs))
        if snapshot is not None and it % cfg.record_every == 0:
            lead = min(runs, key=lambda r: r.best_loss)
            snapshot(it, lead.best_x.float().cpu())

    # Choose by the plain objective (for guided restarts, without the guide term), re-evaluated at each
    # restart's best iterate.
    finals = []
    for r in runs:
        x = r.best_x if r.best_x is not None else r.x.detach()
        value = objective.value(x, y)
        finals.append(value if math.isfinite(value) else math.inf)
    best = min(range(len(runs)), key=lambda i: finals[i])
    winner = runs[best]
    recon = (winner.best_x if winner.best_x is not None else winner.x.detach()).float().cpu()
    seconds = time.perf_counter() - started
    result = Result(
        reconstruction=recon,
        labels=y.cpu(),
        label_source=cfg.labels,
        loss=finals[best],
        restart_losses=finals,
        curve=winner.curve,
        iterations=winner.steps,
        seconds=seconds,
    )
    stats = {
        "steps": total_steps,
        "ms_per_step": 1000 * seconds / max(total_steps, 1),
        "stopped": stopped,
        "best_restart": best,
        "analytic_init": used_analytic,
        "guide_layer": guide[0] if guide is not None else None,
        "batched": batched,
        "delta_norm": float(torch.sqrt(sum((d.double() ** 2).sum() for d in delta.values()))),
        "rounds": it,
    }
    return result, stats


def _backfit(
    point: nn.Module,
    delta: dict[str, torch.Tensor],
    y: torch.Tensor,
    view: AttackerView,
    cfg: Config,
    seed: int,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, int, list[float]]:
    """k > 1 removed samples one at a time (backfitting, as for additive models).

    Δ ∝ Σ_j g(x_j, y_j). Given estimates x̂_m of the others, Δ − Σ_{m≠i} c_m g(x̂_m) is close to sample i's
    gradient alone, which the single-sample attack (its closed-form start and layered guide included)
    inverts better, on a well-trained model, than k dummies fitted at once. c are least-squares weights of
    the dummies' own gradients against Δ, free per sample, so a sample recovered poorly gets a small weight
    instead of corrupting the others' residuals. Samples are first peeled off in the order of their label's
    output-bias change (most negative first: the largest 1 − p_y, so the largest gradient), each against
    what those before it leave unexplained, then each is solved again `cfg.backfit_rounds` times.
    Returns the k estimates [k, *input_shape] in the order of y, the steps taken, and the weights c."""
    device = next(point.parameters()).device
    k = len(y)
    objective = _Objective(point, delta, cfg.tv, len(view.input_shape) >= 2)
    names = objective.names
    target = torch.cat([delta[n].double().reshape(-1) for n in names]).to(device)
    target = target / target.norm()
    sizes = [delta[n].numel() for n in names]
    scores = _label_scores(delta, view.num_classes)
    order = sorted(range(k), key=lambda i: float(scores[y[i]]))
    xs: list[torch.Tensor | None] = [None] * k
    grads: list[torch.Tensor | None] = [None] * k

    def fit() -> tuple[list[int], torch.Tensor]:
        known = [m for m in range(k) if grads[m] is not None]
        basis = torch.stack([grads[m] for m in known], 1)
        return known, torch.nan_to_num(torch.linalg.lstsq(basis, target.unsqueeze(1)).solution.squeeze(1))

    steps = 0
    for p in range(1 + cfg.backfit_rounds):
        for i in order:
            residual = target
            if any(g is not None for g in grads):
                known, weights = fit()
                residual = target - sum(w * grads[m] for m, w in zip(known, weights) if m != i)
            part = {n: r.reshape(delta[n].shape) for n, r in zip(names, residual.split(sizes))}
            result, stats = _invert(point, part, y[i : i + 1], view.input_shape, cfg, seed + 101 * (p * k + i),
                                    progress)
            steps += stats["steps"]
            xs[i] = result.reconstruction[0]
            grads[i] = objective.gradient(result.reconstruction.to(device), y[i : i + 1])
    return torch.stack(xs), steps, fit()[1].tolist()
