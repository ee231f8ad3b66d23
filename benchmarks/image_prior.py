"""Image priors of feature recovery, run by hand (not a test):

    .venv/bin/python benchmarks/image_prior.py --data <vit run>/data/dataset --trained <vit run>/models/train
    .venv/bin/python benchmarks/image_prior.py --strategies none,all          # the default run's LeNet
    .venv/bin/python benchmarks/image_prior.py ... --strategies patch --curve 100,250,500 --weights 0.1,1,10

The ViT run is the pipeline with `train.model: vit` and `train.pretrain.max_samples: 20000` (benchmarks/tasks.py's
pair; `dvc exp run -S ...` up to `train`). Prints, measured in one run on this machine, for R distinct k = 1
requests of the trained setting (each removes one D_u sample) and each unlearning method: the PSNR (mean and
95% interval over the requests) and seconds per request of feature recovery with each inversion strategy,
beside the mean-image baseline, all requests of a strategy as one batch (`recover_many`, the stage's way):
- none: no prior and no closed-form start (what the ViT got before the strategies);
- patch: the patch-order prior (`patch_prior`, the model's patch side);
- image: the image prior (`image_prior`: a CNN trained on the public test set; its training seconds are
  printed apart and included in the seconds per request);
- analytic: the closed-form start (`analytic_init`: APRIL's patch solve on the ViT, ΔW_i/Δb_i on an MLP);
- closed_form: that start kept as the result, not optimised further (`analytic_refine: false`);
- all: the three together;
- config: params.yaml's feature_recovery as committed (the default run's strategies).
On a model without its own patches (LeNet) give --patch-size; none, patch and image there turn off only
`analytic_init`, which LeNet's strided conv never uses, so they keep its R-GAP guide: params.yaml's attack plus
one prior.
With --curve, the PSNR of each strategy at each number of iterations and each prior weight instead.

Needs the setting's data/dataset and models/train (dvc repro train).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.feature_recovery import trained_problem  # noqa: E402
from uia_pipe import metrics  # noqa: E402
from uia_pipe.attacks import feature_recovery as fr  # noqa: E402
from uia_pipe.attacks.feature_recovery.priors import train_stats_prior  # noqa: E402
from uia_pipe.attacks.view import AttackerView  # noqa: E402
from uia_pipe.data import as_inputs  # noqa: E402
from uia_pipe.params import load_params  # noqa: E402
from uia_pipe.stats import mean_ci  # noqa: E402
from uia_pipe.unlearning.methods import METHODS  # noqa: E402


def strategies(patch: float, image: float, side: int) -> dict[str, dict]:
    off = {"analytic_init": False, "patch_prior": 0.0, "image_prior": 0.0}
    return {"none": off, "patch": {**off, "patch_prior": patch, "patch_size": side},
            "image": {**off, "image_prior": image},
            "analytic": {**off, "analytic_init": True},
            "closed_form": {**off, "analytic_init": True, "analytic_refine": False},
            "all": {"analytic_init": True, "patch_prior": patch, "patch_size": side, "image_prior": image},
            "config": {}}


def requests(problem, spec, ft, method: str, count: int):
    """(view, truth) of `count` distinct k = 1 requests (seeded)."""
    n, shape = len(problem.du_y), tuple(spec["input_shape"])
    unlearn, settings = METHODS[method]
    out = []
    for index in torch.randperm(n, generator=torch.Generator().manual_seed(0))[:count].tolist():
        forget = torch.zeros(n, dtype=torch.bool)
        forget[index] = True
        view = AttackerView(problem.theta_original, unlearn(problem, forget, settings()), problem.theta_pretrained,
                            method, shape, spec["num_classes"], n, 1, ft["batch_size"])
        out.append((view, problem.du_x[forget]))
    return out


def attack(cases, cfg: fr.Config, prior) -> tuple[list[float], float]:
    """PSNR of each request and seconds per request, every request in one batch."""
    started = time.perf_counter()
    done = fr.recover_many([(view, None, seed) for seed, (view, _) in enumerate(cases)], cfg, prior=prior)
    seconds = (time.perf_counter() - started) / len(cases)
    return [float(metrics.psnr(r.reconstruction, truth).mean()) for (r, _), (_, truth) in zip(done, cases)], seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data/dataset")
    ap.add_argument("--trained", type=Path, default=ROOT / "models/train")
    ap.add_argument("--methods", default="approx,exact")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--strategies", default="none,patch,image,analytic,all,config")
    ap.add_argument("--patch-weight", type=float, default=1.0, help="patch_prior of the patch and all strategies")
    ap.add_argument("--patch-size", type=int, default=0, help="patch_size of patch and all (0: the model's)")
    ap.add_argument("--image-weight", type=float, default=0.01, help="image_prior of the image and all strategies")
    ap.add_argument("--iterations", type=int, default=0, help="0 = params.yaml's")
    ap.add_argument("--curve", default="", help="iteration counts: PSNR against steps and prior weight instead")
    ap.add_argument("--weights", default="0.1,1,10", help="--curve: multiples of each prior's weight")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the attack stage's default: 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    problem, spec, ds, ft = trained_problem(args.data, args.trained)
    base_cfg = load_params(ROOT / "params.yaml").attack.feature_recovery
    if args.iterations:
        base_cfg = base_cfg.model_copy(update={"iterations": args.iterations})
    mean_img = metrics.mean_image(as_inputs(ds.x_train))
    started = time.perf_counter()
    prior = train_stats_prior(as_inputs(ds.x_test), ds.y_test, base_cfg.image_prior_epochs, 31)
    prior_s = time.perf_counter() - started
    print(f"{spec['model']} on {spec['input_shape']}; image prior's CNN trained on {len(ds.x_test)} public images "
          f"in {prior_s:.1f} s")
    table = strategies(args.patch_weight, args.image_weight, args.patch_size)
    for method in args.methods.split(","):
        cases = requests(problem, spec, ft, method, args.requests)
        base = mean_ci([float(metrics.baseline_scores(t, mean_img)["psnr"].mean()) for _, t in cases])
        print(f"\n[{method}] {len(cases)} requests, mean image {base[0]:.1f} ± {base[1]:.1f} dB")
        for name in args.strategies.split(","):
            if args.curve:
                for scale in (float(w) for w in args.weights.split(",")):
                    over = {k: (v * scale if k in ("patch_prior", "image_prior") else v) for k, v in table[name].items()}
                    for its in (int(i) for i in args.curve.split(",")):
                        cfg = base_cfg.model_copy(update={**over, "iterations": its})
                        psnr, sec = attack(cases, cfg, prior)
                        m, h = mean_ci(psnr)
                        print(f"  {name:8s} weight x{scale:g} {its:5d} it: {m:5.1f} ± {h:.1f} dB, {sec:.1f} s/request",
                              flush=True)
                continue
            cfg = base_cfg.model_copy(update=table[name])
            psnr, sec = attack(cases, cfg, prior)
            extra = prior_s / len(cases) if cfg.image_prior > 0 else 0.0
            m, h = mean_ci(psnr)
            print(f"  {name:8s}: {m:5.1f} ± {h:.1f} dB (over the mean image {m - base[0]:+.1f}), "
                  f"{sec + extra:.2f} s/request", flush=True)


if __name__ == "__main__":
    main()
