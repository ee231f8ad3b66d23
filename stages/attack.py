"""attack: label inference (black-box user) and feature recovery (white-box
server) on every (θ, θ_u) pair, each attack seeing only its view; then the
scores against what was really removed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import torch
import typer

from stages.common import (
    DataDir, ParamsOption, TrainedDir, UnlearnedDir, cached_probes, clean_errors, device_for, load_setting,
    progress, seed_everything, single_command, torch_threads,
)
from uia_pipe import figures, io, tracking
from uia_pipe.attacks import campaign
from uia_pipe.config import load_params, section_hash


@clean_errors
def main(
    data: DataDir,
    trained: TrainedDir,
    unlearned: UnlearnedDir,
    out: Annotated[Path, typer.Option(help="folder for reconstructions and figures")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write")],
    details: Annotated[Path, typer.Option(help="per-request CSV to write")],
    curve: Annotated[Path, typer.Option(help="feature-recovery loss curves CSV (DVC plot data)")],
    methods: Annotated[Path, typer.Option(help="per-(method, request) CSV: unlearn.method and each compared method")],
    queries: Annotated[Path, typer.Option(help="label-inference accuracy against queries CSV (DVC plot data)")],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Infer each request's label and recover its features; score both against the truth."""
    p = load_params(params)
    base, a = p.base, p.attack
    device = device_for(base.device)
    seed_everything(base.seed, base.threads)
    with torch_threads(a.threads):
        setting, thetas_u, test_x = load_setting(data, trained, unlearned, device, a.max_requests)
        started = time.perf_counter()

        li_cfg = a.label_inference
        cache_dir = Path(p.download.cache_dir).expanduser()
        probes, probe_stats = cached_probes(setting, li_cfg, base.seed, test_x, cache_dir)
        li_frame, li_results = campaign.label_inference(setting, thetas_u, probes, li_cfg)
        li_summary = campaign.summarise_label_inference(li_frame, int(probe_stats.get("queries", 0)),
                                                        int(probe_stats.get("reference_queries", 0)))
        li_summary["seconds"] = time.perf_counter() - started
        li_queries = campaign.accuracy_against_queries(setting, thetas_u, probes, li_cfg,
                                                       int(probe_stats.get("queries", 0)))

        ks = [len(r["forget"]) for r in setting.requests]
        with io.atomic_dir(out) as tmp, progress(len(thetas_u), "feature recovery") as bar:
            (tmp / "grids").mkdir()

            def on_request(index: int, result) -> None:
                req = next(r for r in setting.requests if r["index"] == index)
                truth = setting.du_x[torch.tensor(req["forget"])]
                if setting.image:
                    io.save_figure(tmp / "grids" / f"request_{index:03d}.png", figures.reconstruction_grid(
                        truth, campaign.ordered_for_display(result.reconstruction, truth),
                        title=f"request {index}: {setting.method} unlearning, {result.label_source} labels"))
                bar.update()

            fr_started = time.perf_counter()
            fr_frame, fr_results = campaign.feature_recovery(
                setting, thetas_u, a.feature_recovery, base.seed, campaign.inferred_labels(li_results, ks),
                on_request=on_request, progress=lambda it, loss: bar.set_postfix(iteration=it, loss=f"{loss:.4f}"),
                sisa_view=a.sisa_view)
            fr_summary = campaign.summarise_feature_recovery(fr_frame)
            fr_summary["seconds"] = time.perf_counter() - fr_started
            io.save_tensors(tmp / "reconstructions.safetensors",
                            {f"request_{r['index']:03d}": res.reconstruction for r, res in zip(setting.requests, fr_results)})
            io.save_figure(tmp / "label_confusion.png", figures.confusion_matrix(
                li_frame["true_label"].tolist(), li_frame["predicted"].tolist(), setting.card["num_classes"]))

        frame = campaign.per_request_table(fr_frame, li_frame)
        seconds = time.perf_counter() - started
        typer.echo(_describe(fr_summary, li_summary, setting.image))
        # The methods of unlearn.compare, attacked the same way on the same requests.
        tables, compared = [frame.assign(method=setting.method)], {}
        for name in io.load_json(unlearned / "requests.json").get("compare", []):
            m_started = time.perf_counter()
            m_setting, m_thetas, _ = load_setting(data, trained, unlearned / "compare" / name, device, a.max_requests)
            m_probes, m_stats = cached_probes(m_setting, li_cfg, base.seed, test_x, cache_dir)
            m_li, _, m_fr, _ = campaign.both(m_setting, m_thetas, m_probes, li_cfg, a.feature_recovery, base.seed,
                                                  sisa_view=a.sisa_view)
            tables.append(campaign.per_request_table(m_fr, m_li).assign(method=name))
            compared[name] = {"feature_recovery": campaign.summarise_feature_recovery(m_fr),
                              "label_inference": campaign.summarise_label_inference(
                                  m_li, int(m_stats.get("queries", 0)), int(m_stats.get("reference_queries", 0))),
                              "seconds": time.perf_counter() - m_started}
            typer.echo(f"compared method {name}: " + _describe(compared[name]["feature_recovery"],
                                                                compared[name]["label_inference"], setting.image))

        result = {"feature_recovery": fr_summary, "label_inference": li_summary, "compare": compared,
                  "seconds": seconds}
        io.save_json(metrics, result)
        io.save_csv(details, frame)
        io.save_csv(methods, pd.concat(tables, ignore_index=True))
        io.save_csv(queries, li_queries)
        io.save_csv(curve, pd.DataFrame([{"request": r["index"], "iteration": it, "loss": loss}
                                         for r, res in zip(setting.requests, fr_results) for it, loss in res.curve]))
        tracking.log_run("attack", {"base": base.model_dump(), "attack": a.model_dump()}, result,
                         section_hash(base, a), artifacts=[metrics, details, methods])


def _describe(fr_s: dict, li_s: dict, image: bool) -> str:
    label = (f"label inference: accuracy {li_s['accuracy']:.2f} [{li_s['accuracy_ci95_low']:.2f}, "
             f"{li_s['accuracy_ci95_high']:.2f}], {li_s['queries_per_request']:.0f} queries/request "
             f"+ {li_s['probe_queries']} for probes")
    if image:
        features = (f"feature recovery: PSNR {fr_s['psnr_mean']:.2f} ± {fr_s['psnr_ci95']:.2f} dB (mean-image "
                    f"baseline {fr_s['baseline_psnr']:.2f}, class-mean {fr_s['class_baseline_psnr']:.2f}), "
                    f"SSIM {fr_s['ssim_mean']:.3f}, labels {fr_s['label_accuracy']:.2f}, "
                    f"{fr_s['seconds_per_request']:.1f} s/request")
    else:
        features = (f"feature recovery: numeric MAE {fr_s['numeric_mae_std']:.3f} sd (baseline "
                    f"{fr_s['baseline_numeric_mae_std']:.3f}), categorical {fr_s['categorical_accuracy']:.3f} "
                    f"(baseline {fr_s['baseline_categorical_accuracy']:.3f})")
    return f"{label}\n{features}"


app = single_command(main)

if __name__ == "__main__":
    app()
