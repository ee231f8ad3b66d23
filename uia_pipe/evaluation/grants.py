"""What each family's run receives (`attacks.protocol.Grant`), built here from the evaluator's `Run`: the
released models, public facts and the server's replay for every family, and, for a family the evaluator asks
about particular records or hands something, its question (`QUESTIONS`, by family name: a family without an
entry gets the grant alone). A question's check refuses, in one line and before any attack runs, a run it
cannot be posed on (`CHECKS`)."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import BaseModel
from torch import nn

from ..attacks import membership as mi
from ..attacks.families.feature_recovery import ASSUMED_UPDATE, Job, inferred_labels
from ..attacks.protocol import Context, Grant, Store, digest
from ..attacks.secrets import SecretFormat
from ..attacks.view import AttackerView, Limits, sisa_shard_views, without_batch_norm_stats
from ..errors import UiaError
from ..executor import LOCAL, Executor
from ..models import clone
from .server import Server, server_of
from .setting import Run, Setting


def grant(run: Run, name: str, cfg: BaseModel, ctx: Context) -> Grant:
    """Family `name`'s grant on `run` (its question asked now: with the run's θ_u, as released)."""
    s = run.setting
    out = Grant(theta_original=s.theta_original, thetas_u=list(run.thetas_u), theta_pretrained=s.theta_pretrained,
                method=s.method, requests=tuple(r["index"] for r in s.requests), ks=tuple(s.ks), n=len(s.du_y),
                task=s.task, input_shape=tuple(s.card["input_shape"]), num_outputs=s.num_outputs,
                num_classes=s.card["num_classes"], finetune=s.finetune, server=server_of(s))
    ask = QUESTIONS.get(name)
    return out if ask is None else dataclasses.replace(out, question=ask(run, cfg, ctx))


def check(run: Run, names, configs: dict[str, BaseModel]) -> None:
    """Each question's check of `run` for the families `names`, before any attack runs."""
    for name in names:
        if name in CHECKS:
            CHECKS[name](run.setting, configs[name])


# --- feature recovery: each request's white-box views -------------------------------------------------------

def recovery_jobs(run: Run, cfg, ctx: Context) -> list[Job]:
    """Each request's view (less what the run's access level withholds), with the labels `cfg.labels` hands
    over — the label-inference family's inferred ones, or the true ones (the reference's assumption) — and
    its seed. Under SISA with the server's checkpoint store granted (`run.sisa_view` "shard"), a view per
    changed shard's retrained stage (`view.sisa_shard_views`); with "ensemble" the served ensemble's
    parameters like any other method (what a defence sweep needs: a defence transforms the released θ_u,
    never the server's store)."""
    setting = run.setting
    earlier = ctx.earlier.get("label_inference")
    inferred = inferred_labels(earlier, setting.ks) if earlier else None
    jobs = []
    for j, req in enumerate(setting.requests):
        forget = torch.tensor(req["forget"])
        given = {"oracle": setting.du_y[forget], "inferred": inferred[j] if inferred else None}.get(cfg.labels)
        seed = ctx.seed + req["index"]
        if setting.sisa is not None and run.sisa_view == "shard":
            jobs.append(_sisa_parts(setting, j, forget, seed, given))
        else:
            jobs.append(([(_view(setting, run.thetas_u[j], len(forget), run.limits), given, seed)], forget))
    return jobs


def _view(setting: Setting, theta_u: nn.Module, k: int, limits: Limits) -> AttackerView:
    """The white-box view of one request, less what an access level withholds: θ₀ (exact is then attacked as
    approx), the true N (a guess instead), parameters outside `limits.visible`, batch norm's statistics."""
    assumed = ASSUMED_UPDATE.get(setting.method, "approx")
    if not limits.pretrained:
        assumed = "approx"
    models = [setting.theta_original, theta_u, setting.theta_pretrained if assumed == "exact" else None]
    if not limits.batch_norm_stats:
        models = [None if m is None else without_batch_norm_stats(m) for m in models]
    return AttackerView(*models, assumed, tuple(setting.card["input_shape"]), setting.num_outputs,
                        limits.n or len(setting.du_y), k, setting.finetune_batch_size, limits.visible,
                        _step(setting, assumed, k))


def _step(setting: Setting, assumed: str, k: int) -> float | None:
    """The update's scale c (Δ = c·Σ_X ∇ℓ) where the server's settings give it: η/k for approx (a mean over
    X), the fine-tune's learning rate for exact (one full-batch step); None for other methods."""
    if assumed == "exact" and setting.method in ASSUMED_UPDATE and setting.finetune is not None:
        return setting.finetune.lr
    eta = getattr(setting.method_config, "eta", None) if setting.method == "approx" else None
    return None if eta is None else eta / k


def _sisa_parts(setting: Setting, position: int, forget: torch.Tensor, seed: int, given: torch.Tensor | None) -> Job:
    """The SISA-aware attack on one request: a part per changed shard, inverting its retrained stage from
    the server's checkpoints (and SISA's index of how many removed records each slice held); the samples it
    covers, in the order of the parts."""
    store = setting.sisa
    removed = set(forget.tolist())
    located = [[[i for i in idx if i in removed] for idx in shard] for shard in store.slices]
    views = sisa_shard_views(store.before, store.after[position], [[len(i) for i in sh] for sh in store.slices],
                             [[len(i) for i in sh] for sh in located], tuple(setting.card["input_shape"]),
                             setting.card["num_classes"], setting.finetune_batch_size)
    if not views:
        raise ValueError("sisa: no shard changed between the stores before and after the deletion")
    order = forget.tolist()
    parts, covered = [], []
    for shard, stage, view in views:
        idx = located[shard][stage]
        labels = None if given is None else given[torch.tensor([order.index(i) for i in idx])]
        parts.append((view, labels, seed + 7919 * shard))
        covered += idx
    return parts, torch.tensor(covered)


def _check_recovery(setting: Setting, cfg) -> None:
    """Labels handed over exist for classifiers only: a regressor's residuals are read from Δ, an
    autoencoder needs none."""
    if setting.task != "classification" and cfg.labels != "analytic":
        raise UiaError(f"attack.feature_recovery.labels: {cfg.labels} needs classes; train.task is {setting.task} "
                       "(analytic: a regressor's residuals are read from Δ, an autoencoder needs no label)")


# --- membership: the audit ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Audit:
    """The candidates membership is asked about: a pair a request (θ, θ_u as released, its deleted records
    with as many retained and never-member ones), then pairs made alike on the pool; the seconds making them
    took (kept pairs: their share of the seconds when they were made)."""

    pairs: list[mi.Pair]
    seconds: float


def audit(run: Run, cfg, ctx: Context) -> Audit:
    """The audit of `run`'s served θ, made once (kept in `run.asked`, its made pairs in `ctx.store`: the attack,
    defend and access stages share them) and released as the run releases: each request's pair with its θ_u,
    each made pair's θ_u through `run.release` (a defence, later requests), both models as the run's access
    level lets the attacker observe them."""
    if "membership" not in run.asked:
        run.asked["membership"] = Audit(*targets(run.setting, server_of(run.setting), cfg, ctx.seed + 11,
                                                 ctx.executor, ctx.store))
    made = run.asked["membership"]
    by_index = dict(zip((r["index"] for r in run.setting.requests), run.thetas_u))
    pairs = []
    for j, pair in enumerate(made.pairs):
        if pair.request >= 0:
            theta_u = by_index[pair.request]
        elif run.release is not None:
            theta_u = run.release(pair.theta, pair.theta_u, *pair.release, ctx.seed + 1000 + j)
        else:
            theta_u = pair.theta_u
        theta = pair.theta
        if run.limits.observe is not None:  # an access level: the attacker's copies of both released models
            theta, theta_u = run.limits.observe(theta), run.limits.observe(theta_u)
        pairs.append(dataclasses.replace(pair, theta=theta, theta_u=theta_u))
    return Audit(pairs, made.seconds)


def _sample(g: torch.Generator, count: int, k: int) -> torch.Tensor:
    return torch.randperm(count, generator=g)[:k]


def targets(setting: Setting, server: Server, cfg, seed: int, executor: Executor = LOCAL,
            store: Store | None = None) -> tuple[list[mi.Pair], float]:
    """The run's requests (θ_u filled in when asked), then made pairs on the pool (`made_pairs`) until
    `targets` deleted records are scored; the seconds the made pairs took. Each deleted record has a
    never-member and a retained partner."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for req in setting.requests:
        forget = setting.forget_mask(req)
        k = int(forget.sum())
        kept = torch.nonzero(~forget)[:, 0][_sample(g, int((~forget).sum()), k)]
        never = _sample(g, len(setting.outside_y), k)
        pairs.append(mi.Pair(setting.theta_original, None,
                             {"deleted": setting.du_x[forget], "retained": setting.du_x[kept],
                              "never": setting.outside_x[never]},
                             {"deleted": setting.du_y[forget], "retained": setting.du_y[kept],
                              "never": setting.outside_y[never]}, request=req["index"]))
    have, seconds = sum(len(p.y["deleted"]) for p in pairs), 0.0
    if have < cfg.targets:
        pool_x = torch.cat([setting.du_x, setting.outside_x])
        pool_y = torch.cat([setting.du_y, setting.outside_y])
        made, seconds = made_pairs(server, pool_x, pool_y, math.ceil((cfg.targets - have) / server.k), seed + 1,
                                   executor, store, setting.theta_original, cfg.stack)
        pairs += made
    return pairs, seconds


def made_pairs(server: Server, x: torch.Tensor, y: torch.Tensor, count: int, seed: int, executor: Executor = LOCAL,
               store: Store | None = None, like: nn.Module | None = None, stack: int = 1
               ) -> tuple[list[mi.Pair], float]:
    """`mi.make_pairs`'s `count` audit pairs on records (x, y) and the seconds they took, their models kept in
    `store` under a key naming all they depend on but the count (pair i is the same whatever the count): the
    server's recipe (`Server.fingerprint`), the records, the seed, `stack` and the code drawing them. Kept pairs are
    loaded into copies of `like` (a model of the served architecture), only the rest made, and the whole kept
    again; a kept entry that does not fit `like` is made anew."""
    key = f"membership/audit/{digest('audit pairs', server.fingerprint(), x, y, seed, stack, _code(mi))}"
    found = None if store is None or like is None else store.load(key)
    kept, seconds = _models(found, like, count) if found is not None else ([], 0.0)
    started = time.perf_counter()
    pairs = mi.make_pairs(server, x, y, count, seed, executor, "audit pair", stack, kept)
    if len(kept) < count:
        seconds += time.perf_counter() - started
        if store is not None:
            tensors = {f"{i}.{side}.{name}": t for i, p in enumerate(pairs)
                       for side, model in (("theta", p.theta), ("theta_u", p.theta_u))
                       for name, t in model.state_dict().items()}
            store.save(key, tensors, {"count": count, "seconds": seconds})
    return pairs, seconds


def _models(found: tuple[dict[str, torch.Tensor], dict], like: nn.Module, count: int
            ) -> tuple[list[tuple[nn.Module, nn.Module]], float]:
    """The first `count` kept (θ, θ_u) of a store entry, loaded into copies of `like`, and their share of the
    entry's seconds; none where the entry's weights do not fit `like`."""
    tensors, meta = found
    use, shapes = min(count, meta["count"]), {name: (t.shape, t.dtype) for name, t in like.state_dict().items()}
    out = []
    for i in range(use):
        pair = []
        for side in ("theta", "theta_u"):
            state = {name: tensors.get(f"{i}.{side}.{name}") for name in shapes}
            if any(t is None or (t.shape, t.dtype) != shapes[name] for name, t in state.items()):
                return [], 0.0
            model = clone(like)
            model.load_state_dict(state)
            pair.append(model)
        out.append(tuple(pair))
    return out, meta["seconds"] * use / meta["count"]


def _code(*modules) -> bytes:
    return b"".join(Path(m.__file__).read_bytes() for m in modules)


def _check_audit(setting: Setting, cfg) -> None:
    """The server's recipe is known (the unlearn stage records it) and k leaves records to retain."""
    if setting.finetune is None or setting.method_config is None or setting.outside_y is None:
        raise UiaError("attack.membership: the run lacks the fine-tune's settings, the method's config or the "
                       "pool (made by an older unlearn stage: rerun it)")
    if max(setting.ks, default=0) >= len(setting.du_y):
        raise UiaError(f"attack.membership: a request removes all of D_u (k = {max(setting.ks)}): "
                       "nothing is retained to compare with")


# --- the compound attack: line-ups --------------------------------------------------------------------------

NEEDS = ("label_inference", "feature_recovery", "membership")  # the compound's links, run before it


def lineups(run: Run, cfg, ctx: Context) -> list[list[tuple[int, tuple[torch.Tensor, torch.Tensor]]]]:
    """Per request, per removed sample feature recovery covered: (its D_u position, its line-up) — the
    sample first, then `cfg.candidates` rivals from the server's pool (`candidate_set`), seeded."""
    missing = [name for name in NEEDS if name not in ctx.earlier]
    if missing:
        raise UiaError(f"attack.compound: needs the {', '.join(missing)} attack families to run before it")
    setting = run.setting
    out = []
    for j, req in enumerate(setting.requests):
        rows = []
        for i in ctx.earlier["feature_recovery"][j].covered.tolist():
            others_x, others_y = candidate_set(setting, torch.tensor(req["forget"]), cfg.candidates,
                                               ctx.seed + 104_729 * (req["index"] + 1) + i)
            rows.append((i, (torch.cat([setting.du_x[i: i + 1], others_x]),
                             torch.cat([setting.du_y[i: i + 1], others_y]))))
        out.append(rows)
    return out


def candidate_set(setting: Setting, removed: torch.Tensor, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The deleted record's rivals: m records of the pool other than the request's removed ones (D_u's
    retained and never-member records alike), seeded."""
    kept = torch.ones(len(setting.du_y), dtype=torch.bool)
    kept[removed] = False
    x = torch.cat([setting.du_x[kept], setting.outside_x])
    y = torch.cat([setting.du_y[kept], setting.outside_y])
    pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:m]
    return x[pick], y[pick]


def _check_lineups(setting: Setting, cfg) -> None:
    """Enough pool records for M rivals of every request."""
    if setting.outside_y is None:
        raise UiaError("attack.compound: the run lacks the pool's records (rerun train and unlearn)")
    room = len(setting.du_y) + len(setting.outside_y) - max(setting.ks, default=0)
    if cfg.candidates > room:
        raise UiaError(f"attack.compound.candidates: at most {room} (the pool less a request's k); "
                       f"got {cfg.candidates}")


# --- recovery: the control --------------------------------------------------------------------------------

def _check_control(setting: Setting, cfg) -> None:
    """The control, each request's retrained model, repeats the server's fine-tune: its settings are known."""
    if setting.finetune is None:
        raise UiaError("attack.recovery: the run lacks the fine-tune's settings (made by an older unlearn stage: "
                       "rerun it)")

# --- the language model's families: the canaries' public format ------------------------------------------

def secret_format(run: Run, cfg, ctx: Context) -> SecretFormat:
    """What the attacker knows of the canaries: the template, the secret's digits, the model's vocabulary."""
    canaries = run.setting.card["canaries"]
    return SecretFormat(canaries["template"], canaries["digits"], run.setting.card["vocab"])


def _check_canaries(setting: Setting, cfg) -> None:
    """The text holds canaries (their secrets ranked exactly up to 10^6, above by the Secret Sharer's estimate)."""
    canaries = setting.card.get("canaries") or {}
    if not canaries.get("count"):
        raise UiaError("attack.exposure: the text holds no canaries (download.canaries.count: 0)")


# Family -> the fields of an access level's `Limits` its question reads (`_view`, `audit`); the others ignore them.
LIMITS: dict[str, tuple[str, ...]] = {"feature_recovery": ("visible", "n", "pretrained", "batch_norm_stats"),
                                      "membership": ("observe",)}

# Family -> the families whose results or prepared work it reads (ctx.earlier, ctx.prepared), given its config:
# it runs after them, and again wherever they run again (an access level acting through them).
READS: dict[str, Callable[[Any], tuple[str, ...]]] = {
    "feature_recovery": lambda cfg: ("label_inference",) if cfg.labels == "inferred" else (),
    "compound": lambda cfg: NEEDS,
}

# Family -> the question the evaluator asks it of a run, and the check that it can be asked.
QUESTIONS: dict[str, Callable[[Run, Any, Context], Any]] = {
    "feature_recovery": recovery_jobs, "membership": audit, "compound": lineups,
    "exposure": secret_format, "extraction": secret_format,
}
CHECKS: dict[str, Callable[[Setting, Any], None]] = {
    "feature_recovery": _check_recovery, "membership": _check_audit, "compound": _check_lineups,
    "recovery": _check_control,
    "exposure": _check_canaries, "extraction": _check_canaries,
}
