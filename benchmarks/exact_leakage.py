"""Exact unlearning's leakage as a curve over N, run by hand (not a test):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/exact_leakage.py          # ~6 min on one shared core
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/exact_leakage.py --cases 32:1 512:1 --targets 8 --iterations 1000
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/exact_leakage.py --fresh-pretrain 5000   # a weaker θ₀
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/exact_leakage.py --cases 32:4 --targets 6 --iterations 500 \
        --labels oracle --k-strategy joint   # k = 4, all four dummies at once (the reference)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/exact_leakage.py --cases 32:1 --targets 8 --iterations 500 \
        --precision float64     # θ₀, the fine-tune and both unlearnings in float64: what float32 release hides

For each case N:k (|D_u| = N, k samples removed per request), θ₀ is the
pipeline's (models/train), D_u the first N samples of its held-out pool (so
N = 32 is the pipeline's own D_u and θ), and θ is θ₀ fine-tuned on D_u with
models/train/finetune.json's settings (one epoch, batch B = 128, lr 1e-3): one
full batch for N ≤ 128, several minibatches above. Requests are seeded random
k-subsets of D_u. Prints, measured in one run, for exact unlearning with each
estimator of `attack.feature_recovery.exact_update` and for approximate
unlearning (unlearn.approx.eta) at the same N:

- cos: cosine between the observed Δ and the true Σ_X ∇CE at the attack
  point (θ₀ for exact, θ for approx): mean, median and fraction > 0.9 over
  --cos-targets requests, beside the median ‖Σ_X ∇CE(θ₀)‖ (well-fitted
  samples have small gradients, which the minibatch residue drowns);
- PSNR: feature recovery with params.yaml's attack.feature_recovery at
  --iterations, mean over the first --targets requests, its label accuracy,
  and two baselines: the mean image, and the class-mean image of each
  sample's true label (what a guess that knows the label scores).

Where a = N and b = N − k for both estimators (N ≤ B) their Δ is checked to
be bit-identical and the recovery is run once. Needs data/dataset and
models/train (dvc repro train); --fresh-pretrain S instead pretrains a LeNet
on S samples with benchmarks/unlearning_cost.py's helper.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from unlearning_cost import problem_for  # noqa: E402

from uia_pipe import io, metrics  # noqa: E402
from uia_pipe.attacks import feature_recovery as fr  # noqa: E402
from uia_pipe.attacks.families.feature_recovery import multiset_overlap  # noqa: E402
from uia_pipe.attacks.view import AttackerView  # noqa: E402
from uia_pipe.config import OptimParams  # noqa: E402
from uia_pipe.params import load_params  # noqa: E402
from uia_pipe.data import as_inputs  # noqa: E402
from uia_pipe.training import fit  # noqa: E402
from uia_pipe.unlearning.methods import METHODS  # noqa: E402
from uia_pipe.unlearning.problem import UnlearningProblem  # noqa: E402
from uia_pipe.models import clone  # noqa: E402


def pipeline_problem(trained: Path, ds, n: int, dtype: torch.dtype = torch.float32) -> UnlearningProblem:
    """The train stage's protocol at |D_u| = n: its θ₀, D_u = the first n of its
    pool, θ = θ₀ fine-tuned on D_u; θ₀ and D_u cast to `dtype` first (the models
    normalise inside, so float32 dummies are promoted), so the fine-tune, the
    unlearning and the released weights all live in it."""
    theta0, _ = io.load_model(trained / "theta_pretrained.safetensors")
    theta0 = theta0.to(dtype)
    pool = io.load_tensors(trained / "split.safetensors")[0]["pool"]
    if n > len(pool):
        raise SystemExit(f"N = {n} exceeds the pipeline's pool of {len(pool)} (train.pool_size)")
    ft = io.load_json(trained / "finetune.json")
    settings = OptimParams(**{k: v for k, v in ft.items() if k != "seed"})
    du_x, du_y = as_inputs(ds.x_train[pool[:n]]).to(dtype), ds.y_train[pool[:n]]
    theta = clone(theta0)
    fit(theta, du_x, du_y, settings, ft["seed"], batchnorm_eval=True)
    return UnlearningProblem(theta0, theta, du_x, du_y, settings, ft["seed"])


def summed_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Σ_X ∇_θ CE at `model` (float64), keyed like fr.observed_update."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [dict(model.named_parameters())[n] for n in names]
    grads = torch.autograd.grad(F.cross_entropy(model.eval()(x), y, reduction="sum"), params)
    return {n: g.detach().double() for n, g in zip(names, grads)}


def cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    fa = torch.cat([a[n].reshape(-1).double() for n in b])
    fb = torch.cat([b[n].reshape(-1).double() for n in b])
    return float(fa @ fb / (fa.norm() * fb.norm()))


def norm(d: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum((v.double() ** 2).sum() for v in d.values())))


def requests_for(n: int, k: int, count: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1000 * n + k)
    out = []
    for _ in range(count):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=gen)[:k]] = True
        out.append(mask)
    return out


def run_case(problem: UnlearningProblem, k: int, classes: int, args, fr_cfg: fr.Config, eta: float,
             mean_img: torch.Tensor, class_means: torch.Tensor) -> list[dict]:
    """One row per exact estimator and one for approx, for this problem and k."""
    n, batch = len(problem.du_y), problem.finetune.batch_size
    shape = tuple(problem.du_x.shape[1:])
    forgets = requests_for(n, k, max(args.cos_targets, args.targets), args.seed)
    exact, approx = METHODS["exact"], METHODS["approx"]
    rows = {name: {"cos": [], "psnr": [], "labels": [], "seconds": 0.0} for name in (*fr.EXACT_UPDATES, "approx")}
    grad_norms, identical, baseline, class_baseline = [], True, [], []
    for j, forget in enumerate(forgets):
        x, y = problem.du_x[forget], problem.du_y[forget]
        g0 = summed_gradient(problem.theta_pretrained, x, y)
        grad_norms.append(norm(g0))
        theta_u = exact[0](problem, forget, exact[1]())
        view = AttackerView(problem.theta_original, theta_u, problem.theta_pretrained, "exact", shape, classes, n, k,
                            batch)
        deltas = {name: fr.observed_update(view, exact_update=name) for name in fr.EXACT_UPDATES}
        same = all(torch.equal(deltas["count_weighted"][p], d[p]) for d in deltas.values() for p in d)
        identical &= same
        for name, delta in deltas.items():
            rows[name]["cos"].append(cosine(delta, g0))
        theta_ua = approx[0](problem, forget, approx[1](eta=eta))
        view_a = AttackerView(problem.theta_original, theta_ua, None, "approx", shape, classes, n, k, batch)
        rows["approx"]["cos"].append(cosine(fr.observed_update(view_a), summed_gradient(problem.theta_original, x, y)))
        if j >= args.targets:
            continue
        baseline.append(float(metrics.baseline_scores(x.float(), mean_img)["psnr"].mean()))
        class_baseline.append(float(metrics.baseline_scores(x.float(), class_means[y])["psnr"].mean()))
        done: dict[str, tuple[float, float]] = {}
        for name, v in [*((e, view) for e in fr.EXACT_UPDATES), ("approx", view_a)]:
            if name != "approx" and same and done:
                psnr, acc = next(iter(done.values()))  # bit-identical Δ: the same recovery
            else:
                started = time.perf_counter()
                cfg = fr_cfg if name == "approx" else fr_cfg.model_copy(update={"exact_update": name})
                result, _ = fr.recover(v, cfg, args.seed + j, labels=y)
                rows[name]["seconds"] += time.perf_counter() - started
                psnr = float(metrics.image_scores(result.reconstruction, x.float())["psnr"].mean())
                acc = multiset_overlap(result.labels, y)
                if name != "approx":
                    done[name] = (psnr, acc)
            rows[name]["psnr"].append(psnr)
            rows[name]["labels"].append(acc)
    out = []
    for name, r in rows.items():
        out.append({
            "N": n, "k": k, "B": batch, "update": name if name == "approx" else f"exact/{name}",
            "cos_mean": statistics.mean(r["cos"]), "cos_median": statistics.median(r["cos"]),
            "cos_above_0.9": sum(c > 0.9 for c in r["cos"]) / len(r["cos"]),
            "grad_median": statistics.median(grad_norms),
            "psnr": statistics.mean(r["psnr"]) if r["psnr"] else float("nan"),
            "labels": statistics.mean(r["labels"]) if r["labels"] else float("nan"),
            "baseline": statistics.mean(baseline) if baseline else float("nan"),
            "class_baseline": statistics.mean(class_baseline) if class_baseline else float("nan"),
            "identical": identical if name != "approx" else None, "seconds": r["seconds"],
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data/dataset")
    ap.add_argument("--trained", type=Path, default=ROOT / "models/train")
    ap.add_argument("--cases", nargs="+", default=["8:1", "32:1", "128:1", "256:1", "512:1", "32:4"],
                    help="N:k pairs (|D_u|, samples per request)")
    ap.add_argument("--cos-targets", type=int, default=24, help="requests per case for the cosines (cheap)")
    ap.add_argument("--targets", type=int, default=4, help="of those, requests attacked for PSNR (costly)")
    ap.add_argument("--iterations", type=int, default=300, help="feature-recovery iterations per restart")
    ap.add_argument("--labels", choices=["analytic", "oracle"], default=None,
                    help="override attack.feature_recovery.labels (default: params.yaml's)")
    ap.add_argument("--joint-guide-depth", type=int, default=None,
                    help="override attack.feature_recovery.joint_guide_depth (k > 1; default: params.yaml's)")
    ap.add_argument("--k-strategy", choices=["joint", "backfit"], default=None,
                    help="override attack.feature_recovery.k_strategy (k > 1; default: params.yaml's)")
    ap.add_argument("--fresh-pretrain", type=int, default=0,
                    help="S > 0: a fresh LeNet (width 32) pretrained 1 epoch on S samples, "
                         "instead of the pipeline's θ₀")
    ap.add_argument("--precision", choices=["float32", "float64"], default="float32",
                    help="dtype of θ₀, D_u, the fine-tune and the unlearning, i.e. of the released weights "
                         "(the pipeline's: float32); float64 only with the pipeline's θ₀")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.fresh_pretrain and args.precision != "float32":
        raise SystemExit("--precision float64 needs the pipeline's θ₀ (drop --fresh-pretrain)")
    dtype = getattr(torch, args.precision)
    torch.set_num_threads(args.threads)
    params = load_params(ROOT / "params.yaml")
    fr_cfg = params.attack.feature_recovery.model_copy(
        update={"iterations": args.iterations, **({"labels": args.labels} if args.labels else {}),
                **({} if args.joint_guide_depth is None else {"joint_guide_depth": args.joint_guide_depth}),
                **({"k_strategy": args.k_strategy} if args.k_strategy else {})})
    ds = io.load_dataset_artifact(args.data)
    mean_img = metrics.mean_image(as_inputs(ds.x_train[:5000]))
    class_means = metrics.class_mean_images(as_inputs(ds.x_train[:5000]), ds.y_train[:5000], ds.card["num_classes"])
    source = (f"fresh LeNet, 1 epoch on {args.fresh_pretrain}" if args.fresh_pretrain
              else f"pipeline θ₀ ({args.trained})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); θ₀: {source}; {args.precision}; "
          f"feature recovery: {args.iterations} it, {fr_cfg.restarts} restarts, labels {fr_cfg.labels}, "
          f"optimizer {fr_cfg.optimizer}, k > 1: {fr_cfg.k_strategy}; "
          f"cos over {args.cos_targets} requests, PSNR over the first {args.targets}")
    header = (f"{'N':>4s} {'k':>2s} {'B':>4s} {'update':22s} {'cos mean':>8s} {'median':>7s} {'>0.9':>5s} "
              f"{'|g_X| med':>9s} {'PSNR dB':>7s} {'labels':>6s} {'base dB':>7s} {'class dB':>8s} {'s':>6s}")
    print(header)
    started = time.perf_counter()
    pipeline_n = len(io.load_tensors(args.trained / "split.safetensors")[0]["du"]) if not args.fresh_pretrain else 0
    for case in args.cases:
        n, k = (int(v) for v in case.split(":"))
        problem = problem_for(32, ds, n, args.fresh_pretrain) if args.fresh_pretrain else \
            pipeline_problem(args.trained, ds, n, dtype)
        if n == pipeline_n and dtype == torch.float32:
            served, _ = io.load_model(args.trained / "theta_original.safetensors")
            gap = max(float((a - b).abs().max()) for a, b in zip(served.state_dict().values(),
                                                                  problem.theta_original.state_dict().values()))
            print(f"  (N = {n} is the pipeline's own D_u; θ rebuilt here vs models/train's θ: "
                  f"max |difference| {gap:.1e})")
        for row in run_case(problem, k, ds.card["num_classes"], args, fr_cfg, params.unlearn.approx.eta, mean_img,
                           class_means):
            note = "  (Δ bit-identical to count_weighted)" if row["identical"] and "batch" in row["update"] else ""
            print(f"{row['N']:4d} {row['k']:2d} {row['B']:4d} {row['update']:22s} {row['cos_mean']:8.3f} "
                  f"{row['cos_median']:7.3f} {row['cos_above_0.9']:5.2f} {row['grad_median']:9.3f} "
                  f"{row['psnr']:7.2f} {row['labels']:6.2f} {row['baseline']:7.2f} {row['class_baseline']:8.2f} "
                  f"{row['seconds']:6.1f}{note}",
                  flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
