"""Character-level language models (`train.task: language_model`, `uia_pipe.text`): a record's characters
[B, L] in, next-character logits [B, V, L] out (the classes on dimension 1, as cross-entropy reads them).

Both also score text incrementally, as the exposure and extraction attacks need: `start(tokens)` runs a
prefix [B, T] and returns the logits after its last character [B, V] with the model's state, `step(tokens,
state)` feeds one character per row [B], and `select(state, rows)` keeps (or repeats) rows of a state, so a
search over continuations shares its prefix's computation (an LSTM's (h, c), a transformer's key/value cache).
The output head is the last `nn.Linear` registered, as in every model of the registry.
"""

from __future__ import annotations

import torch
from torch import nn

from .model_config import CharLSTMConfig, CharTransformerConfig
from .attention import _Attention


class CharLSTM(nn.Module):
    """Embedding, a stacked LSTM, a linear head."""

    def __init__(self, length: int, vocab: int, cfg: CharLSTMConfig):
        super().__init__()
        self.embed = nn.Embedding(vocab, cfg.embedding)
        self.lstm = nn.LSTM(cfg.embedding, cfg.hidden, cfg.layers, batch_first=True)
        self.head = nn.Linear(cfg.hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(x))
        return self.head(out).transpose(1, 2)

    def start(self, x: torch.Tensor):
        out, state = self.lstm(self.embed(x))
        return self.head(out[:, -1]), state

    def step(self, tokens: torch.Tensor, state):
        out, state = self.lstm(self.embed(tokens[:, None]), state)
        return self.head(out[:, -1]), state

    @staticmethod
    def select(state, rows: torch.Tensor):
        return tuple(s[:, rows] for s in state)


class _CausalAttention(_Attention):
    """The registry's attention (plain matmuls: double backward works through it), masked to the positions
    before each; `cache` holds the keys and values of the positions before x's."""

    def forward(self, x: torch.Tensor, cache=None):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            k, v = torch.cat([cache[0].expand(b, -1, -1, -1), k], 2), torch.cat([cache[1].expand(b, -1, -1, -1), v], 2)
        t = k.shape[2]
        scores = (q @ k.transpose(-2, -1)) * self.scale
        mask = torch.ones(n, t, dtype=torch.bool, device=x.device).tril(t - n)
        attn = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d)), (k, v)


class _CausalBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _CausalAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, cache=None):
        a, cache = self.attn(self.norm1(x), cache)
        x = x + a
        return x + self.mlp(self.norm2(x)), cache


class CharTransformer(nn.Module):
    """A small GPT: token and learned position embeddings, pre-norm causal blocks, a final LayerNorm and a
    linear head. Positions up to the record length."""

    def __init__(self, length: int, vocab: int, cfg: CharTransformerConfig):
        super().__init__()
        self.embed = nn.Embedding(vocab, cfg.dim)
        self.position = nn.Parameter(torch.zeros(1, length, cfg.dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList([_CausalBlock(cfg.dim, cfg.heads, cfg.mlp_ratio * cfg.dim)
                                     for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, vocab)

    def _run(self, x: torch.Tensor, offset: int, caches):
        h = self.embed(x) + self.position[:, offset: offset + x.shape[1]]
        new = []
        for block, cache in zip(self.blocks, caches):
            h, c = block(h, cache)
            new.append(c)
        return self.head(self.norm(h)), new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, 0, [None] * len(self.blocks))[0].transpose(1, 2)

    def start(self, x: torch.Tensor):
        logits, caches = self._run(x, 0, [None] * len(self.blocks))
        return logits[:, -1], (x.shape[1], caches)

    def step(self, tokens: torch.Tensor, state):
        offset, caches = state
        logits, caches = self._run(tokens[:, None], offset, caches)
        return logits[:, -1], (offset + 1, caches)

    @staticmethod
    def select(state, rows: torch.Tensor):
        offset, caches = state
        return offset, [(k[rows] if len(k) > 1 else k.expand(len(rows), -1, -1, -1),
                         v[rows] if len(v) > 1 else v.expand(len(rows), -1, -1, -1)) for k, v in caches]

