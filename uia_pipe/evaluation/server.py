"""The server's recipe as a replay: θ₀ fine-tuned on N records as the server did, then k of them unlearned by
the run's method. The attacker is granted it as a black box it feeds its own records (membership's shadow
pairs: the paper's threat model knows the recipe); the evaluator feeds it the pool (audit pairs)."""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel
from torch import nn

from .. import models, tasks, training, unlearning
from ..attacks.protocol import digest
from ..models import clone
from ..training import fit, fit_many
from ..unlearning.methods import resolve, served_model, unlearn_many
from ..unlearning.problem import UnlearningProblem

# Made pairs of a method that retrains from scratch use exact's: X lies only in D_u, so they are equal bit for bit.
SAME_AS = {"retrain": "exact"}

# The code a replay runs besides the unlearning package and a plugin method's own file: pairs kept in a Store are
# keyed by its text too (`Server.fingerprint`), so an edit makes them anew.
_CODE = (sys.modules[__name__], training, models, tasks)


@dataclass(frozen=True)
class Server:
    """How the server made θ and θ_u: what shadow and made pairs repeat."""

    theta_pretrained: nn.Module
    finetune: object  # OptimParams
    finetune_seed: int
    method: str
    method_config: BaseModel
    n: int
    k: int

    def problem(self, x: torch.Tensor, y: torch.Tensor) -> UnlearningProblem:
        """The server's problem after fine-tuning θ₀ on (x, y)."""
        theta = clone(self.theta_pretrained)
        fit(theta, x, y, self.finetune, self.finetune_seed, batchnorm_eval=True)
        return UnlearningProblem(self.theta_pretrained, theta, x, y, self.finetune, self.finetune_seed)

    @property
    def made_as(self) -> str:
        """The method that makes this server's pairs (SAME_AS)."""
        return SAME_AS.get(self.method, self.method)

    def served(self, problem: UnlearningProblem) -> nn.Module:
        return served_model(self.made_as, problem, self.method_config)

    def unlearn(self, problem: UnlearningProblem, forget: torch.Tensor) -> nn.Module:
        return resolve(self.made_as)[0](problem, forget, self.method_config)

    def pair(self, x: torch.Tensor, y: torch.Tensor, forget: torch.Tensor) -> tuple[nn.Module, nn.Module]:
        """θ = θ₀ fine-tuned on (x, y) as served, and θ_u = θ with `forget` (a mask over x) unlearned."""
        problem = self.problem(x, y)
        return self.served(problem), self.unlearn(problem, forget)

    def pairs(self, x: torch.Tensor, y: torch.Tensor, forgets: list[torch.Tensor]
              ) -> list[tuple[nn.Module, list[nn.Module]]]:
        """Many pairs at once: for each p, θ = θ₀ fine-tuned on (x[p], y[p]) as served (x of shape [P, N, ...])
        and one θ_u per row of forgets[p] (masks over x[p], [F_p, N]). Each equals `pair`'s up to float
        rounding: the fine-tunes run as one stacked model (`fit_many`), and so does the unlearning where the
        method has a stacked form (`unlearn_many`)."""
        thetas = fit_many(self.theta_pretrained, x, y, self.finetune, [self.finetune_seed] * len(x))
        problems = [UnlearningProblem(self.theta_pretrained, theta, xp, yp, self.finetune, self.finetune_seed)
                    for theta, xp, yp in zip(thetas, x, y)]
        owners = [p for p, masks in enumerate(forgets) for _ in masks]
        thetas_u = unlearn_many(self.made_as, [problems[p] for p in owners], [f for masks in forgets for f in masks],
                                self.method_config)
        made = [(self.served(problem), []) for problem in problems]
        for p, theta_u in zip(owners, thetas_u):
            made[p][1].append(theta_u)
        return made

    def fingerprint(self) -> str:
        """A key naming everything this replay's pairs depend on besides the records fed to it: θ₀, the
        fine-tune's settings and seed, the method that makes them with its config, N, k, the code that runs
        them (`_CODE`, the unlearning package, a plugin's file) and where (torch's version, its threads, the
        device): the same key, the same pairs bit for bit."""
        files = [Path(m.__file__) for m in _CODE] + sorted(Path(unlearning.__file__).parent.glob("*.py"))
        files.append(Path(inspect.getsourcefile(resolve(self.made_as)[0])))
        code = [f.read_bytes() for f in dict.fromkeys(files)]
        device = next(self.theta_pretrained.parameters()).device.type
        return digest("server", self.theta_pretrained, self.finetune, self.finetune_seed, self.made_as,
                      self.method_config, self.n, self.k, code, torch.__version__, torch.get_num_threads(), device)



def server_of(setting) -> Server | None:
    """The replay of the server of `setting` (None where an older unlearn stage did not record its recipe)."""
    if setting.finetune is None or setting.method_config is None:
        return None
    return Server(setting.theta_pretrained, setting.finetune, setting.finetune_seed, setting.method,
                  setting.method_config, len(setting.du_y), setting.ks[0])
