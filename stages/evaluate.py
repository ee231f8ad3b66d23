"""evaluate: every stage's per-request results → headline numbers with
intervals, figures, reports/report.md + report.html, one MLflow summary run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import ParamsOption, clean_errors, single_command
from uia_pipe import figures, io, report, summary, tracking
from uia_pipe.attacks import ATTACKS
from uia_pipe.config import BaseParams, EvaluateParams, TrainParams, load_sections, read_params, section_hash
from uia_pipe.unlearning.config import UnlearnParams

def _in(help_: str, folder: bool = False):
    return Annotated[Path, typer.Option(help=help_, exists=True, file_okay=not folder, dir_okay=folder)]


@clean_errors
def main(
    data: _in("download stage output folder (its card)", folder=True),
    train_metrics: _in("train stage metrics JSON"),
    train_curve: _in("train stage per-epoch CSV"),
    unlearn_details: _in("unlearn stage per-request CSV"),
    attack_metrics: _in("attack stage metrics JSON"),
    attack_details: _in("attack stage per-request CSV"),
    attack_methods: _in("attack stage per-(method, request) CSV"),
    attack_out: _in("attack stage output folder (reconstruction grids)", folder=True),
    defend_details: _in("defend stage tidy CSV"),
    metrics: Annotated[Path, typer.Option(help="headline metrics JSON to write")],
    reports: Annotated[Path, typer.Option(help="folder for report.md, report.html and the figures")],
    grids: Annotated[Path | None, typer.Option(help="folder of `uia table`'s grid tables (<name>.csv), reported "
                                               "where present", file_okay=False)] = None,
    access_metrics: Annotated[Path | None, typer.Option(help="access stage metrics JSON, reported where given",
                                                        exists=True, dir_okay=False)] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Summarise the run with intervals; write the figures, the report and the MLflow summary run."""
    p = load_sections(params, base=BaseParams, train=TrainParams, unlearn=UnlearnParams, evaluate=EvaluateParams)
    card = io.load_json(data / "card.json")
    all_unlearn_rows, attack_rows = io.load_csv(unlearn_details), io.load_csv(attack_details)
    unlearn_rows = all_unlearn_rows[all_unlearn_rows["method"] == p.unlearn.method]
    attack = io.load_json(attack_metrics)
    head = summary.headline(io.load_json(train_metrics), unlearn_rows, attack, attack_rows, p.evaluate.level)
    families = summary.families(attack, ATTACKS)
    head.update({name: numbers for name, numbers in families.items() if name not in head})
    method_rows = io.load_csv(attack_methods)
    methods = summary.methods_table(all_unlearn_rows, method_rows, p.evaluate.level)
    comparisons = summary.compare_methods(method_rows, p.unlearn.method, p.evaluate.level)
    head.update({key: {m: v for m, v in c.items() if v == v} for key, c in comparisons.items()})
    leakage = summary.leakage_table(attack, p.unlearn.method)
    head.update({f"leakage_{row.pop('method')}": {k: v for k, v in row.items() if isinstance(v, float) and v == v}
                 for row in leakage.to_dict("records")})
    defences = summary.defence_table(io.load_csv(defend_details))
    access = summary.access_table(io.load_json(access_metrics)) if access_metrics else None
    if access is not None:
        head["access"] = summary.access_headline(access)
    io.save_json(metrics, head)

    method_grids = {}  # method -> request -> its grid image, unlearn.method's at the top, the others under compare/
    for name in method_rows["method"].unique():
        folder = attack_out / "grids" if name == p.unlearn.method else attack_out / "compare" / name / "grids"
        method_grids[name] = {int(r): io.load_png(folder / f"request_{int(r):03d}.png")
                              for r in attack_rows["request"] if (folder / f"request_{int(r):03d}.png").is_file()}
    made = figures.report_figures(attack_rows, method_grids.get(p.unlearn.method, {}), defences, card["num_classes"],
                                  io.load_csv(train_curve).to_dict("records"), method_rows, method_grids, access)
    captions = {name: caption for name, (_, caption) in made.items()}
    with io.atomic_dir(reports) as tmp:
        for name, (figure, _) in made.items():
            io.save_figure(tmp / name, figure)
        setting = {"dataset": card["name"], "task": p.train.task, "model": p.train.model,
                   "unlearning method": p.unlearn.method,
                   "N = |D_u|": p.train.n, "requests": len(unlearn_rows), "selection": p.unlearn.selection,
                   "k (random requests)": p.unlearn.k, "seed": p.base.seed}
        grid_tables = {f.stem: io.load_csv(f) for f in sorted(grids.glob("*.csv"))} if grids and grids.is_dir() \
            else {}
        doc = summary.build_report(setting, head, defences, captions, p.evaluate.small_sample, p.evaluate.level,
                                   methods, comparisons, families, leakage, grid_tables, access)
        io.write_text(tmp / "report.md", report.markdown(doc))
        io.write_text(tmp / "report.html", report.to_html(doc, {n: io.read_bytes(tmp / n) for n in captions}))
    typer.echo(report.markdown(doc).split("## Defences")[0].split("## Headline results")[-1].strip())

    every_param = read_params(params)  # the summary run holds every param, so that runs compare side by side
    tracking.log_summary(every_param, head, section_hash(every_param),
                         artifacts=[metrics, *(reports / n for n in ["report.md", "report.html", *captions])])


app = single_command(main)

if __name__ == "__main__":
    app()
