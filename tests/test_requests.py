from __future__ import annotations

import torch

from uia_pipe.requests import draw_requests


def test_random_requests_are_k_distinct_samples_and_seeded():
    y = torch.arange(40) % 4
    a = draw_requests(y, 5, "random", 3, 0.5, seed=7)
    b = draw_requests(y, 5, "random", 3, 0.5, seed=7)
    assert [r.forget for r in a] == [r.forget for r in b]
    for r in a:
        assert len(set(r.forget)) == 3 and all(0 <= i < 40 for i in r.forget)
        assert r.mask(40).sum() == 3


def test_class_requests_take_a_fraction_of_one_class_and_cycle_classes():
    y = torch.tensor([0] * 10 + [1] * 20 + [2] * 4)
    reqs = draw_requests(y, 6, "class", 1, 0.5, seed=0)
    assert sorted(r.target_class for r in reqs[:3]) == [0, 1, 2]
    for r in reqs:
        members = (y == r.target_class).sum().item()
        assert len(r.forget) == max(1, round(0.5 * members))
        assert all(y[i] == r.target_class for i in r.forget)
    whole = draw_requests(y, 3, "class", 1, 1.0, seed=0)
    assert all(len(r.forget) == (y == r.target_class).sum() for r in whole)
