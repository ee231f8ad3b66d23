"""Model registry: name -> (builder, config type). The name is the params key.

Every model takes inputs on the data's natural scale ([0,1] images, encoded
tabular vectors) and normalises inside its forward pass, so attacks optimise
and score images in [0,1] and never see a normalised tensor.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torchvision
from torch import nn

# The config types live in the schema leaf model_config (validating params imports no torch); re-exported here.
from .attention import _Attention
from .model_config import (  # noqa: F401
    MAX_WIDTH,
    MODEL_CONFIGS,
    TASKS,
    CharLSTMConfig,
    CharTransformerConfig,
    ConvNetConfig,
    HiddenWidth,
    LeNetConfig,
    LinearConfig,
    MLPConfig,
    ResNet18Config,
    TabularMLPConfig,
    ViTConfig,
    _Config,
)


class Classifier(nn.Module):
    """`body((x - mean) / std)`: the normalisation is part of the model, as
    buffers, so the parameters are exactly the body's."""

    def __init__(self, body: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.body = body
        self.register_buffer("mean", mean.clone().float())
        self.register_buffer("std", std.clone().float())

    task = "classification"  # uia_pipe.tasks: what the output means

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


class Regressor(Classifier):
    """A Classifier whose single output is the standardised target value."""

    task = "regression"


class Reconstructor(Classifier):
    """An autoencoder: the body maps the normalised input to as many outputs as it has entries, a
    sigmoid puts them on the [0, 1] image scale, and the output is the residual sigmoid(body) − x,
    so the task's loss (`tasks.loss` against zero) is the reconstruction's mean squared error."""

    task = "autoencoder"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body((x - self.mean) / self.std)).view_as(x) - x

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self(x) + x


class LanguageModel(Classifier):
    """A character-level language model (`uia_pipe.lm_models`): character indices in, next-character logits
    [B, V, L] out, no normalisation; `start`, `step` and `select` score continuations incrementally."""

    task = "language_model"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def start(self, x: torch.Tensor):
        return self.body.start(x)

    def step(self, tokens: torch.Tensor, state):
        return self.body.step(tokens, state)

    def select(self, state, rows: torch.Tensor):
        return self.body.select(state, rows)


WRAPPERS: dict[str, type[Classifier]] = {"classification": Classifier, "regression": Regressor,
                                         "autoencoder": Reconstructor, "language_model": LanguageModel}
assert tuple(WRAPPERS) == TASKS, "models.WRAPPERS and model_config.TASKS disagree"


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


class _Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)), the MLP Linear-GELU-Linear."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT (Dosovitskiy et al., 2021) in timm's layout and names: patches embedded by a conv with
    kernel = stride = patch, a class token, learned position embeddings, pre-norm blocks, a final
    LayerNorm and a linear head on the class token (registered last: the head of every model here)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, cfg: ViTConfig):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"vit needs image inputs [C, H, W], got shape {list(input_shape)}")
        c, h, w = input_shape
        p = cfg.patch
        if h % p or w % p:
            raise ValueError(f"vit needs H and W divisible by the patch size {p}, got {h}x{w}")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, (h // p) * (w // p) + 1, cfg.dim))
        self.patch_embed = nn.Conv2d(c, cfg.dim, p, stride=p)
        self.blocks = nn.Sequential(*[_Block(cfg.dim, cfg.heads, cfg.mlp_ratio * cfg.dim) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, num_classes)
        # timm's init: trunc-normal(0.02) tokens and Linear weights, zero biases; the conv keeps torch's.
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit(input_shape: tuple[int, ...], num_classes: int, cfg: ViTConfig) -> nn.Module:
    """A small vision transformer (`VisionTransformer`); H and W must be multiples of the patch size."""
    return VisionTransformer(input_shape, num_classes, cfg)


def linear(input_shape: tuple[int, ...], num_classes: int, cfg: LinearConfig) -> nn.Module:
    """Flatten, then one linear layer: linear (train.task: regression) or multinomial logistic regression."""
    d = 1
    for s in input_shape:
        d *= s
    return nn.Sequential(nn.Flatten(), nn.Linear(d, num_classes))


def char_lstm(input_shape: tuple[int, ...], num_classes: int, cfg: CharLSTMConfig) -> nn.Module:
    """A character-level LSTM over records of input_shape[0] characters (`lm_models.CharLSTM`)."""
    from .lm_models import CharLSTM

    return CharLSTM(input_shape[0], num_classes, cfg)


def char_transformer(input_shape: tuple[int, ...], num_classes: int, cfg: CharTransformerConfig) -> nn.Module:
    """A small causal transformer over characters (`lm_models.CharTransformer`)."""
    from .lm_models import CharTransformer

    return CharTransformer(input_shape[0], num_classes, cfg)


MODELS: dict[str, tuple[Callable[..., nn.Module], type[_Config]]] = {
    "mlp": (mlp, MLPConfig),
    "convnet": (convnet, ConvNetConfig),
    "lenet": (lenet, LeNetConfig),
    "resnet18": (resnet18, ResNet18Config),
    "tabular_mlp": (mlp, TabularMLPConfig),
    "linear": (linear, LinearConfig),
    "vit": (vit, ViTConfig),
    "char_lstm": (char_lstm, CharLSTMConfig),
    "char_transformer": (char_transformer, CharTransformerConfig),
}
assert {name: cfg for name, (_, cfg) in MODELS.items()} == MODEL_CONFIGS and list(MODELS) == list(MODEL_CONFIGS), \
    "models.MODELS and model_config.MODEL_CONFIGS disagree"


def build_model(
    name: str,
    cfg: _Config | dict,
    input_shape: tuple[int, ...],
    num_classes: int,
    mean: list[float] | torch.Tensor,
    std: list[float] | torch.Tensor,
    task: str = "classification",
) -> Classifier:
    """A freshly initialised model (seed torch's global RNG first for
    reproducible weights). mean/std are per channel (images) or per feature;
    num_classes is the output size; `task` picks the wrapper (WRAPPERS)."""
    builder, cfg_type = MODELS[name]
    if isinstance(cfg, dict):
        cfg = cfg_type(**cfg)
    shape = (-1,) + (1,) * (len(input_shape) - 1)
    mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(shape)
    std_t = torch.as_tensor(std, dtype=torch.float32).reshape(shape)
    return WRAPPERS[task](builder(tuple(input_shape), num_classes, cfg), mean_t, std_t)


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
        spec["model"], spec["config"], tuple(spec["input_shape"]), spec["num_classes"], spec["mean"], spec["std"],
        spec.get("task", "classification"),
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
