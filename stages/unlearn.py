"""unlearn: draw R deletion requests from D_u and unlearn each with the chosen method."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import (
    DataDir, ParamsOption, TrainedDir, clean_errors, device_for, progress, seed_everything, single_command,
)
from uia_pipe import executor, io, tracking
from uia_pipe.config import BaseParams, TrainParams, load_sections, section_hash
from uia_pipe.models import spec_of
from uia_pipe.errors import UiaError
from uia_pipe.requests import draw_requests
from uia_pipe.text import canary_owners
from uia_pipe.unlearning.campaign import load_problem, summarise, unlearn_requests
from uia_pipe.unlearning.config import UnlearnParams
from uia_pipe.unlearning.methods import configured


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
    as SISA's ensemble) beside one θ_u per request, for unlearn.method at the
    top of the folder and each compared method under compare/<method>/."""
    p = load_sections(params, base=BaseParams, train=TrainParams, unlearn=UnlearnParams)
    base, u = p.base, p.unlearn
    configs = {name: configured(u, name) for name in u.methods}  # imports and checks plugins before any work
    device = device_for(base.device)
    seed_everything(base.seed, base.threads)
    with executor.for_stage(base, base.threads) as ex:
        problem, spec, test_x, test_y = load_problem(data, trained, device)
        owners = canary_owners(io.load_json(data / "card.json"), io.load_tensors(trained / "split.safetensors")[0]["du"])
        try:
            requests = draw_requests(problem.du_y, u.requests, u.selection, u.k, u.fraction, base.seed, owners)
        except ValueError as exc:
            raise UiaError(str(exc)) from None
        frame, states = _unlearn(problem, spec, requests, u, configs, test_x, test_y, out, ex)
    result = summarise(frame, u.method)
    io.save_json(metrics, result)
    io.save_csv(details, frame)
    for name, r in {u.method: result, **result["compare"]}.items():
        typer.echo(f"{name}: {r['requests']} requests, {r['seconds_per_request']:.3f} s each; "
                   f"forget {r['forget_accuracy']:.3f}, retain {r['retain_accuracy']:.3f}, test {r['test_accuracy']:.3f}")
        if r.get("within_budget", 1.0) < 1.0:  # certified removal: a removal past its budget
            typer.echo(f"{name}: {1 - r['within_budget']:.0%} of the removals exceed the certificate's budget "
                       "(gradient-residual bound > σε/c): retraining is due for them")
    tracking.log_run("unlearn", {"base": base.model_dump(), "unlearn": u.model_dump()}, result,
                     section_hash(base, u), artifacts=[metrics, details])


def _unlearn(problem, spec, requests, u, configs, test_x, test_y, out: Path, ex):
    """Every method on every request, written to `out` at once: unlearn.method's models at the top, each
    compared method's under compare/<method>/."""
    with io.atomic_dir(out) as tmp, progress(len(requests), f"unlearn ({', '.join(u.methods)})") as bar:
        folders = {name: io.method_folder(tmp, name, u.method) for name in u.methods}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        frame, states = unlearn_requests(
            problem, requests, configs, test_x, test_y,
            save=lambda name, what, model: io.save_model(folders[name] / f"{what}.safetensors", model,
                                                         spec_of(model, spec)),
            on_request=bar.update, executor=ex)
        for name, folder in folders.items():
            io.save_json(folder / "requests.json", {
                "method": name, "config": configs[name].model_dump(mode="json"), "n": len(problem.du_y),
                "requests": [req.to_dict() for req in requests],
                **({"compare": list(u.compared)} if name == u.method else {}),
                **({"server_state": states[name]} if name in states else {}),
            })
    return frame, states


app = single_command(main)

if __name__ == "__main__":
    app()
