"""Image priors of the inversion, each a term of a run's objective in its dummies x alone (GradViT:
Hatamizadeh et al., CVPR 2022): the patch-order prior, the mean squared jump across patch borders, and the
image prior, the batch-norm statistics a small CNN the attacker trains on public data expects of its layers'
inputs (DeepInversion: Yin et al., CVPR 2020). Both are written in plain tensor functions, so that a vmapped
step (`objective._Stacked`) batches them like the cosine."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def model_patch(model: nn.Module) -> int:
    """The side of the model's patches: the kernel of a `patch_embed` conv whose kernel is its stride and
    has no padding (the ViT's); 0 for a model without one."""
    for mod in model.modules():
        conv = getattr(mod, "patch_embed", None)
        if (isinstance(conv, nn.Conv2d) and conv.kernel_size == conv.stride and conv.kernel_size[0] == conv.kernel_size[1]
                and conv.padding in ((0, 0), "valid")):
            return int(conv.kernel_size[0])
    return 0


def patch_jumps(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Mean squared difference between the pixels either side of every patch border (images [.., H, W]):
    scrambled patches jump at their borders, a natural image does not."""
    h, w = x.shape[-2:]
    cols, rows = torch.arange(patch, w, patch), torch.arange(patch, h, patch)
    across = x.new_zeros(())
    if len(cols):
        across = across + ((x[..., :, cols] - x[..., :, cols - 1]) ** 2).mean()
    if len(rows):
        across = across + ((x[..., rows, :] - x[..., rows - 1, :]) ** 2).mean()
    return across


@dataclass
class StatsPrior:
    """A CNN's convolutions (weight, bias) and, after each, its batch norm (weight, bias, running mean,
    running var), with the public data's normalisation. `loss(x)`: Σ over layers of ‖μ(x) − μ̂‖ + ‖σ²(x) − σ̂²‖,
    μ, σ² the per-channel statistics of a conv's output over the dummies' batch and positions, the network run
    with its running statistics (eval mode) from layer to layer."""

    convs: list[tuple[torch.Tensor, torch.Tensor]]
    norms: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]
    mean: torch.Tensor
    std: torch.Tensor

    def to(self, device, dtype) -> "StatsPrior":
        def move(ts):
            return tuple(t.to(device, dtype) for t in ts)
        return StatsPrior([move(c) for c in self.convs], [move(n) for n in self.norms],
                          self.mean.to(device, dtype), self.std.to(device, dtype))

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        h = (x - self.mean) / self.std
        total = x.new_zeros(())
        for i, ((w, b), (gamma, beta, mu, var)) in enumerate(zip(self.convs, self.norms)):
            h = F.conv2d(h, w, b, padding=1)
            flat = h.transpose(0, 1).reshape(h.shape[1], -1)
            m = flat.mean(1)
            v = ((flat - m[:, None]) ** 2).mean(1)
            total = total + (m - mu).norm() + (v - var).norm()
            h = torch.relu((h - mu[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5) * gamma[:, None, None]
                           + beta[:, None, None])
            if i < len(self.convs) - 1:
                h = F.max_pool2d(h, 2)
        return total


def _net(channels: int, classes: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = channels
    for i, w in enumerate(widths):
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        if i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))


def train_stats_prior(public_x: torch.Tensor, public_y: torch.Tensor | None, epochs: int, seed: int,
                      widths: tuple[int, ...] = (16, 32, 32), batch_size: int = 128, lr: float = 0.05) -> StatsPrior:
    """The image prior's CNN (conv-BN-ReLU blocks, max-pooled between them) trained on the public images
    [M, C, H, W] in [0, 1] to classify public_y for `epochs` epochs of SGD with momentum (seeded); without
    labels its batch norms only gather the public data's statistics. Its running statistics are the prior."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x = public_x.float()
        mean = x.mean((0, 2, 3)).reshape(-1, 1, 1)
        std = x.std((0, 2, 3)).reshape(-1, 1, 1).clamp_min(1e-6)
        classes = int(public_y.max()) + 1 if public_y is not None else 1
        net = _net(x.shape[1], classes, widths).train()
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
        for _ in range(epochs if public_y is not None else 0):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), batch_size):
                at = order[i:i + batch_size]
                loss = F.cross_entropy(net((x[at] - mean) / std), public_y[at].long())
                opt.zero_grad()
                loss.backward()
                opt.step()
        # The statistics of the trained weights: one more pass, a cumulative average over the batches.
        for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.reset_running_stats()
            bn.momentum = None
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                net((x[i:i + batch_size] - mean) / std)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    norms = [m for m in net if isinstance(m, nn.BatchNorm2d)]
    return StatsPrior([(c.weight.detach().clone(), c.bias.detach().clone()) for c in convs],
                      [(n.weight.detach().clone(), n.bias.detach().clone(), n.running_mean.clone(),
                        n.running_var.clone()) for n in norms], mean, std)
