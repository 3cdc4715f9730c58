"""Training one candidate: `Candidate`, `Setup`, `Job`, the default evaluator and the executor
runner that executes a step's jobs (each under `surgeon.training.fixed_numerics`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import torch
from torch import nn

from surgeon.core.errors import SurgeonError, first_line
from surgeon.parallel.executors import Executor, RayExecutor
from surgeon.parallel.run import Run
from surgeon.core.files import write_text
from surgeon.model.weights import save as save_model
from surgeon.core.jsonio import dumps
from surgeon.surgery.alternet import cifar_stem
from surgeon.surgery.passes import apply_passes
from surgeon.training.loop import Diverged, run_dir_for, train
from surgeon.training.recipe import Recipe
from surgeon.training.sampling import fixed_numerics
from surgeon.training.setup import build_for_training


@dataclass(frozen=True)
class Candidate:
    """One architecture: ``passes`` (surgeon's recorded pass entries) replayed on the freshly
    built base model; ``msa`` counts its MSA blocks per stage, ``msa_blocks`` gives their addresses."""

    name: str
    passes: tuple[dict[str, Any], ...] = ()
    msa: dict[str, int] = field(default_factory=dict)
    msa_blocks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Setup:
    """What every candidate's training shares; plain data, so that worker processes receive it.
    ``train`` holds the input size; ``model_kwargs`` the constructor arguments, weights, pretrained."""

    model: str
    model_kwargs: dict[str, Any]
    num_classes: int | None
    data: str
    val: str | None
    subset: float | None
    train: Recipe
    stem: str | None = None  # "cifar": `surgeon.cifar_stem` applied to the base model
    threads: int = 1  # torch CPU threads of every job: its numbers must not depend on how many run at once
    deterministic: bool = False  # torch's deterministic algorithms (CUDA)


@dataclass(frozen=True)
class Job:
    """One training: `candidate` with `seed`, written to `out` (its run folder beside it);
    ``resume``: that run folder holds a checkpoint of an earlier attempt, to continue."""

    candidate: Candidate
    seed: int
    setup: Setup
    out: Path
    resume: bool = False
    device: str | None = None
    progress: bool = False
    gpus: int = 0  # > 1: the training runs under torchrun over that many GPUs (one per rank)


Evaluator = Callable[[Job], Mapping[str, float]]


def build_model(job: Job) -> nn.Module:
    """The candidate of `job`, initialised from its seed: the base model built by name (with the
    training recipe's stochastic depth) and the candidate's passes replayed."""
    s = job.setup
    torch.manual_seed(job.seed)
    model = build_for_training(s.model, s.train, s.num_classes, **s.model_kwargs)
    if s.stem:
        model = cifar_stem(model, input_size=s.train.input_size)
    return apply_passes(model, [dict(p) for p in job.candidate.passes])


def train_candidate(job: Job) -> dict[str, float]:
    """The default evaluator: `surgeon.train` of `build_model(job)` with the shared recipe and the
    job's seed into ``job.out`` (continuing its checkpoint when ``job.resume``); returns the last
    epoch's validation metrics (acc, nll, ...). Ctrl-C keeps the checkpoint and stops the search."""
    s = job.setup
    if job.gpus > 1:
        return _torchrun_candidate(job)
    control = Run(resume=job.resume, overwrite=True, device=job.device, progress=job.progress)
    run = train(build_model(job), s.data, recipe=s.train, out=job.out, val=s.val, subset=s.subset, seed=job.seed,
                run=control)
    if run.interrupted:
        raise KeyboardInterrupt
    return {k.removeprefix("val_"): v for k, v in run.history[-1].items() if k.startswith("val_")}


def _torchrun_candidate(job: Job) -> dict[str, float]:
    """`train_candidate` over ``job.gpus`` GPUs of one node: the seeded, untrained candidate is
    saved beside the target, then ``torchrun --nproc-per-node GPUS -m surgeon.cli train`` trains
    it with DDP (surgeon.train under torchrun) into ``job.out``; the last epoch's validation
    metrics come from its log. A failed training (e.g. divergence) fails the candidate."""
    s = job.setup
    init = job.out.with_name(job.out.stem + ".init.safetensors")
    save_model(build_model(job), init, overwrite=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={job.gpus}",
               "-m", "surgeon.cli", "train", str(init), "--data", s.data, "--recipe",
               str(job.out.parents[2] / "train.toml"), "--seed", str(job.seed), "--out", str(job.out),
               *(["--val", s.val] if s.val else []), *(["--subset", str(s.subset)] if s.subset else []),
               *(["--resume"] if job.resume else [])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if "diverged" in tail.lower():
            raise Diverged(tail)
        raise SurgeonError(f"torchrun training of {job.out.parent.name} seed {job.seed} failed: {tail}")
    last = json.loads((run_dir_for(job.out) / "log.jsonl").read_text().splitlines()[-1])
    return {k.removeprefix("val_"): v for k, v in last.items() if k.startswith("val_")}


def _execute(evaluator: Evaluator, job: Job) -> dict[str, Any]:
    """One job's outcome: ``{"seed", "metrics" | "failed", "seconds"}``. Divergence and running
    out of device memory fail the candidate; any other error stops the search."""
    t0 = time.perf_counter()
    try:
        with fixed_numerics(job.setup.threads, job.setup.deterministic):  # the same wherever it runs
            metrics = evaluator(job)
        outcome: dict[str, Any] = {"seed": job.seed, "metrics": {
            k: float(v) if math.isfinite(float(v)) else None for k, v in metrics.items()}}
    except (Diverged, torch.OutOfMemoryError) as exc:
        outcome = {"seed": job.seed, "failed": first_line(exc)}
    outcome["seconds"] = time.perf_counter() - t0
    return outcome


def _task(evaluator: Evaluator, job: Job) -> dict[str, Any]:
    """`_execute` as one executor task (its numerics fixed inside, whatever runs it)."""
    outcome = _execute(evaluator, job)
    _write_outcome(job, outcome)  # by the task: a resumed search finds it even if the driver died
    return outcome


def _write_outcome(job: Job, outcome: dict[str, Any]) -> None:
    write_text(job.out.with_suffix(".json"), dumps(outcome))


class _Runner:
    """Runs a step's jobs on an executor (`surgeon.executors`): this process, local processes or
    Ray tasks, entered on the first job and left (pending jobs cancelled on an error) when the
    search ends. A job whose worker died on every attempt becomes a failed outcome."""

    def __init__(self, evaluator: Evaluator, executor: Executor) -> None:
        self.evaluator, self.executor = evaluator, executor
        self.entered = False

    @property
    def in_process(self) -> bool:
        return self.executor.in_process

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.entered:
            self.executor.__exit__(kind, exc, tb)

    def start(self) -> None:
        """Enter the executor (start processes, join the cluster) once."""
        if not self.entered:
            self.executor.__enter__()
            self.entered = True

    @property
    def job_gpus(self) -> float:
        return float(getattr(self.executor, "job_gpus", 0) or 0)

    def device(self, slot: int) -> str | None:
        """The device of a step's slot-th job: on Ray the GPU(s) the task is given (Ray sets
        CUDA_VISIBLE_DEVICES), locally the GPUs in turn."""
        if isinstance(self.executor, RayExecutor):
            return "cuda" if self.job_gpus else "cpu"
        return _device(slot)

    def run(self, jobs: list[Job]) -> Iterator[tuple[Job, dict[str, Any]]]:
        """(job, outcome) as the jobs finish."""
        if not jobs:
            return
        self.start()
        for i, result in self.executor.map(_task, [(self.evaluator, job) for job in jobs]):
            if result.ok:
                yield jobs[i], result.value
            else:
                yield jobs[i], {"seed": jobs[i].seed, "failed": result.failed, "seconds": None}


def _device(slot: int) -> str | None:
    """The device of a step's slot-th job: the local GPUs in turn, else None (the model's, CPU)."""
    n = torch.cuda.device_count()
    return f"cuda:{slot % n}" if n else None
