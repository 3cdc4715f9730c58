"""Parallelism does not change results (issue 12, item 2): a search's jobs run at the recipe's fixed
torch thread count whatever runs them, so the same recipe writes the same results.jsonl with one
worker or two; and `fixed_numerics` sets and restores the thread count and deterministic flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import surgeon
from surgeon.core.errors import SurgeonError
from surgeon.model.sizes import input_size_of
from surgeon.search import run_search, search_spec
from surgeon.training.sampling import fixed_numerics

# One real step of a build-up search: the baseline, two seeds, trained for one epoch on a tenth of digits.
RECIPE = """\
SETTINGS = {
    "model": {"name": "resnet10t", "num_classes": 10, "input_size": [3, 16, 16],
              "kwargs": {"channels": [8, 16, 32, 64]}},
    "data": {"train": "digits", "subset": 0.1},
    "train": {"recipe": "digits", "warmup_epochs": 0, "epochs": 1, "batch_size": 32},
    "search": {"metric": "nll", "repeats": [0, 1]},
}


def candidates(search):
    yield [search.msa({})]
"""


def test_fixed_numerics_sets_and_restores():
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    other = 2 if before[0] == 1 else 1
    with fixed_numerics(other, deterministic=True):
        assert torch.get_num_threads() == other and torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    with pytest.raises(ValueError), fixed_numerics(other):
        raise ValueError("a failing job")
    assert torch.get_num_threads() == before[0]  # restored on error too
    with pytest.raises(SurgeonError, match="threads = 0"), fixed_numerics(0):
        pass


def test_the_recipe_fixes_threads_and_search_json_records_them(tmp_path):
    path = tmp_path / "r.py"
    path.write_text(RECIPE)
    assert search_spec(path).setup.threads == 1 and not search_spec(path).setup.deterministic
    path.write_text(RECIPE.replace('"repeats": [0, 1]', '"repeats": [0, 1], "threads": 0'))
    with pytest.raises(SurgeonError, match="threads = 0; give an integer >= 1"):
        search_spec(path)


def test_one_worker_and_two_write_the_same_results(tmp_path):
    """Today's failure: one worker trained at the process's threads (2 here), two workers at
    cores / 2 = 1 each, and CPU kernels reduce in another order (the NLLs differed in the 7th digit)."""
    path = tmp_path / "r.py"
    path.write_text(RECIPE)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the serial run's process, as the CLI runs it on 2 cores
    try:
        one = run_search(path, tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    two = run_search(path, tmp_path / "two", run=surgeon.parallel.Run(executor=surgeon.parallel.executor("local", workers=2)))
    assert (tmp_path / "one" / "results.jsonl").read_bytes() == (tmp_path / "two" / "results.jsonl").read_bytes()
    assert [r["runs"] for r in one.records] == [r["runs"] for r in two.records]
    stamp = json.loads((tmp_path / "two" / "search.json").read_text())
    assert stamp["threads"] == 1 and stamp["settings"]["search"]["threads"] == 1 and stamp["input_size"] == [3, 16, 16]
    best = surgeon.load(Path(two.out) / "best.safetensors")  # the search's answer records its size
    assert input_size_of(best) == (3, 16, 16) and two.input_size == (3, 16, 16)
