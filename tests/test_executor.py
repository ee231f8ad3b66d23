"""base.executor: the local executor and Ray give the same numbers; failures are one line naming the item.

The Ray tests start a real local Ray instance on this machine (two CPUs), once for the module."""

from __future__ import annotations

import functools
import json
import operator
import socket
import time

import pytest
import torch
import yaml

from tests.conftest import invoke, small_params
from uia_pipe import executor
from uia_pipe.errors import UiaError

ray = pytest.importorskip("ray")

PLUGIN = '''
from pydantic import BaseModel

from uia_pipe.unlearning import exact


class Config(BaseModel):
    fail_on: int = -1  # the request removing this sample of D_u fails


def unlearn(problem, forget, cfg):
    if bool(forget[cfg.fail_on]):
        raise RuntimeError("this request cannot be served")
    return exact.unlearn(problem, forget, exact.Config())
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_plugins")
    (folder / "failing_method.py").write_text(PLUGIN)
    return folder


@pytest.fixture(scope="module")
def ray_cluster(plugin_dir):
    """A local Ray instance whose workers also import the test's plugin folder; stages find it initialised."""
    import sys

    paths = ":".join([str(plugin_dir), *sys.path])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": paths}})
    yield
    ray.shutdown()


def test_local_map_keeps_order_and_reports_each_item():
    done = []
    out = executor.LOCAL.map(functools.partial(operator.mul, 3), [1, 2, 3], on_done=done.append)
    assert out == [3, 6, 9] and done == [0, 1, 2]


def test_local_session_starts_no_ray():
    with executor.session("local", None, threads=1) as ex:
        assert ex.kind == "local" and ex.map(abs, [-1, 2]) == [1, 2]
    assert not ray.is_initialized()


def test_unreachable_address_is_one_line_before_any_work():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(UiaError, match=rf"base\.ray\.address: no Ray cluster reachable at 127\.0\.0\.1:{port}"):
        with executor.session("ray", f"127.0.0.1:{port}", threads=1):
            pytest.fail("the session opened")
    assert time.perf_counter() - started < 5 and not ray.is_initialized()


def test_bad_address_is_refused_by_the_schema():
    from uia_pipe.config import BaseParams

    with pytest.raises(ValueError, match="host:port"):
        BaseParams(executor="ray", ray={"address": "head-node"})


def test_ray_map_keeps_order_and_names_a_failing_item(ray_cluster):
    with executor.session("ray", None, threads=1) as ex:
        done = []
        assert ex.map(functools.partial(operator.mul, 2), list(range(6)), on_done=done.append) == [0, 2, 4, 6, 8, 10]
        assert sorted(done) == list(range(6))
        with pytest.raises(UiaError) as err:
            ex.map(functools.partial(operator.truediv, 1), [1, 0, 2], names=["request 7", "request 8", "request 9"])
    message = str(err.value)
    assert message == "request 8 failed on a Ray worker: ZeroDivisionError: division by zero", message
    assert ray.is_initialized()  # a Ray this process started before the session is left running


def _params(tmp_path, **base) -> str:
    raw = small_params()
    raw["download"]["cache_dir"] = str(tmp_path / "cache")
    raw["base"].update(base)
    raw["unlearn"].update(requests=4, k=1, compare=["approx"])
    path = tmp_path / f"params_{base.get('executor', 'local')}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _without_seconds(obj):
    if isinstance(obj, dict):
        return {k: _without_seconds(v) for k, v in obj.items() if "seconds" not in k}
    return obj


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    t = tmp_path_factory.mktemp("executor_run")
    p = _params(t)
    invoke("download", "--params", p, "--out", str(t / "data"))
    invoke("train", "--params", p, "--data", str(t / "data"), "--out", str(t / "train"),
           "--metrics", str(t / "train.json"), "--curve", str(t / "curve.csv"))
    return t


def _unlearn(t, p, name, code=0):
    return invoke("unlearn", "--params", p, "--data", str(t / "data"), "--trained", str(t / "train"),
                  "--out", str(t / f"unlearn_{name}"), "--metrics", str(t / f"unlearn_{name}.json"),
                  "--details", str(t / f"unlearn_{name}.csv"), code=code)


def _attack(t, p, name, unlearned):
    invoke("attack", "--params", p, "--data", str(t / "data"), "--trained", str(t / "train"),
           "--unlearned", str(t / unlearned), "--out", str(t / f"attack_{name}"),
           "--metrics", str(t / f"attack_{name}.json"), "--details", str(t / f"attack_{name}.csv"),
           "--methods", str(t / f"methods_{name}.csv"), "--plots", str(t / f"plots_{name}"))


def _load(path):
    return _without_seconds(json.loads(path.read_text()))


@pytest.mark.slow
def test_unlearn_and_attack_on_ray_equal_local(trained, ray_cluster, tmp_path):
    t = trained
    local, on_ray = _params(tmp_path), _params(tmp_path, executor="ray")
    _unlearn(t, local, "local")
    _unlearn(t, on_ray, "ray")
    assert _load(t / "unlearn_ray.json") == _load(t / "unlearn_local.json")
    for path in (t / "unlearn_local").rglob("*.safetensors"):
        mine = (t / "unlearn_ray" / path.relative_to(t / "unlearn_local")).read_bytes()
        assert mine == path.read_bytes(), path.name
    _attack(t, local, "local", "unlearn_local")
    _attack(t, on_ray, "ray", "unlearn_local")
    ray_metrics, local_metrics = _load(t / "attack_ray.json"), _load(t / "attack_local.json")
    assert ray_metrics == local_metrics
    assert set(ray_metrics) >= {"feature_recovery", "label_inference", "membership", "compound", "compare"}
    assert local_metrics["membership"]["never_auc"] > 0 and local_metrics["compare"]["approx"]["membership"]
    for path in (t / "attack_local").rglob("*.safetensors"):  # the reconstructions themselves
        assert (t / "attack_ray" / path.relative_to(t / "attack_local")).read_bytes() == path.read_bytes()


@pytest.mark.slow
def test_a_failing_task_fails_the_stage_in_one_line_leaving_no_output(trained, ray_cluster, plugin_dir, tmp_path,
                                                                      monkeypatch):
    from uia_pipe.requests import draw_requests
    from uia_pipe.unlearning.campaign import load_problem

    monkeypatch.syspath_prepend(str(plugin_dir))
    raw = yaml.safe_load(open(_params(tmp_path, executor="ray")))
    problem, *_ = load_problem(trained / "data", trained / "train", torch.device("cpu"))
    requests = draw_requests(problem.du_y, 4, "random", 1, 0.5, raw["base"]["seed"])
    failing = next(r for r in requests[1:] if sum(r.forget[0] in q.forget for q in requests) == 1)
    raw["unlearn"].update(method="failing_method:unlearn", compare=[], plugin={"fail_on": failing.forget[0]})
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = _unlearn(trained, str(path), "failing", code=2)
    assert result.stderr.strip() == (f"error: request {failing.index} failed on a Ray worker: "
                                     "RuntimeError: this request cannot be served"), result.stderr
    assert not (trained / "unlearn_failing").exists() and not (trained / "unlearn_failing.json").exists()


@pytest.mark.slow
def test_stage_with_an_unreachable_cluster_fails_before_any_work(trained, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = _params(tmp_path, executor="ray", ray={"address": f"127.0.0.1:{port}"})
    result = _unlearn(trained, p, "unreachable", code=2)
    assert result.stderr.strip().startswith(f"error: base.ray.address: no Ray cluster reachable at 127.0.0.1:{port}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (trained / "unlearn_unreachable").exists()


def test_threads_of_a_task_are_the_stage_s():
    # a task sets torch's threads as the local run does: the same reductions, the same numbers
    before = torch.get_num_threads()
    try:
        assert executor._task(lambda _: torch.get_num_threads(), [None, None], 1) == [1, 1]
    finally:
        torch.set_num_threads(before)
