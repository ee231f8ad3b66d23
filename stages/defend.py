"""defend: each configured defence at each strength on the first
defend.max_requests θ_u, then the attacks again on the defended models."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from stages.common import (
    DataDir, ParamsOption, TrainedDir, UnlearnedDir, cached_probes, clean_errors, device_for, load_setting,
    progress, seed_everything, single_command, torch_threads,
)
from uia_pipe import io, tracking
from uia_pipe.config import load_params, section_hash
from uia_pipe.defenses import sweep


@clean_errors
def main(
    data: DataDir,
    trained: TrainedDir,
    unlearned: UnlearnedDir,
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write ({defence:strength: {...}})")],
    details: Annotated[Path, typer.Option(help="tidy per-(defence, strength, request) CSV to write")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Defend each released θ_u at each strength; record utility against leakage."""
    p = load_params(params)
    base, d, a = p.base, p.defend, p.attack
    device = device_for(base.device)
    seed_everything(base.seed, base.threads)
    with torch_threads(a.threads):
        setting, thetas_u, test_x = load_setting(data, trained, unlearned, device, d.max_requests)
        test_y = io.load_dataset_artifact(data).y_test
        probes, _ = cached_probes(setting, a.label_inference, base.seed, test_x, Path(p.download.cache_dir).expanduser())
        fr_cfg = a.feature_recovery.model_copy(update={"iterations": d.attack_iterations or a.feature_recovery.iterations})
        defences = {name: getattr(d, name) for name in d.defences}
        started = time.perf_counter()
        with progress(sum(len(c.strengths) for c in defences.values()), "defend") as bar:
            frame = sweep.sweep(setting, thetas_u, defences, probes, a.label_inference, fr_cfg, base.seed, test_x,
                                test_y, on_step=lambda name, s: (bar.set_postfix(defence=name, strength=s), bar.update()))
        result = sweep.summarise(frame)
        io.save_json(metrics, result)
        io.save_csv(details, frame)
        typer.echo(f"defend: {len(frame)} defended models in {time.perf_counter() - started:.1f} s")
        for key, row in result.items():
            typer.echo(f"  {key:24s} test {row['test_accuracy']:.3f}  PSNR {row.get('psnr_mean', float('nan')):6.2f}"
                       f"  labels {row['label_accuracy']:.2f}")
        tracking.log_run("defend", {"base": base.model_dump(), "defend": d.model_dump(), "attack": a.model_dump()},
                         result, section_hash(base, d, a), artifacts=[metrics, details])


app = single_command(main)

if __name__ == "__main__":
    app()
