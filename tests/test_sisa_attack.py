"""The SISA-aware feature-recovery attacker: it diffs the server's checkpoint
store, isolates the one retrained shard and inverts its retrained stage."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.conftest import TINY_SPEC, tiny_data
from uia_pipe.attacks import feature_recovery as fr
from uia_pipe.attacks.view import sisa_shard_views
from uia_pipe.config import OptimParams
from uia_pipe.metrics import baseline_scores, image_scores, mean_image
from uia_pipe.models import init_model
from uia_pipe.training import fit
from uia_pipe.unlearning.problem import UnlearningProblem
from uia_pipe.unlearning import sisa
from uia_pipe.models import clone

CFG = sisa.Config(shards=4, slices=2)


def _mlp_problem() -> tuple[UnlearningProblem, torch.Tensor]:
    """The tiny data with a one-hidden-layer MLP (a first linear layer, as in
    the gradient-leakage literature's fully connected models)."""
    x, y = tiny_data(280, seed=0)
    spec = {**TINY_SPEC, "model": "mlp", "config": {"hidden": [32]}}
    model = init_model(spec, seed=0)
    fit(model, x[:256], y[:256], OptimParams(epochs=5, lr=0.05, momentum=0.9, batch_size=64), seed=0)
    finetune = OptimParams(epochs=1, lr=1e-3, batch_size=8)
    theta = clone(model)
    fit(theta, x[256:], y[256:], finetune, seed=1)
    return UnlearningProblem(clone(model), theta, x[256:], y[256:], finetune, 1), x[:256]


def _views(problem: UnlearningProblem, forget: torch.Tensor):
    before, after = sisa.build(problem, CFG), sisa.retrain(problem, forget, CFG)
    removed = [[int(forget[idx].sum()) for idx in shard] for shard in before.slices]
    sizes = [[len(idx) for idx in shard] for shard in before.slices]
    return before, sisa_shard_views(before.checkpoints, after.checkpoints, sizes, removed, (1, 28, 28), 3)


def test_the_view_isolates_the_retrained_shard_and_its_update_is_the_forget_gradient(tiny_problem):
    forget = torch.zeros(len(tiny_problem.du_y), dtype=torch.bool)
    forget[5] = True
    before, views = _views(tiny_problem, forget)
    assert len(views) == 1
    shard, stage, view = views[0]
    assert 5 in before.slices[shard][stage].tolist()
    assert view.n == sum(len(i) for i in before.slices[shard][: stage + 1]) and view.k == 1
    assert view.theta_pretrained is before.checkpoints[shard][stage]
    # The retrained stage is one full-batch step (stage data ≤ the batch size of 8), so
    # the count-weighted difference is lr · ∇CE(X) at the checkpoint.
    delta = fr.observed_update(view)
    c = clone(view.theta_pretrained)
    grads = torch.autograd.grad(F.cross_entropy(c(tiny_problem.du_x[forget]), tiny_problem.du_y[forget]),
                                list(c.parameters()))
    d = torch.cat([t.flatten() for t in delta.values()])
    g = tiny_problem.finetune.lr * torch.cat([t.flatten() for t in grads]).double()
    # up to float32 rounding of the stored parameters, which N·(θ − c) multiplies
    assert F.cosine_similarity(d, g, dim=0) > 0.999 and abs(d.norm() / g.norm() - 1) < 0.01
    # Nothing forgotten: no shard changed, nothing to attack.
    assert _views(tiny_problem, torch.zeros_like(forget))[1] == []


def test_the_sisa_aware_recovery_beats_the_mean_image():
    problem, pretrain_x = _mlp_problem()
    forget = torch.zeros(len(problem.du_y), dtype=torch.bool)
    forget[2] = True
    (_, _, view), = _views(problem, forget)[1]
    cfg = fr.Config(iterations=60, restarts=1, prune_after=0)
    result, _ = fr.recover(view, cfg, seed=0)
    truth = problem.du_x[forget]
    assert result.labels.tolist() == problem.du_y[forget].tolist()
    psnr = float(image_scores(result.reconstruction, truth)["psnr"].mean())
    baseline = float(baseline_scores(truth, mean_image(pretrain_x))["psnr"].mean())
    assert psnr > baseline + 10, (psnr, baseline)
