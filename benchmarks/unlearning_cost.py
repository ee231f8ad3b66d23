"""Unlearning cost benchmark, run by hand (not a test):

    .venv/bin/python benchmarks/unlearning_cost.py            # ~5 min on 2 cores
    .venv/bin/python benchmarks/unlearning_cost.py --widths 16 32 64 128 --ks 1 4 16 32
    .venv/bin/python benchmarks/unlearning_cost.py --methods retrain fisher certified amnesiac salun shapley

Prints, measured in one run on this machine, seconds per deletion request for
every unlearning method as k (samples removed) and the model's size (LeNet
width) grow, and each figure as a ratio to `exact` at the same k and width.
The setting is the pipeline's protocol on Fashion-MNIST (needs data/dataset):
θ₀ pretrained on `--pretrain` samples for one epoch, θ its fine-tune on N = 32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uia_pipe import io  # noqa: E402
from uia_pipe.config import OptimParams, PretrainParams  # noqa: E402
from uia_pipe.params import load_params  # noqa: E402
from uia_pipe.data import as_inputs  # noqa: E402
from uia_pipe.models import init_model  # noqa: E402
from uia_pipe.training import fit  # noqa: E402
from uia_pipe.unlearning.methods import METHODS, served_model  # noqa: E402
from uia_pipe.unlearning.problem import Pretraining, UnlearningProblem  # noqa: E402
from uia_pipe.models import clone  # noqa: E402


def problem_for(width: int, ds, n: int, pretrain_samples: int) -> UnlearningProblem:
    card = ds.card
    spec = {"model": "lenet", "config": {"width": width, "activation": "relu"}, "input_shape": card["input_shape"],
            "num_classes": card["num_classes"], "mean": card["mean"], "std": card["std"]}
    order = torch.randperm(card["n_train"], generator=torch.Generator().manual_seed(0))
    du, rest = order[:n], order[n : n + pretrain_samples]
    x, y = as_inputs(ds.x_train), ds.y_train
    pre = PretrainParams(epochs=1, lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=128)
    model = init_model(spec, 0)
    fit(model, x[rest], y[rest], pre, 0)
    finetune = OptimParams(epochs=1, lr=1e-3, batch_size=128)
    theta = clone(model)
    fit(theta, x[du], y[du], finetune, 1, batchnorm_eval=True)
    record = Pretraining(init=lambda: init_model(spec, 0), x=x[rest], y=y[rest], settings=pre, seed=0)
    return UnlearningProblem(clone(model), theta, x[du], y[du], finetune, 1, record)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT / "data/dataset"))
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--pretrain", type=int, default=5000, help="pretraining samples (retrain's cost)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                    help="methods to time (exact, the ratios' base, always runs)")
    args = ap.parse_args()
    ds = io.load_dataset_artifact(args.data)
    params = load_params(ROOT / "params.yaml").unlearn
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; N = {args.n}, "
          f"pretraining {args.pretrain} samples (retrain redoes it)")
    print(f"{'method':14s} {'width':>5s} {'k':>3s} {'s/request':>10s} {'× exact':>8s}")
    for width in args.widths:
        problem = problem_for(width, ds, args.n, args.pretrain)
        for k in args.ks:
            forget = torch.zeros(args.n, dtype=torch.bool)
            forget[:k] = True
            base = None
            for name in ["exact"] + [m for m in args.methods if m != "exact"]:
                fn, _ = METHODS[name]
                cfg = getattr(params, name)
                served_model(name, problem, cfg)  # SISA's shards are trained once, not per request
                times = []
                for _ in range(args.repeats if name != "retrain" else 1):
                    started = time.perf_counter()
                    fn(problem, forget, cfg)
                    times.append(time.perf_counter() - started)
                t = statistics.median(times)
                base = t if name == "exact" else base
                print(f"{name:14s} {width:5d} {k:3d} {t:10.4f} {t / base:8.1f}", flush=True)


if __name__ == "__main__":
    main()
