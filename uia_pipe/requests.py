"""Deletion requests: which samples of D_u each request asks to remove."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class DeletionRequest:
    """`forget` indexes D_u; `target_class` is set for class requests."""

    index: int
    forget: list[int]
    target_class: int | None = None

    def mask(self, n: int) -> torch.Tensor:
        m = torch.zeros(n, dtype=torch.bool)
        m[self.forget] = True
        return m

    def to_dict(self) -> dict:
        return asdict(self)


def draw_requests(
    du_y: torch.Tensor, count: int, selection: str, k: int, fraction: float, seed: int,
    owners: torch.Tensor | None = None,
) -> list[DeletionRequest]:
    """`count` requests drawn with `seed`.

    random: k distinct samples of D_u each.
    class: a fraction p of one class's samples in D_u (at least one), the
    classes taken in a seeded order that cycles through all present classes,
    so the requests cover them evenly.
    canary: request i removes every copy of canary i (`owners`: each D_u sample's canary, −1 for none),
    one person's sentences; so k is the canaries' repeats.
    """
    gen = torch.Generator().manual_seed(seed)
    n = len(du_y)
    if selection == "random":
        return [
            DeletionRequest(i, sorted(torch.randperm(n, generator=gen)[:k].tolist()))
            for i in range(count)
        ]
    if selection == "class":
        classes = torch.unique(du_y)
        cycle = classes[torch.randperm(len(classes), generator=gen)].tolist()
        out = []
        for i in range(count):
            c = cycle[i % len(cycle)]
            members = torch.nonzero(du_y == c).flatten()
            take = max(1, round(fraction * len(members)))
            chosen = members[torch.randperm(len(members), generator=gen)[:take]]
            out.append(DeletionRequest(i, sorted(chosen.tolist()), int(c)))
        return out
    if selection == "canary":
        have = 0 if owners is None else int(owners.max().item()) + 1 if len(owners) else 0
        if count > have:
            raise ValueError(f"unlearn.requests: {count} canary requests, but D_u holds {have} canaries "
                             "(download.canaries.count)")
        return [DeletionRequest(i, torch.nonzero(owners == i).flatten().tolist()) for i in range(count)]
    raise ValueError(f"unknown selection {selection!r}")
