"""What the attack, defend and access stages open with: device, seeds and threads, the executor, each
attacked method's run loaded (unlearn.method's folder, compare/<method>/ for the others) and every question
checked before any attack runs, the families of the run's task, and a context maker."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Callable, Iterator

import typer

from stages.common import device_for, seed_everything, torch_threads
from uia_pipe import executor, io
from uia_pipe.attacks import ATTACKS
from uia_pipe.attacks.protocol import Attack, Context, for_task
from uia_pipe.evaluation.campaign import FileStore, check
from uia_pipe.evaluation.setting import Run, load_run


@dataclasses.dataclass
class Attacking:
    runs: dict[str, Run]  # method -> its run, unlearn.method's first
    attacks: dict[str, Attack]  # the families that attack the run's task, in registry order
    context: Callable[..., Context]  # (run, **callbacks) -> a fresh context for it


@contextlib.contextmanager
def attacking(stage: str, base, threads: int, cache_dir: str, data: Path, trained: Path, unlearned: Path,
              configs: dict, max_requests: int, methods: tuple[str, ...] = (), sisa_view: str = "ensemble"
              ) -> Iterator[Attacking]:
    """`methods`: those to attack among the ones the run unlearned (none listed, or none of them unlearned:
    unlearn.method and every compared method for the attack stage, unlearn.method alone otherwise)."""
    device = device_for(base.device)
    seed_everything(base.seed, base.threads)
    record = io.load_json(unlearned / "requests.json")
    main, have = record["method"], (record["method"], *record.get("compare", ()))
    chosen = [m for m in methods if m in have] or (list(have) if stage == "attack" else [main])
    if methods and set(chosen) != set(methods):
        typer.echo(f"{stage}: attacking {', '.join(chosen)} (this run unlearned {', '.join(have)})")
    with torch_threads(threads), executor.for_stage(base, threads) as ex:
        runs = {m: dataclasses.replace(load_run(data, trained, io.method_folder(unlearned, m, main), device,
                                                max_requests), sisa_view=sisa_view) for m in chosen}
        task = next(iter(runs.values())).setting.task
        attacks = for_task(ATTACKS, task)
        if len(attacks) < len(ATTACKS):
            typer.echo(f"{stage}: {', '.join(n for n in ATTACKS if n not in attacks)} left out (they attack "
                       f"other tasks' models; train.task is {task})")
        for run in runs.values():
            check(run, attacks, configs)
        store = FileStore(Path(cache_dir).expanduser())

        def context(run: Run, **callbacks) -> Context:
            return Context(base.seed, run.test_x, run.test_y, store, ex, **callbacks)

        yield Attacking(runs, attacks, context)
