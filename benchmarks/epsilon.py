"""The unlearning challenge's per-example ε for every unlearning method of the registry, run by hand (not a
test):

    .venv/bin/python benchmarks/epsilon.py                        # M = 32, the default run's artifacts
    .venv/bin/python benchmarks/epsilon.py --models 64 --theta fixed --methods exact,approx
    .venv/bin/python benchmarks/epsilon.py --stacking      # the block's M fine-tunes stacked against one by one

On the default run's θ₀, D_u and requests (data/dataset, models/train, models/unlearn under --root), with
params.yaml's attack.epsilon block (its keys overridden by the options) and each method's unlearn settings:
per method the ε distribution over the forget set, its forget score and final score, the forget accuracy of
the unlearned and retrained models, and the seconds per model made; then the control (retrained against
other retrained models) and the seconds of the whole run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uia_pipe.evaluation import epsilon  # noqa: E402
from uia_pipe.models import clone  # noqa: E402
from uia_pipe.training import fit  # noqa: E402
from uia_pipe.evaluation.setting import load_run  # noqa: E402
from uia_pipe.params import load_params  # noqa: E402
from uia_pipe.unlearning.methods import METHODS, configured  # noqa: E402

COLUMNS = ("forget_score", "final_score", "epsilon_q10", "epsilon_median", "epsilon_q90", "epsilon_at_cap",
           "forget_accuracy", "retrained_forget_accuracy", "test_accuracy", "seconds_per_model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT, help="the repository whose default run's artifacts to use")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated registry names")
    ap.add_argument("--models", type=int, help="attack.epsilon.models")
    ap.add_argument("--theta", choices=("per_model", "fixed"), help="attack.epsilon.theta")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--stacking", action="store_true", help="only time M fine-tunes stacked against one by one")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    cfg = params.attack.epsilon.model_copy(update={k: v for k, v in (("models", args.models),
                                                                   ("theta", args.theta)) if v is not None})
    run = load_run(args.root / "data/dataset", args.root / "models/train", args.root / "models/unlearn", "cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {cfg}")
    maker = epsilon.Maker(run.setting, cfg, run.test_x, run.test_y)
    if args.stacking:
        stacking(maker)
        return
    started = time.perf_counter()
    print(f"forget set: {int(maker.forget.sum())} of {len(maker.forget)} records of D_u")
    print("method," + ",".join(COLUMNS))
    rows = {"control": epsilon.control_epsilon(maker)}
    print("control," + ",".join(f"{rows['control'].summary[c]:.3g}" for c in COLUMNS), flush=True)
    for name in args.methods.split(","):
        rows[name] = epsilon.method_epsilon(maker, name, configured(params.unlearn, name))
        print(f"{name}," + ",".join(f"{rows[name].summary[c]:.3g}" for c in COLUMNS), flush=True)
    total = time.perf_counter() - started
    print(f"{maker.models_made} models in {total:.1f} s: {total / maker.models_made:.3f} s per model, "
          f"ε estimates included")


def stacking(maker: epsilon.Maker) -> None:
    """Seconds of the block's M fine-tunes of θ₀ on D_u, stacked (`fit_many`) and one by one (`fit`)."""
    s, seeds = maker.setting, maker.unlearn_seeds
    started = time.perf_counter()
    stacked = maker._fits(s.du_x, s.du_y, seeds)
    many = time.perf_counter() - started
    started = time.perf_counter()
    for seed, twin in zip(seeds, stacked):
        model = clone(s.theta_pretrained)
        fit(model, s.du_x, s.du_y, maker.recipe, seed, batchnorm_eval=True)
    one = time.perf_counter() - started
    gap = max((p - q).abs().max().item() for p, q in zip(model.parameters(), twin.parameters()))
    print(f"{len(seeds)} fine-tunes: stacked {many:.2f} s, one by one {one:.2f} s, ratio {one / many:.2f}; "
          f"last model's largest weight difference {gap:.2g}")


if __name__ == "__main__":
    main()
