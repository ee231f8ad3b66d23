"""Defences: what each promises about the model it returns."""

from __future__ import annotations

import math

import pytest
import torch

from uia_pipe.params import parse_params
from uia_pipe.defenses import DEFENSES, DefenceInput, noise, noisy_unlearning, prune
from uia_pipe.errors import UiaError
from uia_pipe.weights import prunable
from uia_pipe.unlearning.methods import METHODS


@pytest.fixture(scope="module")
def released(tiny_problem) -> DefenceInput:
    forget = torch.zeros(len(tiny_problem.du_y), dtype=torch.bool)
    forget[[0, 5]] = True
    approx, cfg = METHODS["approx"]
    theta_u = approx(tiny_problem, forget, cfg(eta=1.0))
    p = tiny_problem
    return DefenceInput(p.theta_original, theta_u, p.du_x[forget], p.du_y[forget], p.du_x[~forget], p.du_y[~forget])


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("name", [n for n in DEFENSES if n != "noisy_unlearning"])
def test_strength_zero_returns_the_model_unchanged_bit_for_bit(released, name):
    defend, cfg_type = DEFENSES[name]
    out = defend(released, 0.0, cfg_type(), seed=0)
    assert out is not released.theta_unlearned
    ref = released.theta_unlearned.state_dict()
    for key, value in out.state_dict().items():
        assert torch.equal(value, ref[key]), key


@pytest.mark.parametrize("name", list(DEFENSES))
def test_defences_leave_their_inputs_untouched(released, name):
    before = _flat(released.theta_unlearned).clone(), _flat(released.theta_original).clone()
    defend, cfg_type = DEFENSES[name]
    defend(released, max(cfg_type().strengths), cfg_type(), seed=0)
    assert torch.equal(_flat(released.theta_unlearned), before[0])
    assert torch.equal(_flat(released.theta_original), before[1])


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_pruning_at_rate_r_zeroes_that_fraction_of_prunable_weights(released, rate):
    out = prune.defend(released, rate, prune.Config(), seed=0)
    weights = torch.cat([m.weight.detach().flatten() for m, _ in prunable(out)])
    assert abs(float((weights == 0).float().mean()) - rate) <= 1 / len(weights) + 1e-9
    assert set(out.state_dict()) == set(released.theta_unlearned.state_dict())  # pruning made permanent


@pytest.mark.parametrize("sigma", [0.1, 1.0, 3.0])
def test_noise_norm_is_sigma_times_the_update_norm(released, sigma):
    delta = _flat(released.theta_unlearned) - _flat(released.theta_original)
    out = noise.defend(released, sigma, noise.Config(), seed=1)
    added = _flat(out) - _flat(released.theta_unlearned)
    # ‖ε‖² is σ²‖Δ‖²/d times a χ²_d variable: within a few 1/√d of σ‖Δ‖
    assert float(added.norm() / delta.norm()) == pytest.approx(sigma, rel=5 / math.sqrt(len(delta)))
    assert not torch.equal(_flat(noise.defend(released, sigma, noise.Config(), seed=2)), _flat(out))


def test_noisy_unlearning_without_noise_or_clipping_equals_approx(tiny_problem, released):
    cfg = noisy_unlearning.Config(clip=1e9, eta=1.0)
    out = noisy_unlearning.defend(released, 0.0, cfg, seed=0)
    torch.testing.assert_close(_flat(out), _flat(released.theta_unlearned), rtol=1e-5, atol=1e-6)


def test_noisy_unlearning_clips_each_sample_and_adds_sigma_c_noise(released):
    step = lambda s, c, seed=0: _flat(noisy_unlearning.defend(released, s, noisy_unlearning.Config(clip=c, eta=1.0), seed)) \
        - _flat(released.theta_original)  # noqa: E731
    k = len(released.forget_y)
    assert float(step(0.0, 1e-3).norm()) <= 1e-3 + 1e-7  # mean of k vectors of norm ≤ C
    noise_only = step(2.0, 1e-3, seed=3) - step(0.0, 1e-3)
    assert float(noise_only.norm()) == pytest.approx(2.0 * 1e-3 / k * math.sqrt(len(noise_only)), rel=0.05)


def test_defence_params_are_validated_with_one_line():
    with pytest.raises(UiaError, match="defend.prune.strengths"):
        parse_params({"defend": {"prune": {"strengths": [0.5, 1.5]}}})
    with pytest.raises(UiaError, match="defend.noise.strengths"):
        parse_params({"defend": {"noise": {"strengths": []}}})
    with pytest.raises(UiaError, match="unknown defence 'dropout'"):
        parse_params({"defend": {"defences": ["dropout"]}})
    with pytest.raises(UiaError, match="defend.finetune.strengths"):
        parse_params({"defend": {"finetune": {"strengths": [0.5]}}})
