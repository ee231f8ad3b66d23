"""The attack's objective, 1 − cos(∇_θ ℓ(f(x), y), Δ) + λ·TV(x), with a run's image priors (`priors`), and its
gradient in x (ℓ: `tasks.attack_loss`)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.func import functional_call

from ... import tasks
from .priors import StatsPrior, patch_jumps
from .tape import _UNTAPED, _functional_copy, _Tape


def _tv(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV as in the reference: mean|dx| + mean|dy| (images [.., H, W])."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


class _Objective:
    """1 − cos(∇_θ CE(f(x), y), Δ) + λ·TV(x) and its gradient in x, one dummy
    batch at a time (`step`; many objectives at once: `_Stacked`).
    With a `guide` (layer name, â from `layered_features`), a step given a
    weight β > 0 adds β‖φ(x) − â‖²/‖â‖², φ(x) the input of that layer; `value`
    is always the plain objective, so guided and plain restarts compare alike."""

    def __init__(self, model: nn.Module, delta: dict[str, torch.Tensor], tv: float, image: bool,
                 guide: tuple[str, torch.Tensor] | None = None, finite_difference: bool = False,
                 patch: tuple[float, int] | None = None, prior: tuple[float, StatsPrior] | None = None):
        """`patch` (weight, patch side) and `prior` (weight, the CNN's statistics) add image priors, images only."""
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
        self.names = [n for n in self.params if n in delta]  # the parameters Δ holds (all, or an access level's)
        if self.shifted is not None:
            shifted = dict(self.shifted.named_parameters())
            self.shifted_params = [shifted[n] for n in self.names]
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
        self.patch = patch if image and patch is not None and patch[0] > 0 and patch[1] > 0 else None
        self.prior = (prior[0], prior[1].to(dev, dt)) if image and prior is not None and prior[0] > 0 else None
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

    def _priors(self, loss: torch.Tensor, x: torch.Tensor, scale=1.0) -> torch.Tensor:
        """loss plus `scale` times the weighted patch-order and image priors of x, those that are on."""
        if self.patch is not None:
            loss = loss + scale * self.patch[0] * patch_jumps(x, self.patch[1])
        if self.prior is not None:
            loss = loss + scale * self.prior[0] * self.prior[1].loss(x)
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

    def step(self, x: torch.Tensor, y: torch.Tensor, weight: float = 0.0,
             prior: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, ∇x loss) for one dummy batch x [k, ...]; loss includes the guide term when weight > 0 and
        `prior` times the image priors that are on."""
        if self.finite_difference:
            return self._fd_step(x, y, weight, prior)
        x = x.detach().requires_grad_(True)
        params = [self.params[n] for n in self.names]
        out, feats = self._forward(x, self.model)
        g = torch.autograd.grad(tasks.attack_loss(out.double(), y), params, create_graph=True)
        loss = self._loss(g, x)
        if prior:
            loss = self._priors(loss, x, prior)
        if weight:
            loss = self._guided(loss, feats, weight)
        (gx,) = torch.autograd.grad(loss, x)
        return loss.detach(), gx

    def _fd_step(self, x: torch.Tensor, y: torch.Tensor, weight: float,
                 prior: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """`step` without the double backward. With u = ∂(1 − cos)/∂g the cosine's ∇x is ∇x⟨g(x), u⟩, the
        derivative of ∇x CE along u in θ: one pass at θ + h·u under the first pass's activation pattern
        gives it as (∇x CE(θ + h·u) − ∇x CE(θ)) / h. Two forward+backward passes, the second without
        weight gradients, against a double backward's ~2.3 (relative error ~1e-3 in float32)."""
        x = x.detach().requires_grad_(True)
        params = [self.params[n] for n in self.names]
        with self.tape.recording():
            out, feats = self._forward(x, self.model)
        ce = tasks.attack_loss(out.double(), y)
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
                for p, q, f, d in zip(params, self.shifted_params, flat, self.delta_parts):
                    torch.add(p, f.view_as(p), alpha=h * cos / norm**2, out=q)
                    q.add_(d.view_as(p), alpha=-h / norm)
            x1 = x.detach().requires_grad_(True)
            with self.tape.replaying():
                out1 = self.shifted(x1)
            (gx1,) = torch.autograd.grad(tasks.attack_loss(out1.double(), y), x1)
            gx = (gx1 - gx0) / h
        # TV and the guide term are first-order in x: plain autograd.
        extra = self.tv * _tv(x) if self.tv else x.new_zeros(())
        if prior:
            extra = self._priors(extra, x, prior)
        if guided:
            extra = self._guided(extra, feats, weight)
        if extra.requires_grad:
            gx = gx + torch.autograd.grad(extra, x)[0]
        return loss + extra.detach(), gx

    def _gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.enable_grad():
            out, _ = self._forward(x, self.model)
            return torch.autograd.grad(tasks.attack_loss(out.double(), y), [self.params[n] for n in self.names])

    @torch.no_grad()
    def value(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """The plain objective (no guide term)."""
        return float(self._loss(self._gradients(x, y), x))

    @torch.no_grad()
    def gradient(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """∇_θ CE(f(x), y) of a dummy batch, flattened in the order of `delta` (float64)."""
        return torch.cat([g.reshape(-1).double() for g in self._gradients(x, y)])


class _Stacked:
    """Objectives of one point (`objectives`, each with its Δ, labels `ys` and guide target) stepped as one
    vmapped call (torch.func): `step` takes any runs, each naming its objective, and returns each run's loss
    and ∇x as its own objective's `step` would with a double backward. The objectives share the point's
    parameters and, where they have one, the guide's layer."""

    def __init__(self, objectives: list[_Objective], ys: list[torch.Tensor]):
        guided = [o for o in objectives if o.target is not None]
        lead = guided[0] if guided else objectives[0]
        if {tuple(o.names) for o in objectives} != {tuple(lead.names)}:
            raise ValueError("stacked objectives must match the same parameters")
        if len({(o.tv, o.patch, o.prior and o.prior[0]) for o in objectives}) > 1:
            raise ValueError("stacked objectives must share their TV and priors")
        self.lead = lead
        self.deltas = torch.stack([o.delta for o in objectives])
        self.ys = torch.stack(ys)
        self.tv = lead.tv
        self.guided = bool(guided)
        if guided:
            if any(o.target.shape != lead.target.shape for o in guided):
                raise ValueError("stacked objectives guide different layers")
            # An unguided objective's runs have weight 0: any target with a non-zero norm does.
            blank, one = torch.zeros_like(lead.target), torch.ones_like(lead.target_norm)
            self.targets = torch.stack([blank if o.target is None else o.target for o in objectives])
            self.target_norms = torch.stack([one if o.target is None else o.target_norm for o in objectives])
        else:
            self.targets = self.deltas.new_zeros(len(objectives), 1)
            self.target_norms = self.deltas.new_ones(len(objectives))
        params = {n: p.detach() for n, p in lead.params.items()}
        self.fixed = {n: p for n, p in params.items() if n not in lead.names}
        self.visible = {n: params[n] for n in lead.names}
        self._step = torch.func.vmap(torch.func.grad_and_value(self._objective))

    def _objective(self, x, y, delta, target, target_norm, weight, prior):
        lead = self.lead

        def ce(visible, v):
            params = {**self.fixed, **visible}
            out, feats = lead._forward(v, lambda u: functional_call(lead.model, (params, lead.buffers), (u,)))
            return tasks.attack_loss(out.double(), y), (out.new_zeros(()) if feats is None else feats)

        g, feats = torch.func.grad(ce, has_aux=True)(self.visible, x)
        flat = torch.cat([g[n].reshape(-1) for n in lead.names])
        loss = 1 - flat @ delta / (flat.norm() + 1e-12)
        if self.tv:
            loss = loss + self.tv * _tv(x)
        loss = lead._priors(loss, x, prior)
        if self.guided:
            loss = loss + weight * ((feats - target) ** 2).sum() / target_norm
        return loss

    def step(self, problems: list[int], xs: torch.Tensor, weights: torch.Tensor,
             priors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(losses [R], ∇x [R, k, ...]) of R runs, run r on objective problems[r] with guide weight weights[r]
        and its image priors times priors[r] (default 1)."""
        at = torch.tensor(problems, device=self.deltas.device)
        priors = torch.ones_like(weights) if priors is None else priors
        gx, loss = self._step(xs, self.ys[at], self.deltas[at], self.targets[at], self.target_norms[at],
                              weights.to(xs.dtype), priors.to(xs.dtype))
        return loss, gx
