"""Model registry: name -> (builder, config type). The name is the params key.

Every model takes inputs on the data's natural scale ([0,1] images, encoded
tabular vectors) and normalises inside its forward pass, so attacks optimise
and score images in [0,1] and never see a normalised tensor.
"""

from __future__ import annotations

import copy
import math
from typing import Annotated, Callable, Literal

import torch
import torchvision
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Widths up to 16x the reference ConvNet's 64: at 1,024 its 4w-channel convs already hold ~0.7 billion weights.
MAX_WIDTH = 1024
# Hidden layers of an MLP: at most 16 of at most 8,192 units (~1 billion weights in all).
HiddenWidth = Annotated[int, Field(ge=1, le=8192)]


class ConvNetConfig(_Config):
    width: int = Field(64, ge=1, le=MAX_WIDTH, description="channels of the first conv (reference: 64)")


class MLPConfig(_Config):
    hidden: list[HiddenWidth] = Field([256, 128], min_length=1, max_length=16, description="hidden layer widths")


class TabularMLPConfig(_Config):
    hidden: list[HiddenWidth] = Field([64, 32], min_length=1, max_length=16, description="hidden layer widths")


class ResNet18Config(_Config):
    pass


class LeNetConfig(_Config):
    width: int = Field(12, ge=1, le=MAX_WIDTH, description="channels of each conv (DLG's LeNet: 12)")
    activation: Literal["relu", "sigmoid"] = Field("relu", description="DLG used sigmoid")


class Classifier(nn.Module):
    """`body((x - mean) / std)`: the normalisation is part of the model, as
    buffers, so the parameters are exactly the body's."""

    def __init__(self, body: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.body = body
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("std", std.clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


def convnet(input_shape: tuple[int, ...], num_classes: int, cfg: ConvNetConfig) -> nn.Module:
    """The inverting-gradients ConvNet: eight 3x3 convs with batch norm after
    each, widths w,2w,2w,4w | 4w,4w | 4w,4w separated by 3x3 max-pools."""
    c, h, w_ = input_shape
    w = cfg.width
    layers: list[nn.Module] = [
        *_conv_bn(c, w), *_conv_bn(w, 2 * w), *_conv_bn(2 * w, 2 * w), *_conv_bn(2 * w, 4 * w),
        nn.MaxPool2d(3),
        *_conv_bn(4 * w, 4 * w), *_conv_bn(4 * w, 4 * w),
        nn.MaxPool2d(3),
        *_conv_bn(4 * w, 4 * w), *_conv_bn(4 * w, 4 * w),
        nn.MaxPool2d(3),
        nn.Flatten(),
    ]
    out = (((h // 3) // 3) // 3) * (((w_ // 3) // 3) // 3)
    if out < 1:
        raise ValueError(f"convnet needs inputs of at least 27x27, got {h}x{w_}")
    layers.append(nn.Linear(4 * w * out, num_classes))
    return nn.Sequential(*layers)


def lenet(input_shape: tuple[int, ...], num_classes: int, cfg: LeNetConfig) -> nn.Module:
    """The LeNet of the gradient-leakage literature (Zhu et al., DLG, 2019):
    three 5x5 convs (strides 2, 2, 1), no pooling, no batch norm, a linear
    head. Its gradients determine every pixel, unlike max-pooled ConvNets."""
    c, h, w = input_shape
    act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[cfg.activation]
    k = cfg.width
    out_h, out_w = -(-h // 4), -(-w // 4)
    return nn.Sequential(
        nn.Conv2d(c, k, 5, stride=2, padding=2), act(),
        nn.Conv2d(k, k, 5, stride=2, padding=2), act(),
        nn.Conv2d(k, k, 5, stride=1, padding=2), act(),
        nn.Flatten(),
        nn.Linear(k * out_h * out_w, num_classes),
    )


def resnet18(input_shape: tuple[int, ...], num_classes: int, cfg: ResNet18Config) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem: 3x3 stride-1 first conv, no max-pool."""
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def mlp(input_shape: tuple[int, ...], num_classes: int, cfg: MLPConfig | TabularMLPConfig) -> nn.Module:
    """Flatten, then Linear+ReLU per hidden width, then a linear head."""
    d = 1
    for s in input_shape:
        d *= s
    layers: list[nn.Module] = [nn.Flatten()]
    for h in cfg.hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


MODELS: dict[str, tuple[Callable[..., nn.Module], type[_Config]]] = {
    "mlp": (mlp, MLPConfig),
    "convnet": (convnet, ConvNetConfig),
    "lenet": (lenet, LeNetConfig),
    "resnet18": (resnet18, ResNet18Config),
    "tabular_mlp": (mlp, TabularMLPConfig),
}


def build_model(
    name: str,
    cfg: _Config | dict,
    input_shape: tuple[int, ...],
    num_classes: int,
    mean: list[float] | torch.Tensor,
    std: list[float] | torch.Tensor,
) -> Classifier:
    """A freshly initialised model (seed torch's global RNG first for
    reproducible weights). mean/std are per channel (images) or per feature."""
    builder, cfg_type = MODELS[name]
    if isinstance(cfg, dict):
        cfg = cfg_type(**cfg)
    shape = (-1,) + (1,) * (len(input_shape) - 1)
    mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(shape)
    std_t = torch.as_tensor(std, dtype=torch.float32).reshape(shape)
    return Classifier(builder(tuple(input_shape), num_classes, cfg), mean_t, std_t)


class Ensemble(nn.Module):
    """Members voting by mean probability (SISA's aggregation). Its output is
    log of the mean softmax, so softmax/cross-entropy on it behave as on logits."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([torch.log_softmax(m(x), dim=1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


# train.precision -> the dtype of every model's weights (what the server trains, unlearns and releases)
PRECISIONS: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def from_spec(spec: dict) -> nn.Module:
    """An untrained model of the architecture a saved spec describes: a
    registry model, or an `Ensemble` of them when spec has "ensemble": S, in
    the spec's "dtype" (a key of PRECISIONS; float32 when absent)."""
    members = spec.get("ensemble")
    if members:
        return Ensemble([from_spec({k: v for k, v in spec.items() if k != "ensemble"}) for _ in range(members)])
    model = build_model(
        spec["model"], spec["config"], tuple(spec["input_shape"]), spec["num_classes"], spec["mean"], spec["std"]
    )
    # "dtype" (train.precision): parameters and the normalisation buffers, so float32 inputs are promoted
    return model.to(PRECISIONS[spec.get("dtype", "float32")])


def spec_of(model: nn.Module, member_spec: dict) -> dict:
    """The spec to save with `model`, whose members (if any) are `member_spec` models."""
    if isinstance(model, Ensemble):
        return {**member_spec, "ensemble": len(model.members)}
    return member_spec


def init_model(spec: dict, seed: int) -> nn.Module:
    """The model a training run starts from: `spec` (as saved with the weights)
    built under `seed`, without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return from_spec(spec)


def clone(model: nn.Module) -> nn.Module:
    """An independent copy (parameters and buffers) in eval mode."""
    return copy.deepcopy(model).eval()
