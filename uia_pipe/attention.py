"""Self-attention written out, shared by the vision transformer (models.py) and the character transformer
(lm_models.py)."""

from __future__ import annotations

import torch
from torch import nn


class _Attention(nn.Module):
    """Multi-head self-attention in plain matmuls and softmax: nn.MultiheadAttention's fused fast path
    and packed `in_proj_weight` get in the way of double backward and of per-parameter views of Δ."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
