"""Secrets in a language model and what a deletion gives away about them (the attacker's algorithms of the
exposure, extraction and text-recovery families; `uia_pipe.text` for the canaries).

- `secret_scores`: log p(s | prefix) of every secret s of `digits` digits under a model, exactly, for all
  10^digits of them at once: a trie over the digits, each level one batched step of the model from its
  parents' states (`lm_models`: start/step/select), so 10^6 secrets cost ~1.1·10^5 one-character steps
  from a shared prefix instead of 10^6 sequences. Scores are indexed by the secret's value.
- `exposure` (Carlini et al., USENIX Security 2019): log2 |R| − log2 rank of a secret among all, by score.
- `Exact` and `Estimated`: a ranking of every secret, read as the rank, exposure and top guess of a secret. Above
  `MAX_EXACT` secrets the Secret Sharer's estimate (§4.3): a skew-normal fitted to the scores of `samples` random
  secrets (seeded), exposure ≈ −log2 of its survival function at the secret's score (the share of secrets that
  score higher), the top guess a beam search over the digits (`beam_secret`). The estimate's exposure scores the
  secret itself under the models: the measurement knows the secret, the attacker's guess does not.
- `contrastive_decode`: text recovered from the pair (θ, θ_u) alone, without candidates: the beam search
  for the record maximising Σ_t [log p_θ(c_t | c_<t) − λ log p_θu(c_t | c_<t)], the characters θ learnt
  from the deleted records and θ_u no longer predicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from scipy import stats
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
def scores_of(model: nn.Module, prefix: torch.Tensor, digit_tokens: torch.Tensor, digits: int, values: np.ndarray,
              chunk: int = 4096) -> np.ndarray:
    """float64 [n]: log p(secret | prefix) of the secrets `values` under `model` (eval mode), `chunk` at a time."""
    model.eval()
    device = next(model.parameters()).device
    digit_tokens = digit_tokens.to(device)
    logits, state = model.start(prefix[None].to(device))
    lp0 = F.log_softmax(logits.double(), -1)[0]
    place = 10 ** np.arange(digits - 1, -1, -1, dtype=np.int64)
    out = []
    for s in range(0, len(values), chunk):
        part = np.asarray(values[s:s + chunk], dtype=np.int64)
        tokens = digit_tokens[torch.from_numpy(part[:, None] // place % 10).to(device)]  # [n, digits]
        total = lp0[tokens[:, 0]]
        child = model.select(state, torch.zeros(len(part), dtype=torch.int64, device=device))
        for j in range(1, digits):
            out_j, child = model.step(tokens[:, j - 1], child)
            total = total + F.log_softmax(out_j.double(), -1).gather(1, tokens[:, j:j + 1]).squeeze(1)
        out.append(total.cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


@torch.no_grad()
def beam_secret(models: list[nn.Module], weights: list[float], prefix: torch.Tensor, digit_tokens: torch.Tensor,
                digits: int, beam: int) -> int:
    """The beam search's best secret under Σ_i weights[i] · log p_i(secret | prefix), digit by digit."""
    device = next(models[0].parameters()).device
    digit_tokens = digit_tokens.to(device)
    opened = [m.eval().start(prefix[None].to(device)) for m in models]
    logits, states = [o[0] for o in opened], [o[1] for o in opened]
    values = torch.zeros(1, dtype=torch.int64, device=device)
    scores = torch.zeros(1, dtype=torch.float64, device=device)
    for level in range(digits):
        gain = sum(w * F.log_softmax(lg.double(), -1)[:, digit_tokens] for w, lg in zip(weights, logits))
        total = (scores[:, None] + gain).reshape(-1)
        top = total.topk(min(beam, len(total))).indices
        parent, digit = top // 10, top % 10
        values, scores = values[parent] * 10 + digit, total[top]
        if level + 1 < digits:
            stepped = [m.step(digit_tokens[digit], m.select(st, parent)) for m, st in zip(models, states)]
            logits, states = [o[0] for o in stepped], [o[1] for o in stepped]
    return int(values[0])


@dataclass(frozen=True)
class Exact:
    """Every secret's score (index = value): the exact rank."""

    scores: np.ndarray

    @property
    def size(self) -> int:
        return len(self.scores)

    def rank(self, value: int) -> float:
        return float(rank(self.scores, value))

    def exposure(self, value: int) -> float:
        return exposure(self.scores, value)

    def best(self) -> int:
        return int(np.argmax(self.scores))

    def combine(self, other: "Exact", weight: float) -> "Exact":
        """The ranking by self's score − weight · other's."""
        return Exact(self.scores - np.float32(weight) * other.scores)


@dataclass(frozen=True)
class Estimated:
    """The Secret Sharer's estimate over the 10^digits secrets of `fmt`, ranked by Σ w · log p_model(s) over
    `terms` (w, model): `sample` holds that score of random secrets, `fit` the skew-normal (shape, loc, scale)
    fitted to it, `beam` the width of the search for the top guess."""

    terms: tuple[tuple[float, nn.Module], ...]
    fmt: "SecretFormat"
    chunk: int
    sample: np.ndarray
    beam: int

    @property
    def size(self) -> int:
        return 10 ** self.fmt.digits

    @cached_property
    def fit(self) -> tuple[float, ...]:
        return tuple(float(v) for v in stats.skewnorm.fit(self.sample))

    def score(self, values: np.ndarray) -> np.ndarray:
        prefix, tokens = self.fmt.prefix(), self.fmt.digit_tokens()
        return sum(w * scores_of(m, prefix, tokens, self.fmt.digits, values, self.chunk) for w, m in self.terms)

    def exposure(self, value: int) -> float:
        """−log2 of the fitted share of secrets scoring above `value`'s, within [0, log2 |R|]."""
        s = float(self.score(np.array([value]))[0])
        bits = -float(stats.skewnorm.logsf(s, *self.fit)) / math.log(2)
        return min(max(bits, 0.0), math.log2(self.size))

    def rank(self, value: int) -> float:
        return max(1.0, self.size * 2.0 ** -self.exposure(value))

    def best(self) -> int:
        return beam_secret([m for _, m in self.terms], [w for w, _ in self.terms], self.fmt.prefix(),
                           self.fmt.digit_tokens(), self.fmt.digits, self.beam)

    def combine(self, other: "Estimated", weight: float) -> "Estimated":
        """The ranking by self's score − weight · other's (the same random secrets: the same seed)."""
        terms = self.terms + tuple((-weight * w, m) for w, m in other.terms)
        return Estimated(terms, self.fmt, self.chunk, self.sample - weight * other.sample, self.beam)


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
    for i in range(length):
        gain = F.log_softmax(lt.double(), -1) - weight * F.log_softmax(lu.double(), -1)
        total = (scores[:, None] + gain).reshape(-1)
        top = total.topk(min(beam, len(total))).indices
        parent, char = top // gain.shape[1], top % gain.shape[1]
        seqs = torch.cat([seqs[parent], char[:, None]], 1)
        scores = total[top]
        if i + 1 < length:  # the record's last character is predicted, never read (a transformer's context is L)
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


def ranking(model: nn.Module, fmt: SecretFormat, chunk: int, samples: int, seed: int, beam: int,
            exact_limit: int) -> Exact | Estimated:
    """Every secret of `fmt` ranked by log p_model(s): exactly up to `exact_limit` secrets, else the Secret
    Sharer's estimate from `samples` random secrets drawn with `seed`."""
    if 10 ** fmt.digits <= exact_limit:
        return Exact(all_scores(model, fmt, chunk))
    values = np.random.default_rng(seed).integers(0, 10 ** fmt.digits, samples)
    sample = scores_of(model, fmt.prefix(), fmt.digit_tokens(), fmt.digits, values, chunk)
    return Estimated(((1.0, model),), fmt, chunk, sample, beam)
