"""Where a stage's independent work runs: here, one item after another, or as Ray tasks.

A stage opens one `Executor` (`session(base, threads)`) and hands it to the
library, whose pure functions map their independent work through it —
unlearning requests, feature recovery's requests, membership's shadow and
audit pairs. `map` returns results in the items' order whatever finishes
first, and every task seeds itself from its item (no function here reads a
global random state), so a Ray run gives the local run's numbers. The stage
alone writes files and logs to MLflow; a task that raises fails the stage with
one line naming the item, before anything is written.

The local executor is the embedded default: it imports nothing and starts no
process. Ray is imported only when `base.executor: ray`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from .errors import UiaError


@dataclass(frozen=True)
class Executor:
    """How `map` runs: kind "local" or "ray"; each Ray task asks for `cpus` and `gpus` and runs torch on
    `threads` threads (the count the local run uses, so that float reductions split alike); a task whose
    worker dies is retried `retries` times."""

    kind: str = "local"
    threads: int = 0
    cpus: float = 1.0
    gpus: float = 0.0
    retries: int = 2
    slots: int = 1  # tasks that can run at once on the cluster

    def map(self, fn: Callable[[Any], Any], items: Sequence, names: Sequence[str] | None = None,
            on_done: Callable[[int], None] | None = None) -> list:
        """[fn(item) for item in items], in order; `on_done(position)` as each finishes. `names` name the
        items in a failure's one-line error (default "item <position>")."""
        if self.kind == "local" or not items:
            out = []
            for i, item in enumerate(items):
                out.append(fn(item))
                if on_done is not None:
                    on_done(i)
            return out
        return _ray_map(self, fn, list(items), list(names) if names is not None else None, on_done)


LOCAL = Executor()
CHUNKS_PER_SLOT = 4  # tasks per slot and map: fewer pay less overhead, more balance the slots' loads


@contextlib.contextmanager
def session(kind: str, address: str | None, threads: int, cpus: float = 1.0, gpus: float = 0.0,
            retries: int = 2, workers: int = 0) -> Iterator[Executor]:
    """The stage's executor, connected before any work. Ray: `address` None starts a Ray instance on this
    machine with `workers` CPUs (0: all) and stops it after; "auto" joins the cluster this node belongs
    to; "host:port" joins that one. A Ray already initialised in this process is used as it is."""
    if kind == "local":
        yield Executor("local", threads)
        return
    started = _connect(address, workers)
    import ray

    try:
        slots = max(int(ray.cluster_resources().get("CPU", 1) // cpus), 1)
        ex = Executor("ray", threads, cpus, gpus, retries, slots)
        _warm(ex)
        yield ex
    finally:
        if started:
            ray.shutdown()


def for_stage(base, threads: int) -> contextlib.AbstractContextManager[Executor]:
    """A stage's session from its `base` params (executor, ray); its tasks run torch on `threads` threads
    (0: this process's count), as the local run does, and reserve as many CPUs unless ray.cpus_per_task."""
    import torch

    r, threads = base.ray, threads or torch.get_num_threads()
    return session(base.executor, r.address, threads, r.cpus_per_task or threads, r.gpus_per_task, r.retries,
                   r.workers)


def _connect(address: str | None, workers: int) -> bool:
    """Initialise Ray; whether this call started it (and the session shuts it down)."""
    if address not in (None, "auto"):
        host, _, port = address.rpartition(":")  # host:port, as the params' schema checked
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except OSError as exc:
            raise UiaError(f"base.ray.address: no Ray cluster reachable at {address} ({exc.strerror or exc}); "
                           "start one with `ray start --head`, or set address: null for one on this machine"
                           ) from None
    import ray

    if ray.is_initialized():
        return False
    # Workers import the project and any plugin module the way this process does.
    paths = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p)
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                  runtime_env={"env_vars": {"PYTHONPATH": paths}})
    try:
        if address is None:
            ray.init(num_cpus=workers or None, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UiaError(f"base.ray.address: could not join a Ray cluster at {address}: "
                       f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return True


def _warm(ex: Executor) -> None:
    """Start as many workers as can run at once, importing torch, while the stage loads its inputs: a fresh
    worker spends seconds on imports that would otherwise delay the first map."""
    import ray

    remote = ray.remote(_task).options(num_cpus=ex.cpus, num_gpus=ex.gpus)
    for _ in range(ex.slots):
        remote.remote(abs, [0], ex.threads)  # a task imports torch (_task)


def _task(fn: Callable[[Any], Any], chunk: list, threads: int) -> list:
    """Consecutive items on one Ray worker, with the stage's torch settings."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    out = []
    for offset, item in enumerate(chunk):
        try:
            out.append(fn(item))
        except Exception as exc:  # noqa: BLE001  (named and described in one line by the stage)
            raise ItemFailed(offset, _describe(exc)) from None
    return out


class ItemFailed(Exception):
    """An item of a chunk raised: (its offset in the chunk, one line describing what it raised)."""


def _ray_map(ex: Executor, fn, items: list, names: list[str] | None, on_done) -> list:
    """Items in chunks of consecutive ones, about CHUNKS_PER_SLOT a slot: a task costs the cluster
    milliseconds, which many small items (membership's shadow pairs) would multiply."""
    import ray
    from ray.exceptions import RayError

    remote = ray.remote(_task).options(num_cpus=ex.cpus, num_gpus=ex.gpus, max_retries=ex.retries,
                                       retry_exceptions=False)
    fn_ref = ray.put(fn)  # shipped once, not once per task
    size = math.ceil(len(items) / (ex.slots * CHUNKS_PER_SLOT))
    starts = range(0, len(items), size)
    refs = {remote.remote(fn_ref, items[i: i + size], ex.threads): i for i in starts}
    pending, out = list(refs), [None] * len(items)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        first = refs[done[0]]
        try:
            out[first: first + size] = ray.get(done[0])
        except RayError as exc:
            for ref in pending:
                ray.cancel(ref, force=True)
            cause = getattr(exc, "cause", None)
            offset, detail = cause.args if isinstance(cause, ItemFailed) else (0, _describe(cause or exc))
            failed = first + offset
            raise UiaError(f"{names[failed] if names else f'item {failed}'} failed on a Ray worker: {detail}"
                           ) from None
        if on_done is not None:
            for i in range(first, min(first + size, len(items))):
                on_done(i)
    return out


def _describe(exc: BaseException) -> str:
    """The first line of what was raised (a UiaError's own message as it is)."""
    lines = str(exc).strip().splitlines()
    if isinstance(exc, UiaError) and lines:
        return lines[0]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
