"""What a holder of a model's weights can do to them without data: round them to a lower precision (float16,
bfloat16, or int8 / int4 weights, symmetric) and prune them by magnitude. Shared by both sides of the wall:
the access levels round what the attacker receives, the prune defence prunes what the server releases, and
the recovery family manipulates θ_u with both."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from .models import clone

# int<b>_<granularity>: b-bit symmetric weights, one scale per tensor or per output channel
INT_BITS = {"int8": 8, "int4": 4}
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def quantise(t: torch.Tensor, precision: str) -> torch.Tensor:
    """`t` as released at `precision`, back in its own dtype: float16/bfloat16 rounding, or int8 / int4
    (symmetric, zero point 0, torch's MinMax observers over [−2^(b−1), 2^(b−1) − 1]) of weights (dim ≥ 2),
    per tensor or per output channel ("int8_tensor", "int4_channel", ...)."""
    if precision in ("float16", "bfloat16"):
        return t.to(getattr(torch, precision)).to(t.dtype)
    width, _, granularity = precision.partition("_")
    if width not in INT_BITS or granularity not in ("tensor", "channel"):
        raise ValueError(f"unknown precision {precision!r}")
    if t.dim() < 2:
        return t.clone()
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    x, bits = t.detach().float(), INT_BITS[width]
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if granularity == "tensor":
        observer = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=low,
                                  quant_max=high)
        observer(x)
        scale, zero = observer.calculate_qparams()
        q = torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero), low, high)
    else:
        observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                            quant_min=low, quant_max=high)
        observer(x)
        scales, zeros = observer.calculate_qparams()
        q = torch.fake_quantize_per_channel_affine(x, scales.float(), zeros.int(), 0, low, high)
    return q.to(t.dtype)


def rounded(model: nn.Module, precision: str) -> nn.Module:
    """A copy of `model` released at `precision` (floating buffers too, under float16 and bfloat16)."""
    out = clone(model)
    with torch.no_grad():
        for p in out.parameters():
            p.copy_(quantise(p, precision))
        if precision in ("float16", "bfloat16"):
            for b in out.buffers():
                if b.is_floating_point():
                    b.copy_(quantise(b, precision))
    return out


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, "weight") pairs pruning applies to."""
    return [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]


def pruned(model: nn.Module, fraction: float) -> nn.Module:
    """A copy of `model` with the fraction of its prunable weights of smallest magnitude zeroed (globally over
    all conv and linear layers: torch.nn.utils.prune.global_unstructured, L1, made permanent); biases and batch
    norm kept; fraction 0 returns a bit-identical copy."""
    model = clone(model)
    if fraction == 0:
        return model
    targets = prunable(model)
    with torch.no_grad():
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(fraction))
        for module, name in targets:
            prune.remove(module, name)
    return model.eval()
