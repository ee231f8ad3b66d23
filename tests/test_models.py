"""Every model builds for every input shape the datasets have, and normalises inside."""

from __future__ import annotations

import pytest
import torch

from uia_pipe.models import MODELS, build_model

SHAPES = {"fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32), "stl10": (3, 96, 96)}


@pytest.mark.parametrize("name", [m for m in MODELS if m != "tabular_mlp"])
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
