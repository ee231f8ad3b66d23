"""unlearn: draw R deletion requests from D_u and unlearn each with the chosen method."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from stages.common import (
    DataDir, ParamsOption, TrainedDir, clean_errors, device_for, progress, seed_everything, single_command,
)
from uia_pipe import io, tracking
from uia_pipe.config import OptimParams, PretrainParams, load_params, section_hash
from uia_pipe.data import as_inputs
from uia_pipe.requests import draw_requests
from uia_pipe.training import evaluate
from uia_pipe.models import init_model, spec_of
from uia_pipe.unlearning import METHODS, SERVER_STATE, Pretraining, UnlearningProblem, exact, served_model
from uia_pipe.unlearning.efficacy import distance_to_retrain


@clean_errors
def main(
    data: DataDir,
    trained: TrainedDir,
    out: Annotated[Path, typer.Option(help="folder for the requests and one θ_u per request")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write")],
    details: Annotated[Path, typer.Option(help="per-request CSV to write")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Unlearn each deletion request from θ; time it and measure θ_u's accuracy.

    Writes the model served before the deletions (θ, or the method's own, such
    as SISA's ensemble) beside one θ_u per request."""
    p = load_params(params)
    base, u = p.base, p.unlearn
    device = device_for(base.device)
    seed_everything(base.seed, base.threads)
    ds = io.load_dataset_artifact(data)
    theta_pretrained, spec = io.load_model(trained / "theta_pretrained.safetensors", device)
    theta, _ = io.load_model(trained / "theta_original.safetensors", device)
    split, _ = io.load_tensors(trained / "split.safetensors")
    finetune = io.load_json(trained / "finetune.json")
    pretrain = io.load_json(trained / "pretrain.json")
    du = split["du"]
    du_x, du_y = as_inputs(ds.x_train[du]), ds.y_train[du]
    x_test = as_inputs(ds.x_test)

    problem = UnlearningProblem(
        theta_pretrained, theta, du_x, du_y,
        OptimParams(**{k: v for k, v in finetune.items() if k != "seed"}), finetune["seed"],
        Pretraining(
            init=lambda: init_model(spec, pretrain["init_seed"]).to(device),
            x=as_inputs(ds.x_train[split["pretrain"]]),
            y=ds.y_train[split["pretrain"]],
            settings=PretrainParams(**{k: v for k, v in pretrain.items() if k not in ("seed", "init_seed")}),
            seed=pretrain["seed"],
            augment=pretrain["augment"],
        ),
    )
    requests = draw_requests(du_y, u.requests, u.selection, u.k, u.fraction, base.seed)
    # The gold standard, retraining without X: X lies in D_u only, so `exact`
    # equals `retrain` bit for bit (tested) at a fraction of the cost.
    gold = [exact.unlearn(problem, req.mask(len(du)), exact.Config()) for req in requests]

    rows = []
    with io.atomic_dir(out) as tmp, progress(len(requests) * len(u.methods), f"unlearn ({', '.join(u.methods)})") as bar:
        for name in u.methods:
            # unlearn.method at the top of the folder, each compared method under compare/<name>/
            folder = tmp if name == u.method else tmp / "compare" / name
            folder.mkdir(parents=True, exist_ok=True)
            method, _ = METHODS[name]
            method_cfg = getattr(u, name)
            theta = served_model(name, problem, method_cfg)
            io.save_model(folder / "theta_original.safetensors", theta, spec_of(theta, spec))
            keep_state = SERVER_STATE.get(name)
            if keep_state:  # e.g. SISA's checkpoints: what a server attacker that knows the method diffs
                state, index = keep_state(problem, method_cfg)
                io.save_model(folder / "server_state.safetensors", state, spec_of(state, spec))
            for req, gold_u in zip(requests, gold):
                forget = req.mask(len(du))
                started = time.perf_counter()
                theta_u = method(problem, forget, method_cfg)
                seconds = time.perf_counter() - started
                io.save_model(folder / f"theta_unlearned_{req.index:03d}.safetensors", theta_u, spec_of(theta_u, spec))
                if keep_state:
                    state, _ = keep_state(problem, method_cfg, forget)
                    io.save_model(folder / f"server_state_{req.index:03d}.safetensors", state, spec_of(state, spec))
                rows.append({
                    "method": name,
                    "request": req.index,
                    "k": len(req.forget),
                    "target_class": req.target_class if req.target_class is not None else -1,
                    "seconds": seconds,
                    "forget_accuracy": evaluate(theta_u, du_x[forget], du_y[forget])["accuracy"],
                    "original_forget_accuracy": evaluate(theta, du_x[forget], du_y[forget])["accuracy"],
                    "retain_accuracy": evaluate(theta_u, du_x[~forget], du_y[~forget])["accuracy"],
                    "test_accuracy": evaluate(theta_u, x_test, ds.y_test)["accuracy"],
                    **distance_to_retrain(theta_u, gold_u, du_x[forget], x_test),
                })
                bar.update()
            io.save_json(folder / "requests.json", {
                "method": name,
                "n": len(du),
                "requests": [req.to_dict() for req in requests],
                **({"compare": list(u.compared)} if name == u.method else {}),
                **({"server_state": index} if keep_state else {}),
            })
    frame = pd.DataFrame(rows)
    per_method = {name: _summary(g) for name, g in frame.groupby("method", sort=False)}
    result = {**per_method[u.method], "compare": {name: per_method[name] for name in u.compared}}
    io.save_json(metrics, result)
    io.save_csv(details, frame)
    for name, r in per_method.items():
        typer.echo(f"{name}: {r['requests']} requests, {r['seconds_per_request']:.3f} s each; "
                   f"forget {r['forget_accuracy']:.3f}, retain {r['retain_accuracy']:.3f}, test {r['test_accuracy']:.3f}")
    tracking.log_run(
        "unlearn", {"base": base.model_dump(), "unlearn": u.model_dump()}, result, section_hash(base, u),
        artifacts=[metrics, details],
    )


def _summary(frame: pd.DataFrame) -> dict:
    """One method's means over its requests."""
    keys = ("seconds", "forget_accuracy", "retain_accuracy", "test_accuracy", "original_forget_accuracy",
            "retrain_agreement_forget", "retrain_agreement_test", "retrain_param_distance")
    out = {("seconds_per_request" if k == "seconds" else k): float(frame[k].mean()) for k in keys}
    return {**out, "requests": len(frame)}


app = single_command(main)

if __name__ == "__main__":
    app()
