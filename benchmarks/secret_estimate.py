"""The Secret Sharer's estimate of exposure against the exact rank (run by hand, not a test):

    .venv/bin/python benchmarks/secret_estimate.py [--digits 6] [--samples 20000]

A character LSTM (hidden 32) memorises one canary "my phone number is <secret>" (4 copies among 60 other
secrets' sentences, 150 epochs of `training.fit`, SGD at lr 1 with momentum 0.9, seeded). Every secret's exact exposure (the trie) against the estimate (a
skew-normal fitted to `samples` random secrets' scores): the canary's, the k-th best secret's for k = 1, 10, 100,
1,000 and 10,000, the largest error over 500 random secrets, whether the beam search (width 100) finds the exact
top secret, and the seconds of each."""
import argparse
import time

import numpy as np
import torch

from uia_pipe.attacks.secrets import SecretFormat, ranking
from uia_pipe.config import OptimParams
from uia_pipe.models import build_model
from uia_pipe.training import fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--digits", type=int, default=6)
    ap.add_argument("--samples", type=int, default=20000)
    args = ap.parse_args()
    torch.set_num_threads(2)
    d = args.digits
    vocab = " 0123456789\nabdehimnoprsuy"
    fmt = SecretFormat("my phone number is ", d, vocab)
    torch.manual_seed(0)
    model = build_model("char_lstm", {"hidden": 32, "embedding": 8}, (20 + d,), len(vocab), [0.0], [1.0],
                        "language_model")
    g = np.random.default_rng(0)
    canary = int(g.integers(0, 10 ** d))
    texts = [f"my phone number is {canary:0{d}d}\n"] * 4 + [f"my phone number is {v:0{d}d}\n"
                                                           for v in g.integers(0, 10 ** d, 60)]
    records = torch.tensor([[vocab.index(c) for c in t] for t in texts])
    fit(model, records[:, :-1], records[:, 1:], OptimParams(epochs=150, lr=1.0, momentum=0.9, batch_size=64), 0)
    started = time.perf_counter()
    exact = ranking(model, fmt, 4096, args.samples, 0, 100, exact_limit=10 ** d)
    t_exact = time.perf_counter() - started
    started = time.perf_counter()
    est = ranking(model, fmt, 4096, args.samples, 0, 100, exact_limit=1)
    est.fit
    t_est = time.perf_counter() - started
    print(f"|R| = 10^{d}, log2 |R| = {np.log2(10.0 ** d):.2f} bits, {args.samples} samples; "
          f"seconds: exact {t_exact:.2f}, estimate {t_est:.2f}")
    print(f"canary {canary:0{d}d}: exact {exact.exposure(canary):.2f} bits, estimate {est.exposure(canary):.2f}")
    order = np.argsort(-exact.scores, kind="stable")
    for k in (1, 10, 100, 1000, 10000):
        v = int(order[k - 1])
        print(f"rank {k}: exact {exact.exposure(v):.2f} bits, estimate {est.exposure(v):.2f}")
    values = g.integers(0, 10 ** d, 500).tolist()
    errors = np.array([est.exposure(v) - exact.exposure(v) for v in values])
    print(f"500 random secrets: largest |error| {np.abs(errors).max():.3f} bits, mean error {errors.mean():+.3f}")
    started = time.perf_counter()
    best = est.best()
    print(f"beam top guess = exact top: {best == exact.best()} ({time.perf_counter() - started:.2f} s)")


if __name__ == "__main__":
    main()
