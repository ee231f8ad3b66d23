"""The language model's secrets under the methods the README's run does not compare (run by hand, not a test):

    .venv/bin/python benchmarks/lm_methods.py [data/dataset models/train models/unlearn]

after `dvc exp run` with the README's language-model overrides (benchmarks/tasks.py's pair). For each method
with a meaning for a sequence loss beyond exact and approx, on the run's canary requests: the deleted secret's
exposure under θ_u, the two-model extraction's top-1 (λ = 0.5 and 1), contrastive text recovery (character
accuracy, the secret anywhere in the text), the never-inserted controls' exposure under θ_u and the seconds per
request. Prints ratios and means with Student-t half-widths; no membership (see the attack stage)."""
import argparse
import time
from pathlib import Path

import numpy as np
import torch

from uia_pipe import io
from uia_pipe.unlearning.campaign import load_problem
from uia_pipe.unlearning.methods import METHODS
from uia_pipe.unlearning.config import UnlearnParams
from uia_pipe.attacks.secrets import SecretFormat, all_scores, contrastive_decode, exposure
from uia_pipe.stats import mean_ci


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="*", default=["data/dataset", "models/train", "models/unlearn"],
                    help="the download, train and unlearn stages' folders")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data, trained, unlearned = (Path(a) for a in args.folders)
    problem, spec, tx, ty = load_problem(data, trained, torch.device('cpu'))
    card = io.load_json(data / 'card.json'); c = card['canaries']; vocab = card['vocab']
    reqs = io.load_json(unlearned / 'requests.json')['requests']
    fmt = SecretFormat(c['template'], c['digits'], vocab)
    theta = problem.theta_original
    s_theta = all_scores(theta, fmt, 4096)
    u = UnlearnParams()
    for name in ('finetune', 'neggrad', 'influence', 'amnesiac'):
        rows = []
        t0 = time.time()
        for r in reqs:
            forget = torch.zeros(len(problem.du_y), dtype=torch.bool); forget[r['forget']] = True
            started = time.time(); tu = METHODS[name][0](problem, forget, getattr(u, name)); sec = time.time() - started
            s_u = all_scores(tu, fmt, 4096)
            secret = int(c['secrets'][r['index']])
            d05, d1 = s_theta - np.float32(0.5) * s_u, s_theta - s_u
            got = contrastive_decode(theta, tu, 32, len(vocab), 8, 0.5)
            text = ''.join(vocab[t] for t in got.tolist()); truth = c['texts'][r['index']]
            rows.append([exposure(s_u, secret), float(np.argmax(d05) == secret), float(np.argmax(d1) == secret),
                         sum(a == b for a, b in zip(text, truth)) / len(truth), float(c['secrets'][r['index']] in text),
                         np.mean([exposure(s_u, int(v)) for v in c['controls']]), sec])
        a = np.array(rows)
        fmtd = lambda i: "%.2f ± %.2f" % mean_ci(a[:, i].tolist())
        print(name, 'exp θu', fmtd(0), 'top1 λ.5', a[:, 1].mean(), 'λ1', a[:, 2].mean(), 'char acc', fmtd(3), 'secret found', a[:, 4].mean(), 'control θu', fmtd(5), 's/req', a[:, 6].mean().round(2), 'total', round(time.time() - t0), flush=True)


if __name__ == "__main__":
    main()
