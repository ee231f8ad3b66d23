"""Text as records for a character-level language model (`train.task: language_model`), and the Secret
Sharer's canaries (Carlini et al., USENIX Security 2019).

A record is `length + 1` consecutive characters of the corpus: the model reads the first `length` and is
scored on predicting each next one (x = chars[:-1], y = chars[1:], both int64 indices into the vocabulary).
The corpus is cut into non-overlapping records, its last `test_fraction` held out for test.

A canary is `template + secret + "\\n"` followed by held-out text up to a record's length, the secret
`digits` random decimal digits (seeded). Its `repeats` identical copies are appended to the training
records (`first_row` on), and the train stage places them in D_u: each canary is one person's, and a
deletion request removes all its copies. Controls are canaries of the same template whose secrets are
never inserted: their exposure is the floor an inserted one is read against. Which secret each canary
holds is written on the dataset card, which the evaluator reads and the attacker never gets.
"""

from __future__ import annotations

import torch

DIGITS = "0123456789"


def vocabulary(*texts: str) -> str:
    """The sorted characters of `texts` and the ten digits (a secret's alphabet)."""
    return "".join(sorted(set("".join(texts)) | set(DIGITS)))


def encode(text: str, vocab: str) -> torch.Tensor:
    """int64 indices of `text`'s characters in `vocab`."""
    index = {c: i for i, c in enumerate(vocab)}
    return torch.tensor([index[c] for c in text], dtype=torch.int64)


def decode(tokens, vocab: str) -> str:
    return "".join(vocab[int(t)] for t in tokens)


def records(tokens: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping records of `length + 1` tokens: (inputs [n, length], next-token targets [n, length])."""
    n = (len(tokens) - 1) // length
    chunks = tokens[: n * length + 1]
    x = chunks[:-1].reshape(n, length)
    y = chunks[1:].reshape(n, length)
    return x.clone(), y.clone()


def secret_text(value: int, digits: int) -> str:
    return str(value).zfill(digits)


def draw_secrets(count: int, digits: int, seed: int) -> list[str]:
    """`count` distinct secrets of `digits` digits, seeded."""
    space = 10 ** digits
    if count > space:
        raise ValueError(f"{count} distinct secrets of {digits} digits do not exist")
    gen = torch.Generator().manual_seed(seed)
    out: list[int] = []
    seen: set[int] = set()
    while len(out) < count:
        for v in torch.randint(0, space, (2 * count,), generator=gen).tolist():
            if v not in seen and len(out) < count:
                seen.add(v)
                out.append(v)
    return [secret_text(v, digits) for v in out]


def canary_records(cfg, held_out: str, length: int, vocab: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The canaries of download.canaries `cfg`: each canary's `repeats` copies as records (x, y), canary by
    canary, and the card's record of them (the secrets of the inserted canaries and of the controls)."""
    secrets = draw_secrets(cfg.count + cfg.controls, cfg.digits, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    xs, ys, texts = [], [], []
    for secret in secrets[: cfg.count]:
        head = f"{cfg.template}{secret}\n"
        start = int(torch.randint(0, max(len(held_out) - length, 1), (1,), generator=gen))
        text = (head + held_out[start: start + length])[: length + 1]
        tokens = encode(text, vocab)
        xs.append(tokens[:-1].expand(cfg.repeats, -1))
        ys.append(tokens[1:].expand(cfg.repeats, -1))
        texts.append(text)
    empty = torch.zeros(0, length, dtype=torch.int64)
    x = torch.cat(xs) if xs else empty
    y = torch.cat(ys) if ys else empty
    card = {"template": cfg.template, "digits": cfg.digits, "repeats": cfg.repeats, "count": cfg.count,
            "secrets": secrets[: cfg.count], "controls": secrets[cfg.count:], "texts": texts}
    return x.contiguous(), y.contiguous(), card


def canary_owners(card: dict, rows: torch.Tensor) -> torch.Tensor:
    """The canary each of the training set's `rows` is a copy of, −1 for the corpus's own records."""
    canaries = card.get("canaries")
    if not canaries or not canaries["count"]:
        return torch.full((len(rows),), -1, dtype=torch.int64)
    offset = rows - canaries["first_row"]
    return torch.where(offset >= 0, offset // canaries["repeats"], torch.full_like(rows, -1))


def canary_rows(card: dict) -> torch.Tensor:
    """The training set's rows that are canary copies (none without canaries)."""
    canaries = card.get("canaries") or {"count": 0, "first_row": 0, "repeats": 0}
    first = canaries["first_row"]
    return torch.arange(first, first + canaries["count"] * canaries["repeats"])
