"""Build-up searches: the rules' decisions with stub evaluators (the paper's Fig. 11 path, delta,
NLL, divergence), resume after a crash, two workers against one, a real search on digits, the
Python recipe form, and bad recipes / folders / command lines."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_cli import one_line_error
from test_cli import surgeon as surgeon_cli

import surgeon
from surgeon.core.errors import SurgeonError
from surgeon.parallel import Run
from surgeon.search import Job, Search, read_records, run_search, search_spec, search_report, train_candidate
from surgeon.training.loop import Diverged, run_dir_for
from surgeon.training.recipe import training_recipe

ROOT = Path(__file__).resolve().parents[1]

# A tiny ResNet with the paper's blocks per stage (3, 4, 6, 4): at most 1, 2, 3, 2 MSAs in c1..c4.
TINY = """\
[model]
name = "resnet10t"
num_classes = 10
input_size = [3, 64, 64]

[model.kwargs]
layers = [3, 4, 6, 4]
channels = [8, 16, 32, 64]

[data]
train = "digits"

[train]
recipe = "digits"
epochs = 1

[search]
metric = "acc"
window = 2
heads = 1
dim_head = 8
"""

# Top-1 of the paper's build-up on CIFAR-100 (PAPER.md), keyed by candidate name.
PAPER = {"baseline": 82.5, "c4x1": 83.45, "c4x2": 83.65, "c3x1+c4x2": 83.77, "c3x2+c4x2": 83.52,
         "c2x1+c3x1+c4x2": 84.0, "c2x2+c3x1+c4x2": 83.4, "c1x1+c2x1+c3x1+c4x2": 83.8}
PAPER_PATH = [("baseline", True), ("c4x1", True), ("c4x2", True), ("c3x1+c4x2", True), ("c3x2+c4x2", False),
              ("c2x1+c3x1+c4x2", True), ("c2x2+c3x1+c4x2", False), ("c1x1+c2x1+c3x1+c4x2", False)]

EXTRA: dict[str, float] = {}  # a test's own scores, over PAPER's
CALLS: list[tuple[str, int]] = []  # the jobs the stubs ran, in this process
CRASH_AT: list[int] = []  # raise on this call number (1-based)


def paper_stub(job: Job) -> dict[str, float]:
    """The paper's accuracy for the candidate (a KeyError for a candidate the rules never try),
    seeds 0.2 points apart; NLL falls as accuracy rises."""
    CALLS.append((job.candidate.name, job.seed))
    if CRASH_AT and len(CALLS) == CRASH_AT[0]:
        raise RuntimeError("simulated crash")
    acc = ({**PAPER, **EXTRA}[job.candidate.name] + 0.2 * job.seed) / 100
    return {"acc": acc, "nll": 2.0 - acc}


def diverging_stub(job: Job) -> dict[str, float]:
    """The paper's numbers, but c4x2 diverges."""
    if job.candidate.name == "c4x2":
        raise Diverged("training diverged in epoch 1: the mean training loss is nan")
    return paper_stub(job)


def write(tmp_path: Path, text: str, name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def decisions(records: list[dict]) -> list[tuple[str, bool]]:
    return [(r["name"], r["accepted"]) for r in records]


@pytest.fixture(autouse=True)
def _fresh_calls():
    CALLS.clear()
    CRASH_AT.clear()
    EXTRA.clear()


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: a shared 2-core machine runs these small models far faster so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------
# Decisions


def test_buildup_follows_the_papers_path(tmp_path):
    """Accept while better, the m <= n/2 cap (no c4x3), an earlier stage after a reject, stop after c1."""
    result = run_search(write(tmp_path, TINY), tmp_path / "run", evaluator=paper_stub)
    assert decisions(result.records) == PAPER_PATH
    best = result.best
    assert best["name"] == "c2x1+c3x1+c4x2" and best["msa"] == {"c2": 1, "c3": 1, "c4": 2}  # Alter-ResNet-50
    assert best["msa_blocks"] == ["c2.b3", "c3.b5", "c4.b1", "c4.b3"]  # [Conv]*(n-2m) + [Conv, MSA]*m
    assert best["passes"][0]["pass"] == "alternate" and best["passes"][0]["stages"] == best["msa"]
    assert [r["step"] for r in result.records] == list(range(8))
    assert best["mean"] == pytest.approx(0.84) and best["std"] == 0.0 and best["runs"][0]["seed"] == 0
    assert len(CALLS) == 8 and read_records(tmp_path / "run") == result.records
    assert (tmp_path / "run" / "buildup.png").stat().st_size > 0
    assert not (tmp_path / "run" / "best.safetensors").exists()  # a stub trains no model


@pytest.mark.parametrize("metric, delta, accepted", [("acc", 0.01, False), ("acc", 0.009, True),
                                                    ("nll", 0.01, False), ("nll", 0.0, True)])
def test_delta_and_the_direction_of_the_metric(tmp_path, metric, delta, accepted):
    """c4x1 beats the baseline by 0.95 points (acc up, NLL down); c3 gets no better candidate."""
    text = TINY.replace('metric = "acc"', f'metric = "{metric}"') + f'delta = {delta}\nstages = ["c4"]\nmax_msa = 1\n'
    records = run_search(write(tmp_path, text), tmp_path / "run", evaluator=paper_stub).records
    assert decisions(records) == [("baseline", True), ("c4x1", accepted)]
    if metric == "acc" and delta == 0.009:  # 0.0095 >= 0.009: the gain is measured against delta
        assert records[1]["mean"] - records[0]["mean"] == pytest.approx(0.0095)


def test_a_worse_candidate_is_rejected_and_the_search_moves_on(tmp_path):
    EXTRA.update(c4x1=82.0, c3x1=82.6, c3x2=82.0)
    records = run_search(write(tmp_path, TINY + 'stages = ["c3", "c4"]\n'), tmp_path / "run",
                         evaluator=paper_stub).records
    assert decisions(records) == [("baseline", True), ("c4x1", False), ("c3x1", True), ("c3x2", False)]


def test_a_diverging_candidate_is_recorded_and_the_search_goes_on(tmp_path):
    EXTRA.update({"c3x1+c4x1": 83.0})
    records = run_search(write(tmp_path, TINY + 'stages = ["c3", "c4"]\n'), tmp_path / "run",
                         evaluator=diverging_stub).records
    names = [r["name"] for r in records]
    assert names == ["baseline", "c4x1", "c4x2", "c3x1+c4x1"]  # c4 is left after the failure
    failed = records[2]
    assert failed["failed"] and not failed["accepted"] and failed["mean"] is None
    assert "seed 0: training diverged" in failed["reason"] and failed["runs"][0]["failed"].startswith("training")


# ----------------------------------------------------------------------------------------------
# Resume and workers


def test_resume_after_a_crash_writes_the_uninterrupted_results(tmp_path):
    recipe = write(tmp_path, TINY + "repeats = [0, 1]\n")
    whole = run_search(recipe, tmp_path / "whole", evaluator=paper_stub)
    CALLS.clear()
    CRASH_AT.append(6)  # baseline s0 s1, c4x1 s0 s1, c4x2 s0, then a crash in c4x2 seed 1
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_search(recipe, tmp_path / "cut", evaluator=paper_stub)
    assert [r["name"] for r in read_records(tmp_path / "cut")] == ["baseline", "c4x1"]
    with pytest.raises(SurgeonError, match="holds a search already; continue it with resume=True"):
        run_search(recipe, tmp_path / "cut", evaluator=paper_stub)
    CALLS.clear()
    CRASH_AT.clear()
    resumed = run_search(recipe, tmp_path / "cut", run=Run(resume=True), evaluator=paper_stub)
    assert CALLS[0] == ("c4x2", 1)  # finished candidates and seeds are not trained again
    assert len(CALLS) == 2 * len(PAPER_PATH) - 5
    assert (tmp_path / "cut" / "results.jsonl").read_bytes() == (tmp_path / "whole" / "results.jsonl").read_bytes()
    assert resumed.records == whole.records and resumed.best["std"] == pytest.approx(0.001 * math.sqrt(2))


def test_resume_refuses_a_folder_made_by_another_recipe(tmp_path):
    run_search(write(tmp_path, TINY + 'stages = ["c4"]\nmax_msa = 1\n'), tmp_path / "run", evaluator=paper_stub)
    other = write(tmp_path, TINY + 'stages = ["c4"]\nmax_msa = 1\ndelta = 0.01\n', "other.toml")
    with pytest.raises(SurgeonError, match=r"made by another search spec \(search.delta differ\)"):
        run_search(other, tmp_path / "run", run=Run(resume=True), evaluator=paper_stub)
    with pytest.raises(SurgeonError, match="search folder .*elsewhere' does not exist"):  # missing: said so
        run_search(other, tmp_path / "elsewhere", run=Run(resume=True), evaluator=paper_stub)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SurgeonError, match="holds no search"):  # a folder without a search
        run_search(other, tmp_path / "empty", run=Run(resume=True), evaluator=paper_stub)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SurgeonError, match="is not an empty folder"):
        run_search(other, tmp_path / "busy", evaluator=paper_stub)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(SurgeonError, match="holds no search"):
        search_report(tmp_path / "busy")
    with pytest.raises(SurgeonError, match="workers = 0; give 1 or more"):
        run_search(other, tmp_path / "fresh", run=Run(executor=surgeon.parallel.executor("local", workers=0)),
                   evaluator=paper_stub)


def test_a_failed_start_leaves_nothing_behind(tmp_path):
    """A search that fails before anything worth resuming exists removes what it made (also the
    parent folder it created), never what was there before; the same command then just works."""
    recipe = write(tmp_path, TINY)
    CRASH_AT.append(1)  # the first training fails
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_search(recipe, tmp_path / "runs" / "new", evaluator=paper_stub)
    assert not (tmp_path / "runs").exists()
    (tmp_path / "empty").mkdir()
    CALLS.clear()
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_search(recipe, tmp_path / "empty", evaluator=paper_stub)
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
    CALLS.clear()
    CRASH_AT.clear()
    assert decisions(run_search(recipe, tmp_path / "runs" / "new", evaluator=paper_stub).records) == PAPER_PATH


SCRIPT = """\
import surgeon


def stub(job):
    return {{"acc": 0.5}}


{call}
"""


def test_a_script_without_the_main_guard_is_refused_before_anything_is_written(tmp_path):
    """Spawned workers re-import the script: an unguarded run_search with two local workers would run again in
    each of them. It is refused in one line naming the line; under the guard it runs."""
    recipe = write(tmp_path, TINY + 'stages = ["c4"]\nmax_msa = 1\n')
    call = (f"res = surgeon.run_search({str(recipe)!r}, {str(tmp_path / 'run')!r}, evaluator=stub, "
            "run=surgeon.parallel.Run(executor=surgeon.parallel.executor('local', workers=2)))")
    bare = write(tmp_path, SCRIPT.format(call=call + "\nprint(len(res.records))"), "bare.py")
    r = subprocess.run([sys.executable, str(bare)], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert r.returncode == 1 and f"top level of {bare} (line 8)" in r.stderr, r.stderr
    assert 'put the call under if __name__ == "__main__":' in r.stderr and not (tmp_path / "run").exists()
    guarded = write(tmp_path, SCRIPT.format(call=f'if __name__ == "__main__":\n    {call}\n    print(len(res.records))'),
                    "guarded.py")
    r = subprocess.run([sys.executable, str(guarded)], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.split() == ["2"], r.stderr


def test_two_workers_decide_as_one(tmp_path):
    recipe = write(tmp_path, TINY + "repeats = [0, 1]\n")
    one = run_search(recipe, tmp_path / "one", evaluator=paper_stub)
    two = run_search(recipe, tmp_path / "two", run=Run(executor=surgeon.parallel.executor("local", workers=2)), evaluator=paper_stub)
    assert decisions(two.records) == decisions(one.records) == PAPER_PATH
    assert (tmp_path / "two" / "results.jsonl").read_bytes() == (tmp_path / "one" / "results.jsonl").read_bytes()
    assert len(CALLS) == 16  # the workers' calls happened in their own processes
    outcomes = sorted((tmp_path / "two" / "candidates").glob("*/seed*.json"))
    assert len(outcomes) == 16 and all(json.loads(p.read_text())["seconds"] >= 0 for p in outcomes)


# ----------------------------------------------------------------------------------------------
# The real trainer, the Python form, the shipped recipes

DIGITS = """\
[model]
name = "resnet10t"
input_size = [3, 32, 32]

[model.kwargs]
layers = [1, 2, 1, 1]
channels = [16, 32, 64, 128]

[data]
train = "digits"
subset = 0.1

[train]
recipe = "digits"
warmup_epochs = 0
epochs = 1

[search]
metric = "acc"
stages = ["c2"]
heads = 1
dim_head = 16
"""

RESUMED: list[bool] = []


def recording_trainer(job: Job) -> dict[str, float]:
    RESUMED.append(job.resume)
    return train_candidate(job)


def test_real_search_on_digits_writes_models_and_resumes_from_checkpoints(tmp_path):
    recipe, out = write(tmp_path, DIGITS), tmp_path / "run"
    result = run_search(recipe, out)
    records = result.records
    assert [r["name"] for r in records] == ["baseline", "c2x1"] and records[0]["accepted"]
    for r in records:
        assert 0 <= r["mean"] <= 1 and set(r["runs"][0]["metrics"]) >= {"acc", "nll", "ece"}
        assert r["model"] == f"candidates/{r['id']}/seed0.safetensors"
    alt = surgeon.load(out / records[1]["model"])  # rebuilt from its recipe: the MSA is there
    assert type(alt.layer2[1]).__name__ == "MSABlock"
    assert (out / "best.safetensors").read_bytes() == (out / result.best["model"]).read_bytes()
    assert training_recipe(out / "train.toml") == Search(search_spec(recipe)).setup.train
    assert (out / "spec.toml").read_text() == DIGITS and (out / "buildup.png").is_file()
    # a crash after the last training, before its outcome was written: resume continues its checkpoint
    results = (out / "results.jsonl").read_bytes()
    (out / "results.jsonl").write_text(results.decode().splitlines()[0] + "\n")
    (out / "candidates" / records[1]["id"] / "seed0.json").unlink()
    assert (run_dir_for(out / records[1]["model"]) / "checkpoint.pt").is_file()
    run_search(recipe, out, run=Run(resume=True), evaluator=recording_trainer)
    assert RESUMED == [True] and (out / "results.jsonl").read_bytes() == results


def test_python_recipe_places_smoothing_with_its_own_generator(tmp_path):
    """recipes/smoothing_buildup.py with a stub: smoothing after c4 helps, nothing else does."""
    recipe = search_spec(ROOT / "recipes" / "smoothing_buildup.py")
    result = run_search(recipe, tmp_path / "run", evaluator=smoothing_stub)
    assert decisions(result.records) == [("baseline", True), ("smooth-c4", True), ("smooth-c3-c4", False),
                                         ("smooth-c2-c4", False), ("smooth-c1-c4", False)]
    assert [p["block"] for p in result.best["passes"]] == ["smoothing"] and result.best["msa"] == {}
    assert (tmp_path / "run" / "spec.py").read_text() == recipe.text


def smoothing_stub(job: Job) -> dict[str, float]:
    return {"acc": 0.9 if job.candidate.name == "smooth-c4" else 0.8}


def test_shipped_toml_recipes_are_valid():
    for name in ("digits_buildup", "resnet18_cifar10", "alternet50_cifar100"):
        r = search_spec(ROOT / "recipes" / f"{name}.toml")
        assert r.setup.train.epochs >= 1 and r.metric == "acc"
    paper = search_spec(ROOT / "recipes" / "alternet50_cifar100.toml")
    assert paper.setup.model == "resnetv2_50" and paper.setup.model_kwargs["layers"] == [3, 4, 6, 4]
    assert paper.window == 4 and paper.setup.train.lr == 1.25e-4 and paper.setup.train.mixup == 1.0


# ----------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("edit, expected", [
    (('metric = "acc"', 'metrc = "acc"'), "recipe.toml (line 18) [search]: unknown key 'metrc'; did you mean metric?"),
    (("[search]", "[serch]"), "recipe.toml (line 17) [serch]: unknown section 'serch'; did you mean [search]?"),
    (("epochs = 1\n", ""), "recipe.toml (line 13) [train]: missing key(s) 'epochs' in [train]"),
    (("epochs = 1", "epochs = 0\nwarmup_epochs = 0"), "recipe.toml (line 15) [train]: the budget per candidate is zero epochs"),
    (('metric = "acc"', 'metric = "accuracy"'), "recipe.toml (line 18) [search]: metric = 'accuracy'; give one of acc, top5, nll"),
    (("epochs = 1", 'epochs = 1\nlr = "fast"'), "recipe.toml (line 16) [train]: lr = 'fast' has the wrong type"),
    (("heads = 1", "heads = {c9 = 2}"), "recipe.toml (line 20) [search]: heads names stage(s) c9 that resnet10t lacks"),
    (("heads = 1", 'heads = 1\nstages = ["c4", "c5"]'), "recipe.toml (line 21) [search]: resnet10t has no stage c5 (its stages: c1, c2"),
    ((("layers = [3, 4, 6, 4]", "layers = [3, 4, 6, 1]"), ("dim_head = 8", 'dim_head = 8\nstages = ["c4"]')),
     "stage c4 has 1 conv blocks, so it takes at most 0 MSAs"),
    (("window = 2", "window = 8"), "recipe.toml (line 17) [search]: window 8 is larger than c3's 4x4 feature map"),
    (('train = "digits"', 'train = "digits"\nval = "none"'), "recipe.toml (line 12) [data]: the search compares candidates on validation"),
])
def test_bad_recipes_are_named_before_anything_is_written(tmp_path, edit, expected):
    text = TINY
    for old, new in edit if isinstance(edit[0], tuple) else [edit]:
        text = text.replace(old, new)
    assert text != TINY
    with pytest.raises(SurgeonError) as e:
        run_search(write(tmp_path, text), tmp_path / "run", evaluator=paper_stub)
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists() and not CALLS


def test_every_problem_of_a_search_spec_is_reported_at_once(tmp_path):
    """Three problems in three sections: all named together, each with its file, line and section."""
    text = TINY.replace("num_classes = 10", "num_classes = 0").replace("epochs = 1", "epochs = 1\nwarmup = 1")
    text = text.replace('metric = "acc"', 'metric = "accuracy"')
    path = write(tmp_path, text)
    with pytest.raises(SurgeonError) as e:
        run_search(path, tmp_path / "run", evaluator=paper_stub)
    assert str(e.value).splitlines() == [
        f"{path}: 3 problems:",
        f"  {path} (line 3) [model]: num_classes = 0; give an integer >= 1",
        f"  {path} (line 16) [train]: unknown key 'warmup'; did you mean warmup_epochs?",
        f"  {path} (line 19) [search]: metric = 'accuracy'; give one of acc, top5, nll, brier, ece"]
    assert not (tmp_path / "run").exists() and not CALLS


def test_python_recipe_problems_name_their_section(tmp_path):
    path = write(tmp_path, 'SETTINGS = {"model": {"name": "resnet10t"}, "data": {"train": "digits"},\n'
                           '            "train": {"recipe": "digits", "epochs": 1, "warmup": 1, "lr": "x"},\n'
                           '            "search": {"metric": "acc"}}\n\n'
                           'def candidates(search):\n    yield [search.msa({})]\n', "r.py")
    with pytest.raises(SurgeonError) as e:
        search_spec(path)
    assert str(e.value).splitlines()[1:] == [f"  {path} [train]: unknown key 'warmup'; did you mean warmup_epochs?",
                                             f"  {path} [train]: lr = 'x' has the wrong type; give a number"]


def test_bad_python_recipes(tmp_path):
    with pytest.raises(SurgeonError, match="define a generator function candidates"):
        search_spec(write(tmp_path, "SETTINGS = {}\n", "a.py"))
    with pytest.raises(SurgeonError, match=r"does not run \(ZeroDivisionError"):
        search_spec(write(tmp_path, "1 / 0\n", "b.py"))
    with pytest.raises(SurgeonError, match="missing section"):
        search_spec(write(tmp_path, "SETTINGS = {}\ndef candidates(search):\n    yield []\n", "c.py"))


def test_cli_reports_and_refuses_bad_input_in_one_line(tmp_path):
    recipe = write(tmp_path, TINY + 'stages = ["c4"]\nmax_msa = 1\n')
    run_search(recipe, tmp_path / "run", evaluator=paper_stub)
    r = surgeon_cli("report", str(tmp_path / "run"), "--out", str(tmp_path / "chart.svg"))
    assert r.returncode == 0, r.stderr
    assert "01-c4x1" in r.stdout and "accepted" in r.stdout and (tmp_path / "chart.svg").stat().st_size > 0
    bad = write(tmp_path, TINY.replace("[data]", "[dat]"), "bad.toml")
    one_line_error(surgeon_cli("search", str(bad), "--out", str(tmp_path / "new")), "unknown section 'dat'; did you mean [data]?")
    assert not (tmp_path / "new").exists()
    other = write(tmp_path, TINY + 'stages = ["c4"]\nmax_msa = 2\n', "other.toml")
    one_line_error(surgeon_cli("search", str(other), "--out", str(tmp_path / "run"), "--resume"),
                   "was made by another search spec (search.max_msa differ)")
    assert len(read_records(tmp_path / "run")) == 2  # nothing lost


def test_cifar_stem_in_a_recipe_reaches_base_and_candidates(tmp_path):
    text = TINY.replace("input_size = [3, 64, 64]", 'input_size = [3, 32, 32]\nstem = "cifar"')
    search = Search(search_spec(write(tmp_path, text)))
    assert [search.graph.stages[s][-1].grid for s in ("c1", "c4")] == [(32, 32), (4, 4)]
    cand = search.msa({"c4": 1})
    built = surgeon.search.build_model(Job(cand, 0, search.setup, tmp_path / "m.safetensors"))
    assert [p["pass"] for p in built.surgeon_cfg.passes] == ["cifar_stem", "alternate"]
    bad = write(tmp_path, TINY.replace("[model.kwargs]", 'stem = "tiny"\n[model.kwargs]'), "bad.toml")
    with pytest.raises(SurgeonError, match=r'bad.toml.*stem.*"cifar"'):
        search_spec(bad)
