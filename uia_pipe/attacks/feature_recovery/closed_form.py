"""What Δ gives away in closed form: a first linear layer's input, a patch embedding's patches (APRIL), and
hidden layers' inputs solved layer by layer (R-GAP), which guide the optimisation."""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


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


def _patch_embedding(model: nn.Module) -> tuple[str, str, int] | None:
    """Names of (the patch-embedding conv's weight, the position embedding) and the patch side, when the
    model embeds non-overlapping patches by a conv (kernel = stride, no padding) and adds a learned
    position embedding to them (the ViT: `patch_embed`, `pos_embed`)."""
    for name, mod in model.named_modules():
        conv, pos = getattr(mod, "patch_embed", None), getattr(mod, "pos_embed", None)
        if isinstance(conv, nn.Conv2d) and isinstance(pos, nn.Parameter) and conv.kernel_size == conv.stride \
                and conv.padding in ((0, 0), "valid") and conv.kernel_size[0] == conv.kernel_size[1]:
            prefix = f"{name}." if name else ""
            return f"{prefix}patch_embed.weight", f"{prefix}pos_embed", int(conv.kernel_size[0])
    return None


def _patch_input(names: tuple[str, str, int], delta: dict[str, torch.Tensor],
                 input_shape: tuple[int, ...]) -> torch.Tensor | None:
    """One sample's normalised input u from a patch embedding z_p = W u_p + b + pos_p (APRIL: Lu et al., CVPR
    2022): ∂L/∂pos_p = ∂L/∂z_p = e_p, so ΔW = Σ_p e_p u_pᵀ = Eᵀ U with E = Δpos (the patch tokens' rows), and
    U, every patch at once, is its least-squares solution (unique when the token width ≥ the patch count).
    Δ's noise (float32 rounding of N(θ − θ₀) under exact unlearning; other samples' terms) is read off the
    conv's bias, whose update is Σ_p e_p: directions of E whose singular value falls below that relative
    error of Δb against Σ_p Δpos_p are dropped (truncated SVD), which leaves those patches' parts at the
    model's mean image instead of amplified noise."""
    weight, pos, p = names
    if not {weight, pos} <= set(delta) or len(input_shape) != 3:
        return None
    bias = weight[: -len("weight")] + "bias"
    c, h, w = input_shape
    dw = delta[weight].double().reshape(delta[weight].shape[0], -1)  # [dim, c·p·p]
    e = delta[pos].double().reshape(-1, dw.shape[0])[-(h // p) * (w // p):]  # [P, dim], the class token's left out
    if not (e * e).sum() > 0:
        return None
    rcond = None
    if bias in delta:
        db = delta[bias].double()
        rcond = float((db - e.sum(0)).norm() / db.norm().clamp_min(1e-300))
    u = torch.linalg.lstsq(e.T, dw, rcond=rcond, driver="gelsd").solution  # [P, c·p·p]
    return u.reshape(h // p, w // p, c, p, p).permute(2, 0, 3, 1, 4).reshape(c, h, w)


def analytic_input(model: nn.Module, delta: dict[str, torch.Tensor], input_shape: tuple[int, ...]) -> torch.Tensor | None:
    """One sample through a first layer z = Wu + b (u = (x − mean)/std, the
    model's own normalisation): ∂L/∂W = (∂L/∂b) uᵀ, so u = ΔW_i/Δb_i for every
    row i; rows are combined by least squares (weights Δb_i²); or through a patch
    embedding with a position embedding (`_patch_input`). Returns x
    [*input_shape] in float64, or None when the model has no such layer."""
    names = _first_linear(model)
    if names is None or not set(names) <= set(delta):
        patches = _patch_embedding(model)
        u = None if patches is None else _patch_input(patches, delta, input_shape)
        if u is None:
            return None
    else:
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
    of samples whose own error is small, which at 300 blew up to several times
    their true norm). Returns (name of the layer whose input was solved, that input
    [k, ...] flattened in the order of `labels`, float64), or None for models
    that are not ReLU conv/linear stacks, whose head did not move, k ≥ C, or
    whose solve did not stay finite.
    """
    layers = _relu_stack(model)
    if layers is None:
        return None
    k = 1 if labels is None else len(labels)
    if k > 1 and k >= layers[-1][1].out_features:
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
    if f"{head}.bias" not in delta or f"{head}.weight" not in delta:
        return None
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
    held = last  # the layers below the head whose update Δ holds, without a gap (all, unless an access level)
    while held > 0 and f"{layers[held - 1][0]}.weight" in delta:
        held -= 1
    stop = max(last - depth + 1, held)
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
