"""evaluate: every stage's per-request results → headline numbers with
intervals, figures, reports/report.md + report.html, one MLflow summary run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stages.common import ParamsOption, clean_errors, single_command
import inspect

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
    defend_metrics: _in("defend stage metrics JSON"),
    defend_details: _in("defend stage tidy CSV"),
    metrics: Annotated[Path, typer.Option(help="evaluate's metrics JSON to write (every number of the report)")],
    reports: Annotated[Path, typer.Option(help="folder for report.md, report.html and the figures")],
    grids: Annotated[Path | None, typer.Option(help="folder of `uia table`'s grid tables (<name>.csv), reported "
                                               "where present", file_okay=False)] = None,
    access_metrics: Annotated[Path | None, typer.Option(help="access stage metrics JSON, reported where given",
                                                        exists=True, dir_okay=False)] = None,
    headline: Annotated[Path | None, typer.Option(help="the few headline numbers to write (what dvc.yaml declares "
                                                  "as metrics, for `dvc exp show`)", dir_okay=False)] = None,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Summarise the run with intervals; write the figures, the report and the MLflow summary run."""
    p = load_sections(params, base=BaseParams, train=TrainParams, unlearn=UnlearnParams, evaluate=EvaluateParams)
    card = io.load_json(data / "card.json")
    main, level = p.unlearn.method, p.evaluate.level
    numbers = {name: attack.numbers for name, attack in ATTACKS.items()}  # what each family declares
    all_unlearn_rows, attack_rows = io.load_csv(unlearn_details), io.load_csv(attack_details)
    unlearn_rows = all_unlearn_rows[all_unlearn_rows["method"] == main]
    attack, method_rows = io.load_json(attack_metrics), io.load_csv(attack_methods)
    train = io.load_json(train_metrics)
    head = summary.headline(train, unlearn_rows, attack, attack_rows, numbers, level)
    methods = summary.methods_table(all_unlearn_rows, method_rows, attack, main, numbers, level)
    comparisons = summary.compare_methods(method_rows, main, numbers, level)
    head.update({key: {m: v for m, v in c.items() if v == v} for key, c in comparisons.items()})
    head.update(summary.method_sections(methods))
    if "epsilon_control" in attack:  # the per-example ε's control (the methods' own: the methods table)
        head["epsilon_control"] = summary.numbers_only(attack["epsilon_control"])
    defences = summary.defence_table(io.load_json(defend_metrics), io.load_csv(defend_details))
    access = summary.access_table(io.load_json(access_metrics)) if access_metrics else None
    if access is not None:
        head["access"] = summary.access_headline(access)
    io.save_json(metrics, head)
    if headline is not None:
        io.save_json(headline, summary.headline_metrics(train, head["unlearning"], attack, numbers))

    method_grids = {}  # method -> request -> the image its families rendered of it (grids/request_<i>.png)
    for name in method_rows["method"].unique():
        folder = io.method_folder(attack_out, name, main) / "grids"
        method_grids[name] = {int(r): io.load_png(folder / f"request_{int(r):03d}.png")
                              for r in attack_rows["request"] if (folder / f"request_{int(r):03d}.png").is_file()}
    panels = {table: summary.declared({f: [n for n in ns if "figure" in n.tables] for f, ns in numbers.items()}, table)
              for table in ("defence", "access")}
    made = figures.report_figures(defences, access, panels, io.load_csv(train_curve).to_dict("records"), method_grids)
    own = io.load_json(attack_out / "captions.json")  # the families' figures of unlearn.method's run
    captions = {**{name: caption for name, (_, caption) in made.items()}, **own}
    threats = {name: inspect.getmodule(attack.run).__doc__.split("\n\n")[0].replace("\n", " ").strip('" ')
               for name, attack in ATTACKS.items()}
    with io.atomic_dir(reports) as tmp:
        for name, (figure, _) in made.items():
            io.save_figure(tmp / name, figure)
        for name in own:
            io.copy_file(attack_out / name, tmp / Path(name).name)
        captions = {Path(name).name: caption for name, caption in captions.items()}
        setting = {"dataset": card["name"], "task": p.train.task, "model": p.train.model,
                   "unlearning method": main,
                   "N = |D_u|": p.train.n, "requests": len(unlearn_rows), "selection": p.unlearn.selection,
                   "k (random requests)": p.unlearn.k, "seed": p.base.seed}
        grid_tables = {f.stem: io.load_csv(f) for f in sorted(grids.glob("*.csv"))} if grids and grids.is_dir() \
            else {}
        doc = summary.build_report(setting, head, numbers, threats, captions, p.evaluate.small_sample, level,
                                   defences, methods, comparisons, grid_tables, access)
        io.write_text(tmp / "report.md", report.markdown(doc))
        io.write_text(tmp / "report.html", report.to_html(doc, {n: io.read_bytes(tmp / n) for n in captions}))
    typer.echo(report.markdown(doc).split("## Defences")[0].split("## Headline results")[-1].strip())

    every_param = read_params(params)  # the summary run holds every param, so that runs compare side by side
    tracking.log_summary(every_param, head, section_hash(every_param),
                         artifacts=[metrics, *([headline] if headline else []),
                                    *(reports / n for n in ["report.md", "report.html", *captions])])


app = single_command(main)

if __name__ == "__main__":
    app()
