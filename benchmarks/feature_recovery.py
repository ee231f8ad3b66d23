"""Feature-recovery benchmark, run by hand (not a test):

    .venv/bin/python benchmarks/feature_recovery.py              # ~5 min on 2 cores
    .venv/bin/python benchmarks/feature_recovery.py --targets 6 --ref-iterations 2000

Prints, measured in one run on this machine:
1. ms per attack step on the trained default model, and that ÷ one forward+backward, for both
   second-order modes (autograd's double backward; a finite difference under the same ReLU pattern);
2. R restarts batched (torch.func.vmap) vs sequential, per round;
3. PSNR against iterations and wall time, ours (the Config defaults, and the same with the
   other second-order mode) beside a reference-style run (signed AdamW lr 0.04, TV 0.01, fixed schedule, no early
   stop, one restart), for approximate and exact (N = |D_u|) updates;
4. the reference's full-settings time (10,000 × 5 × its step on a width-64
   ConvNet, 3×32×32) against ours to reach the reference-style plateau PSNR.

Needs the default pipeline's data/dataset and models/train (dvc repro train).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uia_pipe import io, metrics  # noqa: E402
from uia_pipe.attacks import feature_recovery as fr  # noqa: E402
from uia_pipe.attacks.feature_recovery.objective import _Objective, _Stacked  # noqa: E402
from uia_pipe.attacks.view import AttackerView  # noqa: E402
from uia_pipe.config import OptimParams  # noqa: E402
from uia_pipe.data import Dataset, as_inputs  # noqa: E402
from uia_pipe.models import build_model  # noqa: E402
from uia_pipe.params import load_params  # noqa: E402
from uia_pipe.unlearning.methods import METHODS  # noqa: E402
from uia_pipe.unlearning.problem import UnlearningProblem  # noqa: E402

REFERENCE = dict(optimizer="signed_adamw", lr=0.04, tv=0.01, restarts=1, early_stop=False, prune_after=0,
                 analytic_init=False, init="randn_clamped", delta_dtype="float32", second_order="double_backward")


def timed(fn, repeats: int) -> float:
    fn()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1000 * (time.perf_counter() - started) / repeats


def step_costs(model, x, y, delta, repeats: int, rounds: int = 5) -> tuple[float, float, float]:
    """(ms per attack step with a double backward, with a finite difference, ms per forward+backward) for
    the same model and batch: medians over `rounds` alternating rounds, so that drift in the machine's
    speed hits all alike."""
    obj = _Objective(model, delta, 1e-4, True)
    fd = _Objective(model, delta, 1e-4, True, finite_difference=True)
    params = [p for p in obj.model.parameters()]

    def fwd_bwd():
        torch.autograd.grad(F.cross_entropy(obj.model(x), y), params)

    attack, finite, plain = [], [], []
    for _ in range(rounds):
        attack.append(timed(lambda: obj.step(x, y), repeats))
        finite.append(timed(lambda: fd.step(x, y), repeats))
        plain.append(timed(fwd_bwd, repeats))
    return statistics.median(attack), statistics.median(finite), statistics.median(plain)


def step_line(attack_ms: float, fd_ms: float, fb_ms: float) -> str:
    return (f"{attack_ms:.2f} ms/step (double backward), {fd_ms:.2f} (finite difference), fwd+bwd {fb_ms:.2f} ms, "
            f"ratio {attack_ms / fb_ms:.2f} / {fd_ms / fb_ms:.2f}")


def batched_vs_sequential(model, x, y, delta, restarts: int, repeats: int) -> tuple[float, float]:
    obj = _Objective(model, delta, 1e-4, True)
    xs = x.unsqueeze(0).repeat(restarts, *([1] * x.dim()))
    seq = timed(lambda: [obj.step(xs[r], y) for r in range(restarts)], repeats)
    stacked = _Stacked([obj], [y])
    bat = timed(lambda: stacked.step([0] * restarts, xs, torch.zeros(restarts)), repeats)
    return seq, bat


def trace(view, cfg, truth, labels, seed=0):
    """[(iteration, seconds, psnr)] from snapshots, plus the result."""
    rows = []
    t0 = time.perf_counter()

    def snap(it, x):
        rows.append((it, time.perf_counter() - t0, float(metrics.psnr(x, truth).mean())))

    result, stats = fr.recover(view, cfg, seed, labels=labels, snapshot=snap)
    rows.append((result.iterations, result.seconds, float(metrics.psnr(result.reconstruction, truth).mean())))
    return rows, result, stats


def first_reaching(rows, level):
    for it, sec, p in rows:
        if p >= level:
            return it, sec
    return None


def trained_problem(data: Path, trained: Path) -> tuple[UnlearningProblem, dict, Dataset, dict]:
    """The default run's server from its artifacts (data/dataset, models/train): the problem (θ₀, θ, D_u and
    the fine-tune), the model's spec, the dataset and the fine-tune's settings (finetune.json)."""
    ds = io.load_dataset_artifact(data)
    theta0, spec = io.load_model(trained / "theta_pretrained.safetensors")
    theta, _ = io.load_model(trained / "theta_original.safetensors")
    du = io.load_tensors(trained / "split.safetensors")[0]["du"]
    ft = io.load_json(trained / "finetune.json")
    problem = UnlearningProblem(theta0, theta, as_inputs(ds.x_train[du]), ds.y_train[du],
                                OptimParams(**{k: v for k, v in ft.items() if k != "seed"}), ft["seed"])
    return problem, spec, ds, ft


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data/dataset")
    ap.add_argument("--trained", type=Path, default=ROOT / "models/train")
    ap.add_argument("--targets", type=int, default=2, help="D_u samples attacked per method")
    ap.add_argument("--ref-iterations", type=int, default=600, help="reference-style run length (issue: 2000)")
    ap.add_argument("--restarts", type=int, default=4, help="R for batched vs sequential")
    ap.add_argument("--methods", default="approx,exact")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--skip-width64", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    problem, spec, ds, _ = trained_problem(args.data, args.trained)
    theta0, theta, du_x, du_y = problem.theta_pretrained, problem.theta_original, problem.du_x, problem.du_y
    n, shape = len(du_y), tuple(spec["input_shape"])
    mean_img = metrics.mean_image(as_inputs(ds.x_train[:5000]))

    # 1-2. step cost on the trained default model
    forget = torch.zeros(n, dtype=torch.bool)
    forget[0] = True
    theta_u = METHODS["approx"][0](problem, forget, METHODS["approx"][1]())
    view = AttackerView(theta, theta_u, theta0, "approx", shape, spec["num_classes"], n, 1)
    delta = fr.observed_update(view)
    x = torch.rand(1, *shape)
    print(f"\n[step] trained {spec['model']} {spec['config']} on {shape}, k=1: "
          + step_line(*step_costs(theta, x, du_y[:1], delta, 50)))
    seq, bat = batched_vs_sequential(theta, x, du_y[:1], delta, args.restarts, 20)
    print(f"[restarts] R={args.restarts}: sequential {seq:.1f} ms/round, batched {bat:.1f} ms/round "
          f"({bat / seq:.2f}x sequential; batched/one = {bat / (seq / args.restarts):.2f})")

    # 3. PSNR vs iterations / wall time
    gen = torch.Generator().manual_seed(0)
    targets = torch.randperm(n, generator=gen)[: args.targets].tolist()
    # ours: the pipeline's own settings (params.yaml), with the reference's true labels for parity
    ours = load_params(ROOT / "params.yaml").attack.feature_recovery
    ours_cfg = ours.model_copy(update={"labels": "oracle"})
    other = {"double_backward": "finite_difference", "finite_difference": "double_backward"}[ours.second_order]
    other_cfg = ours_cfg.model_copy(update={"second_order": other})
    ref_cfg = fr.Config(**REFERENCE, iterations=args.ref_iterations, labels="oracle", record_every=25)
    summary = {}
    for method in args.methods.split(","):
        rows_ours, rows_ref, rows_other = [], [], []
        for t in targets:
            forget = torch.zeros(n, dtype=torch.bool)
            forget[t] = True
            theta_u = METHODS[method][0](problem, forget, METHODS[method][1]())
            view = AttackerView(theta, theta_u, theta0, method, shape, spec["num_classes"], n, 1)
            truth, labels = du_x[forget], du_y[forget]
            base = float(metrics.baseline_scores(truth, mean_img)["psnr"].mean())
            r_ours, res, st = trace(view, ours_cfg, truth, labels)
            r_ref, res_ref, _ = trace(view, ref_cfg, truth, labels)
            r_other, res_other, _ = trace(view, other_cfg, truth, labels)
            rows_ours.append(r_ours)
            rows_other.append(r_other)
            rows_ref.append(r_ref)
            print(f"\n[{method}] target {t} (label {int(labels)}), mean-image baseline {base:.1f} dB")
            print(f"  ours : {r_ours[-1][2]:.1f} dB after {res.iterations} it / {res.seconds:.1f} s "
                  f"({st['steps']} steps over restarts, stopped {st['stopped']})")
            print(f"  ours, {other}: {r_other[-1][2]:.1f} dB after {res_other.iterations} it / "
                  f"{res_other.seconds:.1f} s")
            print(f"  ref  : {r_ref[-1][2]:.1f} dB after {res_ref.iterations} it / {res_ref.seconds:.1f} s")
            print("  ref curve (it, s, dB): " + ", ".join(f"({i},{s:.0f},{p:.1f})" for i, s, p in r_ref[:: max(1, len(r_ref) // 8)]))
            print("  ours curve (it, s, dB): " + ", ".join(f"({i},{s:.0f},{p:.1f})" for i, s, p in r_ours[:: max(1, len(r_ours) // 8)]))
        summary[method] = (rows_ours, rows_ref)
        po = [r[-1][2] for r in rows_ours]
        pr = [r[-1][2] for r in rows_ref]
        px = [r[-1][2] for r in rows_other]
        print(f"[{method}] mean PSNR ours {statistics.mean(po):.1f} dB ({statistics.mean(r[-1][1] for r in rows_ours):.1f} s), "
              f"ours with {other} {statistics.mean(px):.1f} dB ({statistics.mean(r[-1][1] for r in rows_other):.1f} s), "
              f"reference-style {statistics.mean(pr):.1f} dB ({statistics.mean(r[-1][1] for r in rows_ref):.1f} s)")

    # 4. reference full-settings time vs ours
    if not args.skip_width64:
        torch.manual_seed(0)
        ref_model = build_model("convnet", {"width": 64}, (3, 32, 32), 10, [0.5] * 3, [0.25] * 3).eval()
        rdelta = {k: torch.randn_like(p, dtype=torch.float64) for k, p in ref_model.named_parameters()}
        xr, yr = torch.rand(1, 3, 32, 32), torch.tensor([3])
        db_step, fd_step, ref_fb = step_costs(ref_model, xr, yr, rdelta, 5)
        full = 10_000 * 5 * db_step / 1000
        ref_step = fd_step if ours.second_order == "finite_difference" else db_step
        print(f"\n[width-64 ConvNet, 3x32x32] {step_line(db_step, fd_step, ref_fb)}; "
              f"reference full settings 10,000 x 5 = {full / 3600:.2f} h")
        for method, (rows_ours, rows_ref) in summary.items():
            steps = []
            for ro, rr in zip(rows_ours, rows_ref):
                plateau = max(p for _, _, p in rr)
                hit = first_reaching(ro, plateau)
                steps.append(hit[0] if hit else None)
            if all(s is not None for s in steps):
                ours_s = max(steps) * ours_cfg.restarts * ref_step / 1000
                print(f"[{method}] ours reaches the reference-style plateau by {max(steps)} it; at width 64 "
                      f"x {ours_cfg.restarts} restarts ≈ {ours_s:.0f} s = 1/{full / ours_s:.0f} of the reference")
            else:
                print(f"[{method}] ours did not reach the reference-style plateau on every target ({steps})")


if __name__ == "__main__":
    main()
