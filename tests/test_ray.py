"""Sweeps on Ray (surgeon.executors): one local cluster of 2 CPUs for the whole module; a search
writes the results.jsonl of the local engine, a worker that dies is retried or recorded, a
landscape equals the serial one, and a search whose driver is SIGKILLed resumes to the
uninterrupted results. Skipped only when ray is not installed (CI installs surgeon[ray])."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

import surgeon  # noqa: E402
from surgeon.core.errors import SurgeonError  # noqa: E402
from surgeon.parallel.executors import LocalExecutor, executor  # noqa: E402
from surgeon.parallel import Run  # noqa: E402
from surgeon.search import Job, _shared_folder, run_search  # noqa: E402

HERE = Path(__file__).resolve().parent

# A Python recipe of plain candidates (no passes: the engine, not the surgery, is under test):
# the baseline; then two candidates trained at once; then one more if either was accepted.
RECIPE = """\
SETTINGS = {
    "model": {"name": "resnet10t", "num_classes": 10, "input_size": [3, 32, 32],
              "kwargs": {"layers": [1, 1, 1, 1], "channels": [4, 4, 8, 8]}},
    "data": {"train": "digits"},
    "train": {"recipe": "digits", "epochs": 1},
    "search": {"metric": "acc", "repeats": [0, 1]},
}


def candidates(search):
    yield [search.candidate("baseline")]
    records = yield [search.candidate("wide"), search.candidate("deep")]
    if any(r["accepted"] for r in records):
        yield [search.candidate("final")]
"""

SCORES = {"baseline": 0.80, "wide": 0.82, "deep": 0.83, "final": 0.84}


def stub(job: Job) -> dict[str, float]:
    """A deterministic training: the candidate's score, seeds 0.01 apart."""
    acc = SCORES[job.candidate.name] + 0.01 * job.seed
    return {"acc": acc, "nll": 2.0 - acc}


def slow_stub(job: Job) -> dict[str, float]:
    time.sleep(0.4)
    return stub(job)


def dies_once(job: Job) -> dict[str, float]:
    """deep seed 0 kills its own worker process on its first attempt (a marker file remembers)."""
    if job.candidate.name == "deep" and job.seed == 0:
        marker = job.out.with_suffix(".attempted")
        if not marker.exists():
            marker.write_text("1")
            os.kill(os.getpid(), signal.SIGKILL)
    return stub(job)


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local Ray cluster for the module; its workers import this file's stubs."""
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "recipe.py"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="module")
def local_results(recipe, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("local") / "run"
    run_search(recipe, out, evaluator=stub)
    return (out / "results.jsonl").read_bytes()


def test_search_on_ray_writes_the_local_results(recipe, local_results, tmp_path):
    res = run_search(recipe, tmp_path / "ray", evaluator=stub, run=Run(executor=executor("ray", retries=1)))
    assert (tmp_path / "ray" / "results.jsonl").read_bytes() == local_results
    assert [(r["name"], r["accepted"]) for r in res.records] == [("baseline", True), ("wide", False), ("deep", True),
                                                                  ("final", True)]
    outcomes = sorted((tmp_path / "ray" / "candidates").glob("*/seed*.json"))
    assert outcomes and all(json.loads(p.read_text())["seconds"] >= 0 for p in outcomes)


@pytest.mark.parametrize("retries", [1, 0])
def test_a_worker_that_dies_is_retried_then_recorded(recipe, local_results, tmp_path, retries):
    res = run_search(recipe, tmp_path / "run", evaluator=dies_once, run=Run(executor=executor("ray", retries=retries)))
    deep = next(r for r in res.records if r["name"] == "deep")
    if retries:
        assert (tmp_path / "run" / "results.jsonl").read_bytes() == local_results
    else:
        assert deep["failed"] and not deep["accepted"] and "worker died" in deep["reason"], deep
        assert deep["reason"].startswith("seed 0:")
        assert [(r["name"], r["accepted"]) for r in res.records] == [  # wide wins the step; the search goes on
            ("baseline", True), ("wide", True), ("deep", False), ("final", True)]


def test_local_executor_records_a_dead_worker_too(tmp_path):
    marker = tmp_path / "m"
    with LocalExecutor(workers=2, retries=0) as ex:
        got = dict(ex.map(_kill_first, [(str(marker), 1), (str(marker), 2)]))
    failed = [o for o in got.values() if not o.ok]
    assert failed and all("worker process died" in o.failed for o in failed)
    with LocalExecutor(workers=2, retries=2) as ex:
        got = dict(ex.map(_kill_first, [(str(tmp_path / "n"), 1), (str(tmp_path / "n"), 2)]))
    assert sorted(o.value for o in got.values()) == [1, 2]


def _kill_first(marker: str, value: int) -> int:
    if not os.path.exists(marker):
        Path(marker).write_text("1")
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def test_landscape_on_ray_equals_the_serial_one(tmp_path):
    torch.manual_seed(0)
    model = surgeon.load_model("resnet10t", num_classes=10, layers=[1, 1, 1, 1], channels=[4, 4, 8, 8])
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tasks compute with one thread (job_cpus=1), as here
    try:
        serial = surgeon.landscape(model, [(x, y)], lattice=surgeon.analysis.Lattice(grid=5, span=0.5))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        par = surgeon.landscape(model, [(x, y)], lattice=surgeon.analysis.Lattice(grid=5, span=0.5),
                                run=surgeon.parallel.Run(executor=executor("ray")), save=tmp_path / "l.json")
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(serial.loss, par.loss) and np.isfinite(par.loss).all()
    assert 0 < par.eval_seconds <= par.seconds_per_point  # a task's whole time per point, its points' evaluations
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    again = surgeon.landscape(model, [(x, y)], lattice=surgeon.analysis.Lattice(grid=5, span=0.5),
                              run=surgeon.parallel.Run(executor=executor("ray")), save=tmp_path / "l.json")
    assert np.array_equal(again.loss, par.loss) and again.eval_seconds == 0.0  # resumed from --save: nothing left to do


def test_spectrum_batches_and_robustness_cells_on_ray_equal_the_serial_ones():
    torch.manual_seed(0)
    model = surgeon.load_model("resnet10t", num_classes=10, layers=[1, 1, 1, 1], channels=[4, 4, 8, 8])
    g = torch.Generator().manual_seed(2)
    data = surgeon.data.normalised([(torch.randn(6, 3, 16, 16, generator=g), torch.randint(0, 10, (6,), generator=g))
                                   for _ in range(3)], (0.5,) * 3, (0.25,) * 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = surgeon.hessian_spectrum(model, data, 2, batches=3)
        par = surgeon.hessian_spectrum(model, data, 2, batches=3, run=surgeon.parallel.Run(executor=executor("ray")))
        args = (model, data, ["gaussian_noise", "contrast"], [1, 3])
        c_serial = surgeon.corruption_robustness(*args)
        c_par = surgeon.corruption_robustness(*args, run=surgeon.parallel.Run(executor=executor("ray")))
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(par.eigenvalues, serial.eigenvalues, rtol=1e-6)
    assert par.hvps == serial.hvps and par.eigenvalues.shape == (3, 2)
    assert np.array_equal(c_par.grid("nll"), c_serial.grid("nll")) and np.isfinite(c_par.grid("nll")).all()


DRIVER = """
import sys
sys.path.insert(0, {here!r})
from test_ray import slow_stub
from surgeon.parallel import Run, executor
from surgeon.search import run_search
run_search({recipe!r}, {out!r}, evaluator=slow_stub, run=Run(executor=executor("ray", address={address!r}), resume={resume}))
"""


@pytest.mark.slow  # the resume logic: tests/test_search.py (local executor, resume after a crash) in the default tier
def test_resume_after_the_driver_is_killed(recipe, local_results, tmp_path, cluster):
    out = tmp_path / "run"
    script = DRIVER.format(here=str(HERE), recipe=str(recipe), out=str(out), address=cluster,
                           resume=False)
    driver = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 600  # a loaded machine starts the driver slowly
        while not (out / "results.jsonl").is_file() and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert driver.poll() is None, "the driver ended before it could be killed"
        driver.send_signal(signal.SIGKILL)  # after step 0, during step 1
    finally:
        driver.wait()
    assert 0 < len((out / "results.jsonl").read_text().splitlines()) < 4
    run_search(recipe, out, evaluator=slow_stub, run=Run(executor=executor("ray"), resume=True))
    assert (out / "results.jsonl").read_bytes() == local_results


def test_bad_input_is_refused_in_one_line(recipe, tmp_path):
    with pytest.raises(SurgeonError, match="job_gpus=4: no node of the Ray cluster has 4 GPUs"):
        run_search(recipe, tmp_path / "a", evaluator=stub, run=Run(executor=executor("ray", job_gpus=4)))
    assert not (tmp_path / "a").exists()
    two_nodes = mock.Mock(multi_node=True, nodes=lambda: [{}, {}])
    with pytest.raises(SurgeonError, match="is relative, but the Ray cluster has 2 nodes"):
        _shared_folder(Path("runs/x"), two_nodes)
    assert _shared_folder(tmp_path / "x", two_nodes) == tmp_path / "x"
    with pytest.raises(SurgeonError, match="Ray options; add backend=ray"):
        executor("local", job_gpus=1)
    with pytest.raises(SurgeonError, match="unknown backend"):
        executor("dask")


def test_cli_refuses_an_unreachable_address_and_a_missing_ray(recipe, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ""}
    cmd = [sys.executable, "-m", "surgeon.cli", "search", str(recipe), "--out", str(tmp_path / "x"),
           "--backend", "ray", "--address", "127.0.0.1:1"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "cannot reach" in done.stderr and "127.0.0.1:1" in done.stderr, done.stderr[-500:]
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
    hide = "import sys; sys.modules['ray'] = None; from surgeon.cli.main import main; sys.argv[0] = 'surgeon'; main()"
    done = subprocess.run([sys.executable, "-c", hide, *cmd[3:]], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "pip install 'surgeon[ray]'" in done.stderr, done.stderr[-500:]
    assert not (tmp_path / "x").exists()
