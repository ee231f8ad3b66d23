import math

import pytest

from scipy import stats as sps

from uia_pipe.stats import mean_ci, sign_test, wilson_ci


def test_mean_ci_matches_the_t_interval():
    mean, half = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    # sd = 1.2910, t(0.975, 3) = 3.1824 -> 3.1824 * 1.2910 / 2
    assert half == pytest.approx(2.0543, abs=1e-3)
    assert mean_ci([5.0, 5.0])[1] == 0
    assert math.isnan(mean_ci([1.0])[1])


def test_wilson_interval_known_values():
    low, high = wilson_ci(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-3), pytest.approx(0.9433, abs=1e-3))
    assert wilson_ci(10, 10)[1] == pytest.approx(1.0) and wilson_ci(0, 10)[0] == pytest.approx(0.0)


def test_mean_ci_edge_cases_and_levels():
    assert all(math.isnan(v) for v in mean_ci([]))
    assert mean_ci([0.1] * 7)[1] == 0
    assert math.isnan(mean_ci([float("inf"), float("inf")])[1])  # inf − inf: no spread to measure
    values = [24.0, 26.0, 29.5, 31.0]
    for level in (0.8, 0.99):
        sd = math.sqrt(sum((v - 27.625) ** 2 for v in values) / 3)
        assert mean_ci(values, level)[1] == pytest.approx(sps.t.ppf(0.5 + level / 2, 3) * sd / 2, rel=1e-12)


def test_wilson_interval_edges():
    assert all(math.isnan(v) for v in wilson_ci(0, 0))
    assert wilson_ci(10, 10)[1] == 1.0 and wilson_ci(0, 10)[0] == 0.0
    low, high = wilson_ci(1, 1)
    assert 0 < low < high == 1.0


def test_sign_test():
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 32)
    assert sign_test(3, 3) == 1.0
