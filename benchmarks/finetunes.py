"""Stacked fine-tunes benchmark, run by hand (not a test):

    .venv/bin/python benchmarks/finetunes.py                       # ~30 s on one thread
    .venv/bin/python benchmarks/finetunes.py --pairs 8 32 --methods exact --model mlp

Prints, measured in one run on this machine, the seconds per (θ, θ_u) pair that the server's replay takes to
make `P` pairs one by one (`Server.pair`, what membership does with attack.membership.stack: 1) against all at
once as stacked models (`Server.pairs`, torch.func.vmap: stack ≥ P), their ratio, and the largest absolute
difference between the weights made both ways. The recipe is the default run's: θ₀ → θ a full-batch fine-tune
on N = 32 records (lr 1e-3), k = 1 record unlearned by each method. The problem is synthetic (Fashion-MNIST's
shape and classes, a learnable signal; θ₀ pretrained for one epoch), so no pipeline artifact is needed; the
model is the default LeNet (width 32), or an MLP (hidden 256, 128) with `--model mlp`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uia_pipe.config import OptimParams  # noqa: E402
from uia_pipe.evaluation.server import Server  # noqa: E402
from uia_pipe.models import init_model  # noqa: E402
from uia_pipe.training import fit  # noqa: E402
from uia_pipe.unlearning.methods import METHODS  # noqa: E402

SPECS = {
    "lenet": {"model": "lenet", "config": {"width": 32, "activation": "relu"}},
    "mlp": {"model": "mlp", "config": {"hidden": [256, 128]}},
}


def synthetic(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1x28x28 images in [0,1] of 10 classes, each class brightening its own band of rows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(count, 1, 28, 28, generator=g) * 0.5
    y = torch.randint(0, 10, (count,), generator=g)
    for c in range(10):
        x[y == c, :, 2 * c: 2 * c + 6] += 0.5
    return x, y


def max_difference(made_one, made_stacked) -> float:
    """The largest |weight difference| over every θ and θ_u of the pairs."""
    out = 0.0
    for (theta, theta_u), (theta_s, thetas_u) in zip(made_one, made_stacked):
        for a, b in ((theta, theta_s), (theta_u, thetas_u[0])):
            out = max(out, max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters())))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, nargs="+", default=[8, 32, 100], help="P, pairs made at once")
    ap.add_argument("--methods", nargs="+", default=["exact", "approx"], choices=["exact", "approx", "neggrad"])
    ap.add_argument("--model", choices=sorted(SPECS), default="lenet")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (pinned, as a stage pins them)")
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds of each way; the best is printed")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    n, k = 32, 1
    spec = {**SPECS[args.model], "input_shape": [1, 28, 28], "num_classes": 10, "mean": [0.3], "std": [0.3]}
    theta0 = init_model(spec, seed=0)
    fit(theta0, *synthetic(2000, seed=0), OptimParams(epochs=1, lr=0.05, momentum=0.9, batch_size=128), 0)
    finetune = OptimParams(epochs=1, lr=1e-3, batch_size=128)
    x, y = synthetic(max(args.pairs) * n, seed=1)
    forget = torch.zeros(n, dtype=torch.bool)
    forget[:k] = True
    print(f"{args.model}, N = {n}, k = {k}, {torch.get_num_threads()} torch thread(s)")
    print(f"{'method':>8} {'P':>5} {'one by one s/pair':>18} {'stacked s/pair':>15} {'ratio':>7} {'max |Δw|':>10}")
    for method in args.methods:
        server = Server(theta0, finetune, 1, method, METHODS[method][1](), n, k)
        for count in args.pairs:
            xs, ys = x[: count * n].view(count, n, 1, 28, 28), y[: count * n].view(count, n)
            best_one = best_stacked = float("inf")
            for _ in range(args.repeats):  # alternating, so that drift in the machine's speed hits both alike
                started = time.perf_counter()
                made_one = [server.pair(xs[p], ys[p], forget) for p in range(count)]
                best_one = min(best_one, (time.perf_counter() - started) / count)
                started = time.perf_counter()
                made_stacked = server.pairs(xs, ys, [forget[None]] * count)
                best_stacked = min(best_stacked, (time.perf_counter() - started) / count)
            print(f"{method:>8} {count:>5} {best_one:>18.4f} {best_stacked:>15.4f} {best_one / best_stacked:>7.2f} "
                  f"{max_difference(made_one, made_stacked):>10.2e}")
    print("ratio: one by one ÷ stacked seconds per pair (> 1: stacking pays)")


if __name__ == "__main__":
    main()
