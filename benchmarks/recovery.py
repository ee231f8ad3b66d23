"""The recovery family (`attack.recovery`) on every unlearning method of the registry, with random and with
class requests, on the default run's server (data/dataset, models/train: LeNet on Fashion-MNIST): per method and
manipulation the recovery share of the deleted records' loss with its bootstrap interval (the strength that
recovers most), the share left unmanipulated, the forget accuracy of θ, θ_u and the retrained model, and the
family's seconds per request (the attacker's manipulations; the control's are the evaluator's).

    python benchmarks/recovery.py --data ../main/data/dataset --trained ../main/models/train --requests 32

`retrain` is left out: it equals `exact` bit for bit on these requests (the forget set lies in D_u only;
evaluation.server.SAME_AS), at the cost of pretraining again per request."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.feature_recovery import trained_problem  # noqa: E402
from uia_pipe import io  # noqa: E402
from uia_pipe.attacks.families import recovery  # noqa: E402
from uia_pipe.attacks.protocol import Context  # noqa: E402
from uia_pipe.data import as_inputs  # noqa: E402
from uia_pipe.evaluation import grants  # noqa: E402
from uia_pipe.evaluation.setting import Run, Setting  # noqa: E402
from uia_pipe.metrics import mean_image  # noqa: E402
from uia_pipe.models import clone  # noqa: E402
from uia_pipe.training import fit  # noqa: E402
from uia_pipe.unlearning.problem import UnlearningProblem  # noqa: E402
from uia_pipe.requests import draw_requests  # noqa: E402
from uia_pipe.unlearning.methods import METHODS, served_model  # noqa: E402

SKIP = {"retrain": "equals exact bit for bit (pretraining again per request)"}


def method_run(problem, card: dict, name: str, requests: list, test_x, test_y) -> tuple[Run, float]:
    """The method's θ_u for each request on the default server, as a Run; the unlearning's seconds."""
    fn, config_type = METHODS[name]
    cfg = config_type()
    n = len(problem.du_y)
    started = time.perf_counter()
    thetas_u = [fn(problem, r.mask(n), cfg) for r in requests]
    seconds = time.perf_counter() - started
    setting = Setting(problem.theta_pretrained, served_model(name, problem, cfg), name, card, problem.du_x,
                      problem.du_y, [r.to_dict() for r in requests], mean_image(problem.du_x), None, problem.du_x,
                      problem.finetune.batch_size, finetune=problem.finetune, finetune_seed=problem.finetune_seed,
                      method_config=cfg)
    return Run(setting, thetas_u, test_x, test_y), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data/dataset")
    ap.add_argument("--trained", type=Path, default=ROOT / "models/train")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--selections", default="random,class")
    ap.add_argument("--methods", default=",".join(m for m in METHODS if m not in SKIP))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fraction", type=float, default=0.5, help="class requests: share of the class in D_u")
    ap.add_argument("--finetune", default="", help="θ fine-tuned again from θ₀ with these settings, e.g. "
                    "'epochs=20,lr=0.01,batch_size=8' (default: the run's one full-batch step)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    problem, _, ds, _ = trained_problem(args.data, args.trained)
    if args.finetune:  # a fine-tune that leaves more of each record in θ than the default's single small step
        settings = problem.finetune.model_copy(update={k: type(getattr(problem.finetune, k))(v) for k, v in
                                                        (kv.split("=") for kv in args.finetune.split(","))})
        theta = clone(problem.theta_pretrained)
        fit(theta, problem.du_x, problem.du_y, settings, problem.finetune_seed, batchnorm_eval=True)
        problem = UnlearningProblem(problem.theta_pretrained, theta, problem.du_x, problem.du_y, settings,
                                    problem.finetune_seed)
    card = io.load_json(args.data / "card.json")
    test_x, test_y = as_inputs(ds.x_test), ds.y_test
    cfg = recovery.Config()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.requests} requests; {cfg}; "
          f"fine-tune {problem.finetune}")
    for selection in args.selections.split(","):
        requests = draw_requests(problem.du_y, args.requests, selection, 1, args.fraction, seed=0)
        ks = [len(r.forget) for r in requests]
        print(f"\n## selection {selection}: k per request {min(ks)}..{max(ks)}, N = {len(problem.du_y)}")
        print("| method | forget acc θ / θ_u / retrained | loss gap θ − retrained | unmanipulated | relearn | quantise "
              "| prune | s/request: attacker, all |")
        print("|---|---|---|---|---|---|---|---|")
        for name in args.methods.split(","):
            run, _ = method_run(problem, card, name, requests, test_x, test_y)
            ctx, started = Context(seed=0, public_x=test_x, public_y=test_y), time.perf_counter()
            grant = grants.grant(run, "recovery", cfg, ctx)
            results = recovery.run(grant, cfg, ctx)
            frame = recovery.score(run.setting, results)
            out = recovery.summarise(frame, results, cfg, {})
            whole = (time.perf_counter() - started) / len(requests)  # the attacker's, the control's and the scoring

            def cell(key: str) -> str:
                if key + "_share" not in out:
                    return "nan (no gap)"
                at = out.get(f"{key}_share_strength")
                where = f" @{at:g}" if at is not None else ""
                return (f"{out[key + '_share']:.2f} [{out[key + '_share_ci95_low']:.2f}, "
                        f"{out[key + '_share_ci95_high']:.2f}]{where}")

            print(f"| {name} | {out['theta_forget_accuracy']:.2f} / {out['unlearned_forget_accuracy']:.2f} / "
                  f"{out['retrained_forget_accuracy']:.2f} | {out['theta_loss'] - out['retrained_loss']:.2g} | "
                  f"{cell('residual')} | {cell('relearn')} | "
                  f"{cell('quantise')} | {cell('prune')} | {out['seconds_per_request']:.2f}, {whole:.2f} |", flush=True)
    for name, why in SKIP.items():
        print(f"\n{name}: left out, {why}")


if __name__ == "__main__":
    main()
