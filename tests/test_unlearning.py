"""Facts about the unlearning methods of the paper."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uia_pipe.unlearning.methods import METHODS
from uia_pipe.unlearning import approx, exact


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_approx_update_is_eta_times_forget_gradient(tiny_problem):
    forget = torch.zeros(len(tiny_problem.du_y), dtype=torch.bool)
    forget[[1, 5, 7]] = True
    eta = 0.3
    theta_u = approx.unlearn(tiny_problem, forget, approx.Config(eta=eta))
    theta = tiny_problem.theta_original
    loss = F.cross_entropy(theta(tiny_problem.du_x[forget]), tiny_problem.du_y[forget])
    grad = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(theta.parameters()))])
    delta = _flat(theta_u) - _flat(theta)
    torch.testing.assert_close(delta, eta * grad, rtol=1e-4, atol=1e-6)
    assert delta.norm() > 0


def test_exact_with_nothing_to_forget_reproduces_theta_bit_for_bit(tiny_problem):
    forget = torch.zeros(len(tiny_problem.du_y), dtype=torch.bool)
    theta_u = exact.unlearn(tiny_problem, forget, exact.Config())
    for (name, a), b in zip(theta_u.state_dict().items(), tiny_problem.theta_original.state_dict().values()):
        assert torch.equal(a, b), name


def test_exact_differs_when_forgetting(tiny_problem):
    forget = torch.zeros(len(tiny_problem.du_y), dtype=torch.bool)
    forget[0] = True
    theta_u = exact.unlearn(tiny_problem, forget, exact.Config())
    assert not torch.equal(_flat(theta_u), _flat(tiny_problem.theta_original))


def test_methods_leave_their_inputs_untouched(tiny_problem):
    before = [_flat(tiny_problem.theta_pretrained), _flat(tiny_problem.theta_original)]
    forget = torch.zeros(len(tiny_problem.du_y), dtype=torch.bool)
    forget[:4] = True
    for fn, cfg_type in METHODS.values():
        fn(tiny_problem, forget, cfg_type())
    assert torch.equal(before[0], _flat(tiny_problem.theta_pretrained))
    assert torch.equal(before[1], _flat(tiny_problem.theta_original))


def test_approx_ascent_lowers_confidence_on_the_forget_set(tiny_problem):
    forget = torch.zeros(len(tiny_problem.du_y), dtype=torch.bool)
    forget[:4] = True
    theta_u = approx.unlearn(tiny_problem, forget, approx.Config(eta=1.0))
    x, y = tiny_problem.du_x[forget], tiny_problem.du_y[forget]
    with torch.no_grad():
        before = F.cross_entropy(tiny_problem.theta_original(x), y)
        after = F.cross_entropy(theta_u(x), y)
    assert after > before
