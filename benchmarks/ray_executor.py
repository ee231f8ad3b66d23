"""Ray executor benchmark, run by hand (not a test):

    .venv/bin/python benchmarks/ray_executor.py               # ~6 min on 2 cores, after `dvc repro`
    .venv/bin/python benchmarks/ray_executor.py --workers 2 --requests 8

Runs the attack stage twice on the workspace's models (models/unlearn: unlearn.method and
unlearn.compare of params.yaml) — base.executor local, then ray with `--workers` one-thread workers
on this machine — and prints, measured in this run: both wall times and their ratio, whether every
metric is identical (seconds aside), the round trip of one Ray task, and the cost model for N nodes
that follows from the parallel and serial parts of the local run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uia_pipe import executor  # noqa: E402


def attack_stage(params: Path, out: Path) -> float:
    """Wall seconds of `python -m stages.attack` with `params`, outputs under `out`."""
    args = [sys.executable, "-m", "stages.attack", "--params", str(params), "--data", "data/dataset",
            "--trained", "models/train", "--unlearned", "models/unlearn", "--out", str(out / "attack"),
            "--metrics", str(out / "attack.json"), "--details", str(out / "requests.csv"),
            "--methods", str(out / "methods.csv"), "--plots", str(out / "plots")]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}"}
    started = time.perf_counter()
    subprocess.run(args, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def without_seconds(obj):
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if "seconds" not in k}
    return obj


def parallel_part(metrics: dict) -> float:
    """Seconds of the work the executor maps, per the local run's own timings: feature recovery's
    requests and membership's shadow, audit and U-LiRA pairs, of every method."""
    total = 0.0
    for m in [metrics, *metrics.get("compare", {}).values()]:
        total += m["feature_recovery"]["seconds"]
        total += sum(m["membership"].get(k, 0.0) for k in ("shadow_seconds", "audit_seconds", "lira_seconds"))
    return total


def task_round_trip(workers: int, count: int = 40) -> float:
    """Seconds from submitting one no-op task to holding its result, on a fresh local Ray."""
    with executor.session("ray", None, threads=1, cpus=1, workers=workers) as ex:
        time.sleep(8)  # the session's warm-up tasks end
        ex.map(abs, [0])
        started = time.perf_counter()
        for _ in range(count):
            ex.map(abs, [0])
        return (time.perf_counter() - started) / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray instance (one-thread workers)")
    ap.add_argument("--requests", type=int, default=0, help="attack the first this many requests (0 = all)")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = ap.parse_args()
    raw = yaml.safe_load(args.params.read_text())
    raw["attack"]["max_requests"] = args.requests
    raw["attack"]["threads"] = 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        walls, metrics = {}, {}
        for kind in ("local", "ray"):
            raw["base"].update(executor=kind, ray={**raw["base"].get("ray", {}), "address": None,
                                                   "workers": args.workers, "cpus_per_task": 1})
            params = tmp / f"params_{kind}.yaml"
            params.write_text(yaml.safe_dump(raw))
            (tmp / kind).mkdir()
            walls[kind] = attack_stage(params, tmp / kind)
            metrics[kind] = json.loads((tmp / kind / "attack.json").read_text())
            print(f"attack stage, {kind:5s}: {walls[kind]:6.1f} s", flush=True)
    same = without_seconds(metrics["local"]) == without_seconds(metrics["ray"])
    print(f"ratio local / ray ({args.workers} one-thread workers): {walls['local'] / walls['ray']:.2f}x; "
          f"metrics identical (seconds aside): {same}")
    trip = task_round_trip(args.workers)
    print(f"one Ray task's round trip (no-op, submit to result): {trip * 1e3:.1f} ms")
    parallel = parallel_part(metrics["local"])
    serial = walls["local"] - parallel
    print(f"local run: {parallel:.1f} s of mapped work (feature recovery, membership's pairs), "
          f"{serial:.1f} s serial (start-up, loading, label inference, classifiers, scoring)")
    print("cost model, T(slots) = serial + mapped / slots (+ a Ray start-up of seconds), "
          "against this run's ray wall time at its slots:")
    for slots in (args.workers, 4, 8, 16, 64):
        print(f"  {slots:3d} slots: {serial + parallel / slots:7.1f} s"
              + (f"  (measured {walls['ray']:.1f} s)" if slots == args.workers else ""))


if __name__ == "__main__":
    main()
