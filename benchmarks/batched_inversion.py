"""Batched inversion benchmark, run by hand (not a test):

    .venv/bin/python benchmarks/batched_inversion.py                      # LeNet end to end at 32 requests
    .venv/bin/python benchmarks/batched_inversion.py --requests 8,32,64 --methods approx,exact

Prints, measured in one run on this machine:
1. [step] ms per request and step of feature recovery's objective, one request at a time (the unbatched
   step the config's `second_order` picks) against every request's step as one vmapped call
   (`_Stacked`), at R = 8, 32, 64 requests, for the trained default model and an untrained width-64
   ConvNet on 3×32×32 (the reference's model);
2. [end to end] `recover` of R real requests (k = 1, the default config and labels) one at a time
   (`vmap: no`, the steps' one-by-one path) against `recover_many` of them as one batch (`vmap: yes`):
   seconds per request, the ratio, and the PSNR of both ways on the same requests (mean, and the largest
   per-request difference).

Needs the default pipeline's data/dataset and models/train (dvc repro train).
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

from benchmarks.feature_recovery import trained_problem  # noqa: E402
from uia_pipe import metrics  # noqa: E402
from uia_pipe.attacks import feature_recovery as fr  # noqa: E402
from uia_pipe.attacks.feature_recovery.objective import _Objective, _Stacked  # noqa: E402
from uia_pipe.attacks.view import AttackerView  # noqa: E402
from uia_pipe.models import build_model  # noqa: E402
from uia_pipe.params import load_params  # noqa: E402
from uia_pipe.unlearning.methods import METHODS  # noqa: E402


def timed(fn, repeats: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - started) / repeats


def step_costs(model: torch.nn.Module, shape: tuple[int, ...], requests: int, fd: bool, repeats: int) -> tuple[float, float]:
    """(ms per request-step one at a time, ms per request-step vmapped) over `requests` random updates."""
    gen = torch.Generator().manual_seed(0)
    objectives, ys = [], []
    for r in range(requests):
        delta = {n: torch.randn(p.shape, generator=gen, dtype=torch.float64) for n, p in model.named_parameters()}
        objectives.append(_Objective(model, delta, 0.01, True, finite_difference=fd))
        ys.append(torch.tensor([r % 10]))
    xs = torch.rand(requests, 1, *shape, generator=gen)
    one = timed(lambda: [o.step(xs[r], ys[r]) for r, o in enumerate(objectives)], repeats)
    stacked = _Stacked(objectives, ys)
    at, weights = list(range(requests)), torch.zeros(requests)
    together = timed(lambda: stacked.step(at, xs, weights), repeats)
    return 1000 * one / requests, 1000 * together / requests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data/dataset")
    ap.add_argument("--trained", type=Path, default=ROOT / "models/train")
    ap.add_argument("--requests", default="32", help="request counts of the end-to-end comparison")
    ap.add_argument("--methods", default="approx", help="unlearning methods of the end-to-end comparison")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the attack stage's default: 1)")
    ap.add_argument("--skip-steps", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    problem, spec, _, ft = trained_problem(args.data, args.trained)
    theta0, theta, du_x = problem.theta_pretrained, problem.theta_original, problem.du_x
    n, shape = len(du_x), tuple(spec["input_shape"])
    cfg = load_params(ROOT / "params.yaml").attack.feature_recovery
    fd = cfg.second_order == "finite_difference"

    if not args.skip_steps:
        torch.manual_seed(0)
        wide = build_model("convnet", {"width": 64}, (3, 32, 32), 10, [0.5] * 3, [0.25] * 3).eval()
        for name, model, model_shape, repeats in ((f"trained {spec['model']}", theta, shape, 5),
                                                  ("width-64 ConvNet", wide, (3, 32, 32), 1)):
            for r in (8, 32, 64):
                one, together = step_costs(model, model_shape, r, fd, repeats)
                print(f"[step] {name}, R={r}: {one:.2f} ms/request one at a time ({cfg.second_order}), "
                      f"{together:.2f} vmapped: {one / together:.2f}x")

    gen = torch.Generator().manual_seed(0)
    for method in args.methods.split(","):
        unlearn, settings = METHODS[method]
        for count in (int(c) for c in args.requests.split(",")):
            requests, truths = [], []
            for r in range(count):
                forget = torch.zeros(n, dtype=torch.bool)
                forget[int(torch.randint(n, (1,), generator=gen))] = True
                view = AttackerView(theta, unlearn(problem, forget, settings()), theta0, method, shape,
                                    spec["num_classes"], n, 1, ft["batch_size"])
                requests.append((view, None, r))
                truths.append(du_x[forget])
            alone_cfg, batch_cfg = cfg.model_copy(update={"vmap": "no"}), cfg.model_copy(update={"vmap": "yes"})
            started = time.perf_counter()
            alone = [fr.recover(v, alone_cfg, s)[0] for v, _, s in requests]
            alone_s = (time.perf_counter() - started) / count
            started = time.perf_counter()
            batch = [r for r, _ in fr.recover_many(requests, batch_cfg)]
            batch_s = (time.perf_counter() - started) / count
            p_alone = [float(metrics.psnr(r.reconstruction, t).mean()) for r, t in zip(alone, truths)]
            p_batch = [float(metrics.psnr(r.reconstruction, t).mean()) for r, t in zip(batch, truths)]
            diff = max(abs(a - b) for a, b in zip(p_alone, p_batch))
            print(f"[end to end] {method}, R={count}: {alone_s:.2f} s/request one at a time, {batch_s:.2f} batched "
                  f"({alone_s / batch_s:.2f}x); PSNR {statistics.mean(p_alone):.2f} dB one at a time, "
                  f"{statistics.mean(p_batch):.2f} batched, largest per-request difference {diff:.2f} dB")


if __name__ == "__main__":
    main()
