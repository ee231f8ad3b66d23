"""The Shapley-guided SISA: KNN-Shapley values against exact enumeration, the value-balanced deal, and
SISA's deletion on it."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from tests.conftest import feature_problem
from uia_pipe.unlearning import shapley, sisa


def _utility(subset: list[int], f, y, vf, vy, k: int) -> float:
    """Jia et al.'s KNN utility, averaged over the validation points; U(∅) = 0."""
    if not subset:
        return 0.0
    total = 0.0
    for v in range(len(vy)):
        near = sorted(subset, key=lambda i: (float((f[i] - vf[v]).norm()), i))[:k]
        total += sum(float(y[i] == vy[v]) for i in near) / k
    return total / len(vy)


def _enumerated(f, y, vf, vy, k: int) -> torch.Tensor:
    """Shapley values by the definition: the mean marginal contribution over all orders."""
    n, out = len(y), torch.zeros(len(y), dtype=torch.float64)
    orders = list(itertools.permutations(range(n)))
    for order in orders:
        for pos, i in enumerate(order):
            before = list(order[:pos])
            out[i] += _utility(before + [i], f, y, vf, vy, k) - _utility(before, f, y, vf, vy, k)
    return out / len(orders)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_knn_shapley_equals_exact_enumeration_on_four_points(k):
    f = torch.tensor([[0.0, 0.0], [1.0, 0.2], [0.3, 1.5], [2.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])
    vf = torch.tensor([[0.2, 0.1], [1.8, 1.6]], dtype=torch.float64)
    vy = torch.tensor([0, 0])
    got = shapley.knn_shapley(f, y, vf, vy, k)
    torch.testing.assert_close(got, _enumerated(f, y, vf, vy, k), rtol=0, atol=1e-9)
    assert got.abs().sum() > 0


def test_values_sum_to_the_utility_of_the_whole_set():
    gen = torch.Generator().manual_seed(3)
    f, vf = torch.randn(10, 3, generator=gen), torch.randn(6, 3, generator=gen)
    y, vy = torch.randint(0, 3, (10,), generator=gen), torch.randint(0, 3, (6,), generator=gen)
    values = shapley.knn_shapley(f, y, vf, vy, 4)
    assert float(values.sum()) == pytest.approx(_utility(list(range(10)), f, y, vf, vy, 4), abs=1e-12)


def _three_overlapping_clusters(seed: int = 0):
    """24 float64 points in the plane, 8 per class around three centres 2 apart with unit spread: the
    classes overlap, so the in-sample values differ from sample to sample (each of the 24 its own value
    here). Float64 features and exact KNN-Shapley arithmetic: the same values on any CPU."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(24) % 3
    centres = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    return feature_problem(centres[y] + torch.randn(24, 2, generator=gen, dtype=torch.float64), y)


def test_the_snake_deal_balances_value_across_shards():
    """Shapley's layout is the snake deal of D_u by value, and it shares the value out evenly.

    Dealt one value per shard a round in rank order, two shards' sums differ by at most the sum over
    rounds of the round's range (the gap a one-way deal always leaves between its first and last shard);
    the snake's alternating direction cancels much of it: 0.013 against 0.024 here (asserted: under 0.6
    of it). And the deal is far more even than SISA's seeded random split of the same data: the standard
    deviation of the shards' value sums is 0.0059 against 0.027 (asserted: under half)."""
    problem = _three_overlapping_clusters()
    cfg = shapley.Config(shards=4, slices=2)
    value = shapley.values(problem, cfg)
    assert len(set(value.round(decimals=12).tolist())) >= 12  # values to balance, not one value 24 times
    shards = shapley.balanced_shards(value, 4)
    assert sorted(torch.cat(shards).tolist()) == list(range(len(value)))
    assert {len(s) for s in shards} == {6}
    ours = shapley.layout(problem, cfg)
    assert [sorted(torch.cat(s).tolist()) for s in ours] == [sorted(s.tolist()) for s in shards]
    sums = lambda layout: torch.stack([value[torch.cat(s)].sum() for s in layout])
    rounds = torch.sort(value, descending=True).values.split(4)
    assert float(sums(ours).max() - sums(ours).min()) <= 0.6 * sum(float(r.max() - r.min()) for r in rounds)
    theirs = sums(sisa.layout(problem, sisa.Config(shards=4, slices=2)))
    assert float(sums(ours).std()) < 0.5 * float(theirs.std())


def test_shapley_keeps_sisa_s_server_state_and_refuses_too_many_shards(tiny_problem):
    """Its deletions are SISA's (tests/test_unlearning_methods.py runs the one-shard test on both)."""
    cfg = shapley.Config(shards=4, slices=2)
    system = shapley.build(tiny_problem, cfg)
    _, index = shapley.server_state(tiny_problem, cfg)
    assert index["slices"] == [[idx.tolist() for idx in shard] for shard in system.slices]
    with pytest.raises(ValueError, match=r"shapley needs shards × slices ≤ N \(5 × 5 > 24\)"):
        shapley.layout(tiny_problem, shapley.Config(shards=5, slices=5))
    assert not math.isnan(float(shapley.values(tiny_problem, cfg).sum()))


def test_in_sample_values_are_the_mean_over_each_left_out_validation_point():
    gen = torch.Generator().manual_seed(4)
    f, y = torch.randn(9, 5, generator=gen, dtype=torch.float64), torch.randint(0, 2, (9,), generator=gen)
    f[7] = f[2]  # a duplicate: equal distances, ties by index
    for k in (1, 3, 20):
        expected = torch.zeros(9, dtype=torch.float64)
        for j in range(9):
            rest = torch.arange(9) != j
            expected[rest] += shapley.knn_shapley(f[rest], y[rest], f[j : j + 1], y[j : j + 1], k)
        torch.testing.assert_close(shapley.in_sample_values(f, y, k), expected / 8, rtol=0, atol=1e-12)


def test_the_deal_breaks_exact_ties_by_index_whatever_the_rounding_noise():
    value = torch.tensor([0.5, 0.25, 0.5, 0.25, 0.25, 0.5, 0.125, 0.125], dtype=torch.float64)
    noise = torch.tensor([0, 3e-17, -2e-17, 0, -4e-17, 1e-17, 0, 2e-17], dtype=torch.float64)
    expected = [[0, 4, 6], [2, 3, 7], [5, 1]]  # ranked 0 2 5 1 3 4 6 7, to shards 0 1 2 2 1 0 0 1
    assert [s.tolist() for s in shapley.balanced_shards(value, 3)] == expected
    assert [s.tolist() for s in shapley.balanced_shards(value + noise, 3)] == expected
