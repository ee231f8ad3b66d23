"""The language model task's pieces on their own: text records and canaries, the one-line errors for a user's
text file, canary requests, the models' incremental scoring, the trie's exact secret scores and exposure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uia_pipe import tasks
from uia_pipe.attacks.secrets import SecretFormat, contrastive_decode, exposure, rank, ranking, secret_scores
from uia_pipe.data import DownloadParams, load_dataset
from uia_pipe.errors import UiaError
from uia_pipe.models import build_model
from uia_pipe.requests import draw_requests
from uia_pipe.text import canary_owners, canary_rows, decode


def _settings(**text) -> DownloadParams:
    return DownloadParams(text={"length": 32, **text}, canaries={"count": 3, "repeats": 2, "controls": 2,
                                                                   "digits": 4})


def test_tinyshakespeare_holds_records_and_its_canaries_on_the_evaluators_card(tmp_path):
    ds = load_dataset("tinyshakespeare", tmp_path, _settings())
    card = ds.card
    assert card["kind"] == "text" and card["input_shape"] == [32] and card["num_classes"] == len(card["vocab"])
    assert ds.x_train.dtype == torch.int64 and torch.equal(ds.x_train[0, 1:], ds.y_train[0, :-1])
    canaries = card["canaries"]
    rows = canary_rows(card)
    assert len(rows) == 6 and rows[0] == canaries["first_row"] and rows[-1] == len(ds.x_train) - 1
    assert len(set(canaries["secrets"] + canaries["controls"])) == 5
    for i, secret in enumerate(canaries["secrets"]):
        text = decode(ds.x_train[rows[2 * i]], card["vocab"])
        assert text.startswith(f"my phone number is {secret}\n")
        assert torch.equal(ds.x_train[rows[2 * i]], ds.x_train[rows[2 * i + 1]])  # r identical copies
    assert canary_owners(card, rows).tolist() == [0, 0, 1, 1, 2, 2]
    assert load_dataset("tinyshakespeare", tmp_path, _settings()).card["checksum"] == card["checksum"]


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"), (b"", "is empty"), (b"caf\xe9 au lait", "is not UTF-8"),
])
def test_a_users_text_file_is_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UiaError) as err:
        load_dataset("text", tmp_path, _settings(path=str(path)))
    assert message in str(err.value) and "download.text.path" in str(err.value) and "\n" not in str(err.value)


def test_a_users_text_file_becomes_records(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    ds = load_dataset("text", tmp_path, _settings(path=str(path)))
    assert ds.card["name"] == "text" and ds.x_train.shape[1] == 32 and len(ds.x_test) >= 1


def test_canary_requests_delete_every_copy_of_one_canary():
    owners = torch.tensor([-1, 0, 1, 0, -1, 1, 2, 2])
    requests = draw_requests(torch.zeros(8, 4, dtype=torch.int64), 3, "canary", 1, 0.5, 0, owners)
    assert [r.forget for r in requests] == [[1, 3], [2, 5], [6, 7]]
    with pytest.raises(ValueError, match="D_u holds 3 canaries"):
        draw_requests(torch.zeros(8, 4, dtype=torch.int64), 4, "canary", 1, 0.5, 0, owners)


@pytest.mark.parametrize("name, cfg", [("char_lstm", {"hidden": 12, "embedding": 6}),
                                       ("char_transformer", {"dim": 8, "heads": 2, "depth": 2})])
def test_the_trie_scores_every_secret_exactly_as_the_sequence_likelihood(name, cfg):
    torch.manual_seed(0)
    model = build_model(name, cfg, (16,), 14, [0.0], [1.0], "language_model").double().eval()
    prefix, digits = torch.tensor([11, 12, 13]), torch.arange(10)
    scores = secret_scores(model, prefix, digits, 3, chunk=40)  # chunks smaller than a level: the DFS split
    secrets = torch.tensor([[int(c) for c in f"{v:03d}"] for v in range(1000)])
    seqs = torch.cat([prefix.expand(1000, -1), secrets], 1)
    with torch.no_grad():
        logp = F.log_softmax(model(seqs[:, :-1]).double(), 1)  # [B, V, L]
    brute = logp.gather(1, seqs[:, None, 1:]).squeeze(1)[:, len(prefix) - 1:].sum(1).numpy()
    np.testing.assert_allclose(scores, brute, rtol=1e-9, atol=1e-9)
    top = int(np.argmax(scores))
    assert rank(scores, top) == 1 and exposure(scores, top) == pytest.approx(math.log2(1000))
    assert tasks.per_sample(model(seqs[:2, :-1]), seqs[:2, 1:]).shape == (2,)
    assert contrastive_decode(model, model, 16, 14, beam=2).shape == (17,)  # a whole record: L + 1 characters


def test_the_secret_sharers_estimate_agrees_with_the_exact_rank():
    """A 5-digit canary memorised by an LSTM: the skew-normal fitted to 20,000 random secrets' scores gives every
    random secret's exposure within 0.1 bit + 10% of the exact rank's, the memorised canary's within 2 bits (the tail
    is an extrapolation), and the beam search finds the exact ranking's top secret."""
    vocab = " 0123456789\nabdehimnoprsuy"
    fmt = SecretFormat("my phone number is ", 5, vocab)
    torch.manual_seed(0)
    model = build_model("char_lstm", {"hidden": 32, "embedding": 8}, (25,), len(vocab), [0.0], [1.0],
                        "language_model")
    g = np.random.default_rng(0)
    texts = ["my phone number is 31415\n"] * 4 + [f"my phone number is {v:05d}\n" for v in g.integers(0, 10 ** 5, 60)]
    records = torch.tensor([[vocab.index(c) for c in t] for t in texts])
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        tasks.loss(model(records[:, :-1]), records[:, 1:]).backward()
        opt.step()
    exact = ranking(model, fmt, 4096, 20000, 0, 100, exact_limit=10 ** 5)
    estimated = ranking(model, fmt, 4096, 20000, 0, 100, exact_limit=10 ** 4)
    assert type(exact).__name__ == "Exact" and type(estimated).__name__ == "Estimated"
    assert exact.exposure(31415) >= 0.8 * math.log2(10 ** 5)
    assert abs(estimated.exposure(31415) - exact.exposure(31415)) <= 2
    for v in g.integers(0, 10 ** 5, 50).tolist():
        assert abs(estimated.exposure(v) - exact.exposure(v)) <= 0.1 + 0.1 * exact.exposure(v)
    assert estimated.best() == exact.best() == 31415
    both = estimated.combine(estimated, 0.5)  # half the model's score: the same ranking, the same estimate
    assert both.best() == 31415 and both.exposure(31415) == pytest.approx(estimated.exposure(31415), abs=0.01)


def test_contrastive_decoding_reads_what_theta_learnt_and_theta_u_did_not():
    torch.manual_seed(0)
    theta_u = build_model("char_lstm", {"hidden": 32, "embedding": 8}, (8,), 10, [0.0], [1.0], "language_model")
    theta = build_model("char_lstm", {"hidden": 32, "embedding": 8}, (8,), 10, [0.0], [1.0], "language_model")
    theta.load_state_dict(theta_u.state_dict())
    record = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5]])
    opt = torch.optim.Adam(theta.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        tasks.loss(theta(record[:, :-1]), record[:, 1:]).backward()
        opt.step()
    got = contrastive_decode(theta.eval(), theta_u.eval(), 8, 10, beam=4)
    assert (got[1:] == record[0, 1:]).double().mean() >= 0.75


def _lm_problem():
    from uia_pipe.config import OptimParams, PretrainParams
    from uia_pipe.models import clone, init_model
    from uia_pipe.training import fit
    from uia_pipe.unlearning.problem import Pretraining, UnlearningProblem

    spec = {"model": "char_lstm", "config": {"hidden": 8, "embedding": 4}, "input_shape": [12], "num_classes": 11,
            "mean": [0.0], "std": [1.0], "task": "language_model"}
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 11, (40, 13), generator=g)
    x, y = tokens[:, :-1], tokens[:, 1:]
    pre = PretrainParams(epochs=1, lr=0.5, batch_size=8)
    theta0 = init_model(spec, 0)
    fit(theta0, x[16:], y[16:], pre, 0)
    ft = OptimParams(epochs=2, lr=0.5, batch_size=16)
    theta = clone(theta0)
    fit(theta, x[:16], y[:16], ft, 1, batchnorm_eval=True)
    return UnlearningProblem(theta0, theta, x[:16], y[:16], ft, 1,
                             Pretraining(lambda: init_model(spec, 0), x[16:], y[16:], pre, 0))


def test_the_methods_with_a_meaning_for_a_sequence_loss_unlearn_a_language_model():
    from uia_pipe.unlearning.config import CLASSES_ONLY, UnlearnParams
    from uia_pipe.unlearning.methods import METHODS

    problem = _lm_problem()
    forget = torch.zeros(16, dtype=torch.bool)
    forget[:4] = True
    ran = []
    for name, (unlearn, _) in METHODS.items():
        if name in CLASSES_ONLY:
            assert "needs classes" in UnlearnParams(method=name).task_error("language_model")
            continue
        theta_u = unlearn(problem, forget, getattr(UnlearnParams(), name))
        out = theta_u(problem.du_x[:2])
        assert out.shape == (2, 11, 12) and torch.isfinite(out).all()
        ran.append(name)
    assert set(ran) == {"exact", "approx", "retrain", "finetune", "neggrad", "influence", "amnesiac"}
