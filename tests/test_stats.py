import math

import pytest

from uia_pipe.stats import mean_ci, wilson_ci


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
