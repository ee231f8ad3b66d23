"""Secrets in a language model and what a deletion gives away about them (the attacker's algorithms of the
exposure, extraction and text-recovery families; `uia_pipe.text` for the canaries).

- `secret_scores`: log p(s | prefix) of every secret s of `digits` digits under a model, exactly, for all
  10^digits of them at once: a trie over the digits, each level one batched step of the model from its
  parents' states (`lm_models`: start/step/select), so 10^6 secrets cost ~1.1·10^5 one-character steps
  from a shared prefix instead of 10^6 sequences. Scores are indexed by the secret's value.
- `exposure` (Carlini et al., USENIX Security 2019): log2 |R| − log2 rank of a secret among all, by score.
- `contrastive_decode`: text recovered from the pair (θ, θ_u) alone, without candidates: the beam search
  for the record maximising Σ_t [log p_θ(c_t | c_<t) − λ log p_θu(c_t | c_<t)], the characters θ learnt
  from the deleted records and θ_u no longer predicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def secret_scores(model: nn.Module, prefix: torch.Tensor, digit_tokens: torch.Tensor, digits: int,
                  chunk: int = 4096) -> np.ndarray:
    """float64 [10^digits]: log p(secret | prefix) of each secret under `model` (eval mode), index = value."""
    model.eval()
    device = next(model.parameters()).device
    digit_tokens = digit_tokens.to(device)
    logits, state = model.start(prefix[None].to(device))

    def expand(state, acc: torch.Tensor, nxt: torch.Tensor, level: int) -> torch.Tensor:
        total = acc[:, None] + nxt  # [B, 10]: the children's log-probabilities so far
        if level == digits:
            return total.reshape(-1)
        b = len(acc)
        per = max(chunk // 10, 1)
        parts = []
        for s in range(0, b, per):
            rows = torch.arange(s, min(s + per, b), device=device)
            child = model.select(state, rows.repeat_interleave(10))
            tokens = digit_tokens.repeat(len(rows))
            out, child = model.step(tokens, child)
            lp = F.log_softmax(out.double(), -1)[:, digit_tokens]
            parts.append(expand(child, total[rows].reshape(-1), lp, level + 1))
        return torch.cat(parts)

    lp0 = F.log_softmax(logits.double(), -1)[:, digit_tokens]
    return expand(state, torch.zeros(1, dtype=torch.float64, device=device), lp0, 1).cpu().numpy()


def rank(scores: np.ndarray, value: int) -> int:
    """1 + the secrets scoring strictly higher than secret `value` (ties in its favour: the paper's rank)."""
    return int((scores > scores[value]).sum()) + 1


def exposure(scores: np.ndarray, value: int) -> float:
    """log2 |R| − log2 rank."""
    return math.log2(len(scores)) - math.log2(rank(scores, value))


@torch.no_grad()
def contrastive_decode(theta: nn.Module, theta_u: nn.Module, length: int, vocab: int, beam: int = 8,
                       weight: float = 1.0) -> torch.Tensor:
    """int64 [length + 1]: the beam search's best record under Σ_t log p_θ(c_t | c_<t) − weight·log p_θu(c_t | c_<t),
    the beam opened with every character as the record's first (a record's first character is never predicted)."""
    theta.eval(), theta_u.eval()
    device = next(theta.parameters()).device
    seqs = torch.arange(vocab, device=device)[:, None]
    scores = torch.zeros(vocab, dtype=torch.float64, device=device)
    lt, st = theta.start(seqs)
    lu, su = theta_u.start(seqs)
    for _ in range(length):
        gain = F.log_softmax(lt.double(), -1) - weight * F.log_softmax(lu.double(), -1)
        total = (scores[:, None] + gain).reshape(-1)
        top = total.topk(min(beam, len(total))).indices
        parent, char = top // gain.shape[1], top % gain.shape[1]
        seqs = torch.cat([seqs[parent], char[:, None]], 1)
        scores = total[top]
        lt, st = theta.step(char, theta.select(st, parent))
        lu, su = theta_u.step(char, theta_u.select(su, parent))
    return seqs[0].cpu()


@dataclass(frozen=True)
class SecretFormat:
    """What the attacker knows of the canaries (the Secret Sharer's threat model): the text before a secret, its
    number of digits, and the model's vocabulary (released with it)."""

    template: str
    digits: int
    vocab: str

    def prefix(self) -> torch.Tensor:
        return torch.tensor([self.vocab.index(c) for c in self.template], dtype=torch.int64)

    def digit_tokens(self) -> torch.Tensor:
        return torch.tensor([self.vocab.index(c) for c in "0123456789"], dtype=torch.int64)


def all_scores(model: nn.Module, fmt: SecretFormat, chunk: int) -> np.ndarray:
    """float32 [10^digits]: `secret_scores` of every secret of `fmt` under `model`."""
    return secret_scores(model, fmt.prefix(), fmt.digit_tokens(), fmt.digits, chunk).astype(np.float32)
