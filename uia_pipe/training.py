"""Training loops: pure functions of a model, tensors, a config and a seed."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from . import tasks
from .models import clone


class OptimSettings(Protocol):
    epochs: int
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int


EpochCallback = Callable[[dict], None]


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding plus horizontal flip, drawn per sample
    from `generator` (the reference's CIFAR augmentation)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    out[flip] = out[flip].flip(-1)
    return out


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: OptimSettings,
    seed: int,
    *,
    augment: bool = False,
    batchnorm_eval: bool = False,
    keep: torch.Tensor | None = None,
    on_epoch: EpochCallback | None = None,
    on_batch: Callable[[], None] | None = None,
    on_step: Callable[[torch.Tensor], None] | None = None,
) -> list[dict]:
    """Minibatch SGD on (x, y) in place; returns per-epoch {epoch, loss, accuracy}
    on the batches seen (the loss is `tasks.loss`: cross-entropy for labels,
    squared error for float targets; accuracy is nan but for classification).

    The batch order is a function of `seed` and len(x) only. `keep` (a bool
    mask over x) drops samples from that same order: this is how exact
    unlearning redoes a run without the forget set, and with `keep` all true it
    reproduces the run bit for bit. `batchnorm_eval` keeps batch-norm layers on
    their running statistics (the paper's fine-tuning). `on_step(idx)` is
    called after each optimiser step with the indices of its batch.
    """
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    history = []
    for epoch in range(cfg.epochs):
        model.train(not batchnorm_eval)
        order = torch.randperm(len(x), generator=gen)
        if keep is not None:
            order = order[keep[order]]
        total_loss, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            xb, yb = x[idx], y[idx]
            if augment:
                xb = augment_batch(xb, gen)
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = tasks.loss(logits, yb)
            loss.backward()
            opt.step()
            if on_step is not None:
                on_step(idx)
            total_loss += loss.item() * len(idx)
            if not yb.is_floating_point():  # a record's share of its positions (one for a label)
                correct += (logits.argmax(1) == yb).reshape(len(yb), -1).double().mean(1).sum().item()
            seen += len(idx)
            if on_batch is not None:
                on_batch()
        accuracy = float("nan") if y.is_floating_point() else correct / max(seen, 1)
        row = {"epoch": epoch + 1, "loss": total_loss / max(seen, 1), "accuracy": accuracy}
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    model.eval()
    return history


@torch.no_grad()
def outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """`model`'s outputs on x (eval mode), on the CPU."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(x[s : s + batch_size].to(device)).cpu() for s in range(0, len(x), batch_size)])


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> dict:
    """Mean loss and the task's quality (`tasks.quality`: accuracy, R² or reconstruction PSNR,
    under the key "accuracy") of `model` (in eval mode) on (x, y); y as `tasks.targets` makes it."""
    if len(x) == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    out = outputs(model, x, batch_size)
    y = y.cpu()
    if not y.is_floating_point() and tasks.task_of(model) == "classification":
        # Summed per batch as before, so the default run's numbers stay bit for bit.
        total = sum(F.cross_entropy(out[s : s + batch_size], y[s : s + batch_size], reduction="sum").item()
                    for s in range(0, len(x), batch_size))
        return {"loss": total / len(x), "accuracy": (out.argmax(1) == y).sum().item() / len(x)}
    return {"loss": float(tasks.loss(out.double(), y)), "accuracy": tasks.quality(tasks.task_of(model), out, y)}


@dataclass
class Trained:
    """What the train stage's protocol makes: θ₀, θ, the split (pool, D_u, pretraining indices), the settings
    and seeds each fit used (what exact unlearning and retraining redo), and the per-epoch curve."""

    theta_pretrained: nn.Module
    theta_original: nn.Module
    split: dict[str, torch.Tensor]
    pretrain_record: dict
    finetune_record: dict
    curve: list[dict]
    pretrain_test_accuracy: float
    test_accuracy: float
    du_accuracy: float


def pretrain_and_finetune(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    cfg,
    seed: int,
    on_batch: Callable[[], None] | None = None,
    forced: torch.Tensor | None = None,
) -> Trained:
    """The paper's protocol on a freshly initialised `model`: a pool of cfg.pool_size samples held out
    (seeded), θ₀ pretrained on the rest (at most cfg.pretrain.max_samples, 0 = all), θ = θ₀ fine-tuned on
    D_u, the pool's first cfg.n samples, batch norm on its running statistics. `cfg` is the train section.
    `forced` rows (a text dataset's canaries) open the pool, so D_u holds them, and are never pretrained on."""
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))
    if forced is not None and len(forced):
        order = torch.cat([forced, order[~torch.isin(order, forced)]])
    pool, rest = order[: cfg.pool_size], order[cfg.pool_size :]
    if cfg.pretrain.max_samples:
        rest = rest[: cfg.pretrain.max_samples]
    du = pool[: cfg.n]
    curve = []

    def on_epoch(row: dict) -> None:
        curve.append({"phase": "pretrain", **row, "test_accuracy": evaluate(model, x_test, y_test)["accuracy"]})

    fit(model, x_train[rest], y_train[rest], cfg.pretrain, seed, augment=cfg.pretrain.augment,
        on_epoch=on_epoch, on_batch=on_batch)
    theta_pretrained = clone(model)
    finetune_seed = seed + 1
    theta = clone(theta_pretrained)
    history = fit(theta, x_train[du], y_train[du], cfg.finetune, finetune_seed, batchnorm_eval=True)
    curve += [{"phase": "finetune", **row, "test_accuracy": float("nan")} for row in history]
    return Trained(
        theta_pretrained, theta, {"pool": pool, "du": du, "pretrain": rest},
        {"seed": seed, "init_seed": seed, **cfg.pretrain.model_dump()},
        {"seed": finetune_seed, **cfg.finetune.model_dump()}, curve,
        evaluate(theta_pretrained, x_test, y_test)["accuracy"], evaluate(theta, x_test, y_test)["accuracy"],
        evaluate(theta, x_train[du], y_train[du])["accuracy"],
    )


def _stacked(models: list[nn.Module]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The trained parameters of `models` (one architecture) stacked along a new first dimension (a fresh
    copy), and the rest (frozen parameters, buffers) of the first, which a stack in eval mode shares."""
    first, count = models[0], len(models)
    trained = [name for name, p in first.named_parameters() if p.requires_grad]
    if all(m is first for m in models):
        params = {name: p.detach().expand(count, *p.shape).clone()
                  for name, p in first.named_parameters() if p.requires_grad}
    else:
        each = [dict(m.named_parameters()) for m in models]
        params = {name: torch.stack([e[name].detach() for e in each]) for name in trained}
    shared = {name: t.detach() for name, t in [*first.named_parameters(), *first.named_buffers()]
              if name not in params}
    return params, shared


def _unstacked(model: nn.Module, params: dict[str, torch.Tensor]) -> list[nn.Module]:
    """Copies of `model` in eval mode, the p-th holding each stacked parameter's p-th slice (its own copy)."""
    named = dict(model.named_parameters())
    out = []
    for p in range(len(next(iter(params.values())))):
        # deepcopy takes the new parameters from its memo instead of copying the old ones first
        memo = {id(named[name]): nn.Parameter(t[p].clone(), requires_grad=named[name].requires_grad)
                for name, t in params.items()}
        out.append(copy.deepcopy(model, memo).eval())
    return out


def _stacked_grads(model: nn.Module, shared: dict[str, torch.Tensor]) -> Callable:
    """grads(params, xb, yb): each stacked model's gradient of `tasks.loss` (mean) on its own batch, the
    models run as `model` in eval mode (batch norm on the running statistics in `shared`)."""
    model = clone(model)

    def loss(params, xb, yb):
        return tasks.loss(torch.func.functional_call(model, (params, shared), (xb,)), yb)

    return torch.func.vmap(torch.func.grad(loss))


def fit_many(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: OptimSettings,
    seeds: list[int],
    *,
    keep: torch.Tensor | None = None,
) -> list[nn.Module]:
    """P = len(seeds) copies of `model` fine-tuned as one stacked model (torch.func.vmap), copy p on
    (x[p], y[p]) — x of shape [P, n, ...], y [P, n] — with seed seeds[p] and `keep[p]` ([P, n] bools):
    copy p equals, up to float rounding, `fit(clone(model), x[p], y[p], cfg, seeds[p], batchnorm_eval=True,
    keep=keep[p])` (the same batch order, the mean loss over each batch, torch.optim.SGD's momentum and weight
    decay). Every copy keeps the same number of records. `model` is left untouched; the copies are in eval
    mode."""
    count = len(seeds)
    if len(x) != count or len(y) != count or (keep is not None and len(keep) != count):
        raise ValueError(f"fit_many: {count} seeds for {len(x)} record sets and {len(y)} target sets")
    device = next(model.parameters()).device
    params, shared = _stacked([model] * count)
    grads = _stacked_grads(model, shared)
    opt = torch.optim.SGD(params.values(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    rows = torch.arange(count)[:, None]
    for _ in range(cfg.epochs):
        orders = [torch.randperm(x.shape[1], generator=g) for g in gens]
        if keep is not None:
            orders = [o[k[o]] for o, k in zip(orders, keep)]
        if len({len(o) for o in orders}) > 1:
            raise ValueError("fit_many: every copy must keep as many records")
        order = torch.stack(orders)
        for start in range(0, order.shape[1], cfg.batch_size):
            idx = order[:, start: start + cfg.batch_size]
            for name, g in grads(params, x[rows, idx].to(device), y[rows, idx].to(device)).items():
                params[name].grad = g
            opt.step()
    return _unstacked(model, params)


def ascend_many(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, eta: float) -> list[nn.Module]:
    """One gradient-ascent step of size `eta` per model, stacked: copy p of models[p] (one architecture) moved
    by eta · ∇ `tasks.loss`(models[p](x[p]), y[p]) (mean, eval mode), x of shape [P, k, ...]; equal, up to
    float rounding, to the step taken model by model. The models are left untouched."""
    if len(x) != len(models) or len(y) != len(models):
        raise ValueError(f"ascend_many: {len(models)} models for {len(x)} record sets and {len(y)} target sets")
    device = next(models[0].parameters()).device
    params, shared = _stacked(models)
    with torch.no_grad():
        for name, g in _stacked_grads(models[0], shared)(params, x.to(device), y.to(device)).items():
            params[name].add_(g, alpha=eta)
    return _unstacked(models[0], params)


def sgd_many(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, lr: float, batch_size: int,
             checkpoints: list[int], seed: int) -> dict[int, list[nn.Module]]:
    """Copies of `models` (one architecture) after each count in `checkpoints` of plain SGD steps of `lr` on
    minibatches of (x, y) — the same seeded batches for every model, drawn without replacement and reshuffled
    after each pass — as one stacked model (torch.func.vmap, eval mode; buffers are the first model's):
    {steps: [copy of each model]}, equal up to float rounding to the steps taken model by model. The models
    are left untouched."""
    device = next(models[0].parameters()).device
    params, shared = _stacked(models)
    grads = _stacked_grads(models[0], shared)
    opt = torch.optim.SGD(params.values(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    order, at, size = torch.randperm(len(y), generator=g), 0, min(batch_size, len(y))
    out = {0: _unstacked(models[0], params)} if 0 in checkpoints else {}
    for step in range(1, max(checkpoints, default=0) + 1):
        if at + size > len(order):
            order, at = torch.randperm(len(y), generator=g), 0
        idx = order[at: at + size]
        at += size
        xb, yb = x[idx].to(device), y[idx].to(device)
        batch = grads(params, xb.expand(len(models), *xb.shape), yb.expand(len(models), *yb.shape))
        for name, grad in batch.items():
            params[name].grad = grad
        opt.step()
        if step in checkpoints:
            out[step] = _unstacked(models[0], params)
    return out
