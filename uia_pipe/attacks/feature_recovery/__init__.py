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
  gradients at θ₀, with (a, b) from `exact_update` (EXACT_UPDATES; what each
  estimator keeps over several minibatches: `update.py`).

Δ is formed in float64 by default: N·(θ−θ₀) multiplies float32 rounding, which
swamps the signal of well-fitted samples.

What differs from the reference, and why (the measurements behind each point:
benchmarks/RESULTS.md, "Feature recovery"):
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
  a ViT's patches likewise from its patch and position embeddings' update
  (APRIL), the solve truncated at the noise its bias update shows; with
  `analytic_refine` off that start is the result (exact unlearning's noisy Δ);
- image priors (`priors`: a patch-order prior and the batch-norm statistics of
  a CNN the attacker trains on public data) can be added to the restarts that
  do not begin at a closed-form start;
- otherwise, on a ReLU conv/linear stack (DLG's LeNet, MLPs), a hidden
  layer's input â is solved from Δ layer by layer (R-GAP,
  `layered_features`) and a guided restart also matches φ(x) to â, with a
  weight that falls to 0; the plain objective chooses between guided and
  plain restarts. It lifts both methods on the default requests, exact the
  less (limited by the float32 rounding of θ and θ_u).
  For 1 < k < C samples (opt-in, `joint_guide_depth`) the head's update is
  first fitted as k outer products (`_head_factors`): with true labels this
  comes level with the class-mean images, with analytic labels it gains
  nothing; with the true hidden inputs as the guide the same attack does far
  better, so what limits k > 1 is how well the sum of k updates is split;
- for k > 1 a backfitted restart (`_backfit`, k_strategy "backfit") splits
  it one sample at a time: the single-sample attack on what the others'
  estimates leave of Δ, then a joint refinement; the plain objective chooses;
- a step takes ∇x of the cosine by a finite difference in θ (`second_order`,
  `_Objective._fd_step`) instead of a double backward: one more pass at
  θ + h·∂loss/∂g under the first pass's ReLU masks and max-pool choices, so no
  second-order graph is built (cheaper per step, at the same PSNR);
- batch norm runs as its eval-mode affine map, which torch.func.vmap can batch,
  so restarts can run as one batched step (worth it on a GPU, not on a CPU).

The modules, in the order the attack uses them: `config` (the settings), `update`
(Δ and the attack point), `labels` (analytic labels), `closed_form` (the
closed-form input and the layered features), `tape` and `objective` (the model
as a function, the cosine objective and its step), `invert` (restarts),
`backfit` (k > 1 one sample at a time), `recover` (the attack).
"""

from .closed_form import analytic_input, layered_features
from .config import EXACT_UPDATES, OPTIMIZERS, Config, OptimizerSpec
from .invert import Progress, Result
from .labels import analytic_labels
from .recover import recover, recover_many
from .update import observed_update

__all__ = [
    "EXACT_UPDATES",
    "OPTIMIZERS",
    "Config",
    "OptimizerSpec",
    "Progress",
    "Result",
    "analytic_input",
    "analytic_labels",
    "layered_features",
    "observed_update",
    "recover",
    "recover_many",
]
