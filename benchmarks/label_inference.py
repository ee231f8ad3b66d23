"""Label inference on Fashion-MNIST: accuracy against queries per probe strategy.

Run by hand from the repository root (needs data/dataset and models/train):

    .venv/bin/python benchmarks/label_inference.py            # default, ~5 min on 2 cores
    .venv/bin/python benchmarks/label_inference.py --requests 30 --per-class 20
    .venv/bin/python benchmarks/label_inference.py --strategies zoo,zoo@0.9995 --n 512,32   # θ₀ reference

θ = θ₀ (models/train/theta_pretrained) fine-tuned on N pool samples (each N of
--n its own θ) with the finetune settings, batch norm in eval mode. Requests:
single samples and a fraction p of one class in D_u, unlearned exactly and
approximately (η). Each is read with the plain drop (reference none) and
against θ₀ (reference pretrained, weight li.reference_weight(N, k, B); θ₀'s
outputs on the probes cost one query each, once), without and with
leave-one-out calibration. `auto` = pretrained on exact rows, none on approx.
Each cell: accuracy over the requests with a 95% Wilson interval. A strategy
written name@t makes probes to threshold t.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from uia_pipe import io
from uia_pipe.attacks import label_inference as li
from uia_pipe.attacks import probes as P
from uia_pipe.attacks.view import BlackBoxView
from uia_pipe.config import OptimParams
from uia_pipe.data import as_inputs
from uia_pipe.requests import draw_requests
from uia_pipe.stats import wilson_ci as wilson
from uia_pipe.training import evaluate, fit
from uia_pipe.unlearning.methods import METHODS
from uia_pipe.unlearning.problem import UnlearningProblem
from uia_pipe.models import clone

REFERENCE_BOUND = 1024 * 2 * 20 * 10  # coordinates × evaluations × iterations × calls, per probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10, help="requests per cell")
    ap.add_argument("--per-class", type=int, default=10, help="probes per class")
    ap.add_argument("--n", default="512", help="|D_u|, comma-separated for several θ (e.g. 512,32)")
    ap.add_argument("--eta", type=float, default=1e-3, help="approximate unlearning step (≤ 1e-2)")
    ap.add_argument("--strategies", default="zoo,whitebox,auxiliary,noise", help="name or name@threshold, comma-separated")
    ap.add_argument("--references", default="none,pretrained", help="label_inference.reference values to compare")
    ap.add_argument("--threshold", type=float, default=P.ProbeConfig().threshold)
    ap.add_argument("--zoo-reference", action="store_true",
                    help="also run zoo at the reference settings (1,024 coordinates, lr 0.1/0.02, full input, "
                         "threshold 0.9995): hours on a CPU")
    ap.add_argument("--auxiliary", type=int, default=1000, help="test images the auxiliary attacker holds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mixed-k", type=int, default=4, help="samples per mixed-class request (label-count error)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()

    ds = io.load_dataset_artifact("data/dataset")
    split, _ = io.load_tensors("models/train/split.safetensors")
    theta0, spec = io.load_model("models/train/theta_pretrained.safetensors")
    ft = io.load_json("models/train/finetune.json")
    ft_seed = ft.pop("seed")
    finetune = OptimParams(**ft)
    for n in (int(v) for v in args.n.split(",")):
        measure(n, args, ds, split, theta0, spec, finetune, ft_seed)
    print(f"\nreference bound per probe: {REFERENCE_BOUND:,} queries; 0.5% = {REFERENCE_BOUND // 200:,}")
    print(f"total {time.time() - t0:.0f}s")


def _config(name: str, args) -> li.Config:
    strategy, _, threshold = name.partition("@")
    return li.Config(probes=P.ProbeConfig(strategy=strategy, per_class=args.per_class,
                                          threshold=float(threshold or args.threshold)))


def measure(n: int, args, ds, split, theta0, spec, finetune: OptimParams, ft_seed: int) -> None:
    """Every cell for one θ fine-tuned on N = n samples; prints its tables."""
    t0 = time.time()
    pool = split["pool"]
    gen = torch.Generator().manual_seed(args.seed)
    du = pool[torch.randperm(len(pool), generator=gen)[:n]]
    x_train = as_inputs(ds.x_train)
    du_x, du_y = x_train[du], ds.y_train[du]
    x_test, y_test = as_inputs(ds.x_test), ds.y_test
    theta = clone(theta0)
    fit(theta, du_x, du_y, finetune, ft_seed, batchnorm_eval=True)
    problem = UnlearningProblem(theta0, theta, du_x, du_y, finetune, ft_seed)
    shape, classes = tuple(spec["input_shape"]), spec["num_classes"]
    print(f"\n===== θ: N={n}, B={finetune.batch_size}, test accuracy {evaluate(theta, x_test, y_test)['accuracy']:.3f}")

    # probes, once per θ; θ₀'s outputs on them, once
    public = x_test[torch.randperm(len(x_test), generator=gen)[: args.auxiliary]]
    configs = {name: _config(name, args) for name in args.strategies.split(",")}
    if args.zoo_reference:
        configs["zoo_reference"] = li.Config(probes=P.ProbeConfig(
            strategy="zoo", per_class=args.per_class, threshold=0.9995,
            zoo=P.ZooConfig(coordinates=1024, lr=0.1, lr_fine=0.02, resolution=None, max_iterations=200)))
    probes, pstats = {}, {}
    print("\nprobe generation (once per θ)")
    print(f"{'strategy':14} {'queries':>9} {'per probe':>10} {'% of ref bound':>15} {'reached':>8} {'classes':>8} "
          f"{'θ₀ queries':>10} {'s':>6}")
    for name, cfg in configs.items():
        t = time.time()
        before = li.oracle(theta, cfg)
        made, s = li.make_probes(before, cfg, args.seed, input_shape=shape, num_classes=classes, auxiliary=public,
                                 model=theta)
        probes[name], rstats = li.with_reference(made, li.oracle(theta0, cfg))
        pstats[name] = {**s, **rstats}
        print(f"{name:14} {s['queries']:9d} {s['queries_per_probe']:10.0f} "
              f"{100 * s['queries_per_probe'] / REFERENCE_BOUND:14.2f}% {s['reached']:4d}/{s['probes']:<3d} "
              f"{s['classes_covered']:8d} {rstats['reference_queries']:10d} {time.time() - t:6.0f}", flush=True)

    # requests
    cells = {"single": draw_requests(du_y, args.requests, "random", 1, 0.0, args.seed + 1)}
    for p in (0.1, 0.5, 1.0):
        cells[f"p={p}"] = draw_requests(du_y, args.requests, "class", 1, p, args.seed + 2)
    methods = {"exact": METHODS["exact"][1](), "approx": METHODS["approx"][1](eta=args.eta)}
    references = args.references.split(",")
    hits: dict[tuple, list[bool]] = {}
    queries: dict[str, list[int]] = {}
    for cell, requests in cells.items():
        ks = [len(r.forget) for r in requests]
        for method, mcfg in methods.items():
            unlearned = []
            truth = []
            for r in requests:
                mask = r.mask(len(du_y))
                unlearned.append(METHODS[method][0](problem, mask, mcfg))
                truth.append(r.target_class if r.target_class is not None else int(du_y[mask][0]))
            for name, cfg in configs.items():
                for reference in references:
                    use = li.uses_reference(cfg.model_copy(update={"reference": reference}), method)
                    weights = [li.reference_weight(n, k, finetune.batch_size) for k in ks] if use else None
                    for calibration in ("none", "leave_one_out"):
                        c2 = cfg.model_copy(update={"calibration": calibration, "reference": reference})
                        views = [BlackBoxView(li.oracle(theta, c2), li.oracle(tu, c2), classes, shape)
                                 for tu in unlearned]
                        for (res, st), y in zip(li.infer_many(views, probes[name], c2, k=ks, reference_weight=weights),
                                                truth):
                            hits.setdefault((name, method, reference, calibration, cell), []).append(
                                res.predicted[0] == y)
                            queries.setdefault(name, []).append(st["queries"])
        print(f"  {cell} (k = {min(ks)}..{max(ks)}) done at {time.time() - t0:.0f}s", flush=True)

    print(f"\nN={n}: label inference accuracy [95% CI], {args.requests} requests per cell, statistic "
          f"{li.Config().statistic}, approx η={args.eta}")
    header = f"{'strategy':14} {'method':7} {'reference':10} {'calib':6} " + " ".join(f"{c:>17}" for c in cells)
    print(header)
    for name in configs:
        for method in methods:
            for reference in references:
                for calibration in ("none", "leave_one_out"):
                    row = f"{name:14} {method:7} {reference:10} {'loo' if calibration != 'none' else '-':6} "
                    for cell in cells:
                        h = hits[(name, method, reference, calibration, cell)]
                        lo, hi = wilson(sum(h), len(h))
                        row += f" {sum(h) / len(h):.2f} [{lo:.2f},{hi:.2f}]"
                    print(row)

    print(f"\nN={n}: accuracy against queries (all cells, no calibration; θ₀ queries only where referenced)")
    print(f"{'strategy':14} {'reference':10} {'probe queries':>14} {'θ₀ queries':>11} {'per request':>12} {'accuracy':>9}")
    for name in configs:
        for reference in references:
            h = [x for (s_, _, r_, c_, _), v in hits.items() if s_ == name and r_ == reference and c_ == "none"
                 for x in v]
            theta0_queries = pstats[name]["reference_queries"] if reference != "none" else 0
            print(f"{name:14} {reference:10} {pstats[name]['queries']:14d} {theta0_queries:11d} "
                  f"{sum(queries[name]) / len(queries[name]):12.0f} {sum(h) / len(h):9.2f}")
    several(n, args, problem, probes, configs, methods, theta, theta0, finetune.batch_size, classes, shape)
    print(f"N={n} done in {time.time() - t0:.0f}s", flush=True)


def several(n, args, problem, probes, configs, methods, theta, theta0, batch_size, classes, shape) -> None:
    """Requests that remove more than one label: k random samples of mixed
    classes (the estimated label counts against the truth: L1 error / k,
    beside guessing k × D_u's class frequencies) and every sample of two
    classes (top-2: both removed classes ranked first), reference `auto`."""
    du_y = problem.du_y
    mixed = draw_requests(du_y, args.requests, "random", args.mixed_k, 0.0, args.seed + 3)
    pairs = list(itertools.combinations(range(classes), 2))
    gen = torch.Generator().manual_seed(args.seed + 4)
    pairs = [pairs[i] for i in torch.randperm(len(pairs), generator=gen)[: args.requests].tolist()]
    prior = torch.bincount(du_y, minlength=classes).double() / len(du_y)
    print(f"\nN={n}: several labels per request, {args.requests} requests each, reference auto, no calibration")
    print(f"{'strategy':14} {'method':7} {'count error (k=' + str(args.mixed_k) + ')':>22} {'prior guess':>12} "
          f"{'top-2 of 2 classes':>22}")
    for name, cfg in configs.items():
        cfg = cfg.model_copy(update={"reference": "auto"})
        for method, mcfg in methods.items():
            use = li.uses_reference(cfg, method)
            errors, guess = [], []
            masks = [r.mask(len(du_y)) for r in mixed]
            thetas_u = [METHODS[method][0](problem, m, mcfg) for m in masks]
            views = [BlackBoxView(li.oracle(theta, cfg), li.oracle(tu, cfg), classes, shape) for tu in thetas_u]
            ks = [int(m.sum()) for m in masks]
            weights = [li.reference_weight(n, k, batch_size) for k in ks] if use else None
            for (res, _), m, k in zip(li.infer_many(views, probes[name], cfg, k=ks, reference_weight=weights),
                                      masks, ks):
                truth = torch.bincount(du_y[m], minlength=classes).double()
                errors.append(float((torch.tensor(res.label_counts, dtype=torch.float64) - truth).abs().sum()) / k)
                guess.append(float((k * prior - truth).abs().sum()) / k)
            masks = [(du_y == a) | (du_y == b) for a, b in pairs]
            thetas_u = [METHODS[method][0](problem, m, mcfg) for m in masks]
            views = [BlackBoxView(li.oracle(theta, cfg), li.oracle(tu, cfg), classes, shape) for tu in thetas_u]
            ks = [int(m.sum()) for m in masks]
            weights = [li.reference_weight(n, k, batch_size) for k in ks] if use else None
            top2 = [set(res.ranked[:2]) == set(pair) for (res, _), pair in
                    zip(li.infer_many(views, probes[name], cfg, k=ks, reference_weight=weights), pairs)]
            lo, hi = wilson(sum(top2), len(top2))
            print(f"{name:14} {method:7} {sum(errors) / len(errors):22.2f} {sum(guess) / len(guess):12.2f} "
                  f"{sum(top2) / len(top2):9.2f} [{lo:.2f},{hi:.2f}]", flush=True)


if __name__ == "__main__":
    main()
