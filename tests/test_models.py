"""Every model builds for every input shape the datasets have, and normalises inside."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from uia_pipe.models import MODELS, build_model, init_model

SHAPES = {"fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32), "stl10": (3, 96, 96)}


@pytest.mark.parametrize("name", [m for m in MODELS if m != "tabular_mlp" and not m.startswith("char_")])
@pytest.mark.parametrize("dataset", list(SHAPES))
def test_image_models_build_and_classify(name, dataset):
    shape = SHAPES[dataset]
    if name == "resnet18" and dataset == "stl10":
        pytest.skip("ResNet-18 on 96x96 on a CPU: covered by the 32x32 case")
    _, cfg_type = MODELS[name]
    model = build_model(name, cfg_type() if name != "convnet" else {"width": 4}, shape, 7,
                        [0.5] * shape[0], [0.25] * shape[0]).eval()
    out = model(torch.rand(2, *shape))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("name", [m for m in MODELS if m.startswith("char_")])
def test_language_models_read_characters_and_give_next_character_logits(name):
    model = build_model(name, MODELS[name][1](), (16,), 30, [0.0], [1.0], "language_model").eval()
    assert model(torch.randint(0, 30, (2, 16))).shape == (2, 30, 16)


def test_tabular_mlp_and_normalisation_is_part_of_the_model():
    model = build_model("tabular_mlp", {"hidden": [8]}, (61,), 2, [0.0] * 61, [1.0] * 61)
    assert model(torch.rand(5, 61)).shape == (5, 2)
    img = build_model("mlp", {"hidden": [4]}, (1, 4, 4), 3, [0.5], [0.25])
    x = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(img(x), img.body((x - 0.5) / 0.25))
    assert all(name.startswith("body.") for name, _ in img.named_parameters())


def test_resnet18_has_the_cifar_stem():
    model = build_model("resnet18", {}, (3, 32, 32), 10, [0.5] * 3, [0.25] * 3)
    conv1 = model.body.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
    assert isinstance(model.body.maxpool, torch.nn.Identity)


VIT_SHAPES = [((1, 28, 28), 4), ((1, 28, 28), 7), ((3, 32, 32), 4), ((1, 8, 8), 2), ((1, 8, 8), 4)]


def _vit(shape=(1, 28, 28), classes=10, **cfg):
    return build_model("vit", cfg, shape, classes, [0.5] * shape[0], [0.25] * shape[0])


@pytest.mark.parametrize(("shape", "patch"), VIT_SHAPES)
def test_vit_builds_one_token_per_patch_and_classifies(shape, patch):
    model = _vit(shape, 7, patch=patch).eval()
    tokens = (shape[1] // patch) * (shape[2] // patch)
    assert model.body.pos_embed.shape == (1, tokens + 1, 64)
    assert model(torch.rand(3, *shape)).shape == (3, 7)


def test_vit_parameter_count_is_the_sum_of_its_layers():
    # patch embed 16·64+64, class token 64, positions 50·64; per block two LayerNorms (2·128), qkv 64·192+192,
    # out projection 64·64+64, MLP 64·128+128 and 128·64+64; final LayerNorm 128; head 64·10+10.
    block = 2 * 128 + (64 * 192 + 192) + (64 * 64 + 64) + (64 * 128 + 128) + (128 * 64 + 64)
    expected = (16 * 64 + 64) + 64 + 50 * 64 + 2 * block + 128 + (64 * 10 + 10)
    assert expected == 72_074
    assert sum(p.numel() for p in _vit().parameters()) == expected


def test_vit_head_is_registered_last():
    # What the attacks take for the head: the last nn.Linear (penultimate features), the last [C]/[C, h]
    # parameters (analytic labels), the last parametrised layer (access levels).
    model = _vit()
    assert [n for n, _ in model.named_parameters()][-2:] == ["body.head.weight", "body.head.bias"]
    assert [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1] is model.body.head


def test_vit_refuses_a_patch_that_does_not_tile_the_image_and_heads_that_do_not_divide_dim():
    with pytest.raises(ValueError, match="divisible by the patch size 5, got 28x28"):
        _vit(patch=5)
    with pytest.raises(ValueError, match="got 8x12"):
        _vit((1, 8, 12), patch=8)
    with pytest.raises(ValueError, match="heads must divide dim"):
        MODELS["vit"][1](dim=64, heads=3)


def test_vit_is_deterministic_under_a_seed():
    spec = {"model": "vit", "config": {}, "input_shape": [1, 28, 28], "num_classes": 10, "mean": [0.5], "std": [0.25]}
    a, b, c = init_model(spec, 3), init_model(spec, 3), init_model(spec, 4)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.body.pos_embed, c.body.pos_embed)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_vit_gradients_reach_every_parameter():
    model = _vit((1, 8, 8), 5, patch=2)
    loss = F.cross_entropy(model(torch.rand(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3]))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for (name, _), g in zip(model.named_parameters(), grads):
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name


def test_vit_double_backward_differentiates_a_gradient_in_the_input():
    # The feature-recovery objective's second order: ∇x of a function of ∇θ CE(f(x), y).
    model = _vit((1, 8, 8), 5, patch=4).double()
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    params = list(model.parameters())
    g = torch.autograd.grad(F.cross_entropy(model(x), torch.tensor([2])), params, create_graph=True)
    (gx,) = torch.autograd.grad(sum((gi * gi).sum() for gi in g), x)
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0
    # ... and agrees with a central difference along a random direction
    v, h = torch.randn_like(x), 1e-6

    def sq_grad_norm(z):
        g = torch.autograd.grad(F.cross_entropy(model(z), torch.tensor([2])), params)
        return float(sum((gi * gi).sum() for gi in g))

    numeric = (sq_grad_norm(x.detach() + h * v) - sq_grad_norm(x.detach() - h * v)) / (2 * h)
    assert abs(float((gx * v).sum()) - numeric) <= 1e-5 * abs(numeric) + 1e-12
