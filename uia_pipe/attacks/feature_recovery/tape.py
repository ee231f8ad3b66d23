"""The model as a function: a private eval-mode copy whose batch norm vmap can batch and whose ReLU and
max-pool record their activation pattern, to replay it at other parameters (the finite-difference step)."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


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
