"""The search engine: the search folder (created, checked, resumed), the step loop over a
generator's candidates, the records and decisions written to results.jsonl, and the best model."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from surgeon.core import checks
from surgeon.core.errors import SurgeonError, first_line
from surgeon.parallel.executors import RayExecutor
from surgeon.parallel.executors import executor as make_executor
from surgeon.core.files import atomic_path, check_folder, write_text
from surgeon.core.jsonio import dumps
from surgeon.core.runfolder import check_spawn_safe, undo_on_failure
from surgeon.parallel.run import Run
from surgeon._compat import moved_keywords, options_from
from surgeon.training.loop import run_dir_for
from surgeon.search.jobs import Candidate, Evaluator, Job, Setup, _Runner, _write_outcome, train_candidate
from surgeon.search.spec import METRICS, SearchSpec, search_spec
from surgeon.search.report import SearchResult, _chart, read_records
from surgeon.search.rules import Search, Steps

def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two settings dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in dict.fromkeys([*old, *new]) for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def _check_folder(out: Path, spec: SearchSpec, resume: bool) -> None:
    """Refuse, before any work, an OUT that a new search must not use (a search already, or a
    folder with files) and, with `resume`, one that holds no search or another spec's."""
    stamp = out / "search.json"
    if resume:
        check_folder(out, "search folder", "start the search without resume=True")
        if not stamp.is_file():
            raise SurgeonError(f"resume=True: {out} holds no search (no search.json); start it without resume=True")
        old = json.loads(stamp.read_text())
        if old.get("sha256") != spec.digest:
            diff = _differences(old.get("settings", {}), spec.settings)
            raise SurgeonError(f"{out} was made by another search spec ({', '.join(diff[:4]) or 'its settings'} differ); "
                               f"resume with that spec ({out / old.get('copy', 'spec.toml')}) or choose another out=")
    elif stamp.is_file():
        raise SurgeonError(f"{out} holds a search already; continue it with resume=True or choose another out=")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SurgeonError(f"{out} exists and is not an empty folder; choose another out= (nothing there is replaced)")


def _search_started(out: Path) -> bool:
    """Whether a search folder holds work worth resuming: a result or a training checkpoint."""
    return (out / "results.jsonl").is_file() or any((out / "candidates").glob("*/seed*.json")) or any(
        (out / "candidates").glob("*/*.run/checkpoint.pt"))


def _create_folder(out: Path, spec: SearchSpec, setup: Setup) -> None:
    """A new search's folder: the spec's copy, search.json (its hash and settings) and train.toml."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SurgeonError(f"cannot create {out} ({first_line(exc, 80)}); choose another out=") from None
    copy = "spec" + spec.path.suffix
    write_text(out / copy, spec.text)
    lines = ["# the training recipe of every candidate: surgeon train MODEL --recipe train.toml"]
    lines += [f"{k} = {dumps('none' if v is None else v)}" for k, v in setup.train.to_dict().items()]
    write_text(out / "train.toml", "\n".join(lines) + "\n")
    write_text(out / "search.json", dumps({"spec": str(spec.path), "copy": copy, "sha256": spec.digest,
                              "input_size": list(setup.train.input_size or ()), "threads": setup.threads,
                              "deterministic": setup.deterministic, "settings": spec.settings},
                             indent=1, default=str))


class _Engine:
    """Runs the steps a generator yields, records them, decides, and writes the outputs."""

    def __init__(self, search: Search, out: Path, runner: _Runner, progress: bool,
                 on_record: Callable[[dict[str, Any]], None] | None) -> None:
        self.search, self.out, self.runner, self.progress, self.on_record = search, out, runner, progress, on_record
        self.done = {r["id"]: r for r in read_records(out)}
        self.records: list[dict[str, Any]] = []

    def run(self, steps: Steps, candidates: list[Candidate] | None) -> list[dict[str, Any]]:
        """Run the step `candidates` (the generator's first) and those `steps` yields after it."""
        step = 0
        while candidates is not None:
            sent = self.step(step, self._checked(candidates))
            self.records += sent
            write_text(self.out / "results.jsonl", "".join(dumps(r) + "\n" for r in self.records))
            for record in sent:
                if self.on_record is not None:
                    self.on_record(record)
            try:
                candidates = steps.send(sent)
            except StopIteration:
                candidates = None
            step += 1
        return self.records

    def _checked(self, candidates: Any) -> list[Candidate]:
        names = [c.name for c in candidates] if isinstance(candidates, (list, tuple)) and all(
            isinstance(c, Candidate) for c in candidates) else []
        if not names or len(set(names)) != len(names):
            raise SurgeonError(f"{self.search.spec.path}: candidates() yielded {candidates!r:.80}; yield a non-empty "
                               "list of Candidate with distinct names (search.msa(...), search.candidate(...))")
        return list(candidates)

    def step(self, step: int, candidates: list[Candidate]) -> list[dict[str, Any]]:
        """Train what is not done yet of the step's (candidate, seed) pairs, then record and decide."""
        repeats = self.search.spec.repeats
        ids = [f"{step:02d}-{c.name}" for c in candidates]
        runs: dict[tuple[str, int], dict[str, Any]] = {}
        jobs: list[Job] = []
        for cid, c in zip(ids, candidates):
            if cid in self.done:
                if self.done[cid]["passes"] != list(c.passes):
                    raise SurgeonError(f"{self.out / 'results.jsonl'}: candidate {cid} was built otherwise; the folder "
                                       "was made by another search spec or surgeon version: choose another out=")
                runs.update({(cid, run["seed"]): run for run in self.done[cid]["runs"]})
                continue
            for seed in repeats:
                target = self.out / "candidates" / cid / f"seed{seed}.safetensors"
                if target.with_suffix(".json").is_file():
                    runs[cid, seed] = json.loads(target.with_suffix(".json").read_text())
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                jobs.append(Job(c, seed, self.search.setup, target, (run_dir_for(target) / "checkpoint.pt").is_file(),
                                self.runner.device(len(jobs)), self.progress and self.runner.in_process,
                                int(self.runner.job_gpus) if self.runner.job_gpus >= 2 else 0))
        for job, outcome in self.runner.run(jobs):
            if "failed" in outcome and outcome["seconds"] is None:  # its worker died: the task wrote nothing
                _write_outcome(job, outcome)
            runs[job.out.parent.name, job.seed] = outcome
        records = [self._record(step, cid, c, [runs[cid, s] for s in repeats]) for cid, c in zip(ids, candidates)]
        self._decide(records)
        return records

    def _record(self, step: int, cid: str, c: Candidate, runs: list[dict[str, Any]]) -> dict[str, Any]:
        metric, sign = self.search.spec.metric, METRICS[self.search.spec.metric]
        runs = [{"seed": r["seed"], **({"failed": r["failed"]} if "failed" in r else {"metrics": r["metrics"]})}
                for r in runs]
        reason = next((f"seed {r['seed']}: {r['failed']}" for r in runs if "failed" in r), None)
        values = [r["metrics"].get(metric) for r in runs if "metrics" in r]
        if reason is None and any(v is None for v in values):
            if not all(metric in r["metrics"] for r in runs):
                raise SurgeonError(f"the evaluator returned no {metric!r} for {cid} (it gave "
                                   f"{', '.join(runs[0]['metrics']) or 'nothing'}); return the spec's metric")
            reason = f"the validation {metric} is not finite"
        mean = statistics.fmean(values) if reason is None else None
        std = statistics.stdev(values) if reason is None and len(values) > 1 else (0.0 if reason is None else None)
        model = None
        if reason is None:
            seed = max(runs, key=lambda r: sign * r["metrics"][metric])["seed"]
            path = self.out / "candidates" / cid / f"seed{seed}.safetensors"
            model = str(path.relative_to(self.out)) if path.is_file() else None
        return {"id": cid, "step": step, "name": c.name, "msa": c.msa, "msa_blocks": list(c.msa_blocks),
                "passes": list(c.passes), "metric": metric, "runs": runs, "mean": mean, "std": std,
                "accepted": False, "failed": reason is not None, "reason": reason, "model": model}

    def _decide(self, records: list[dict[str, Any]]) -> None:
        """Accept the step's best candidate when it beats the best so far by >= delta, strictly."""
        spec = self.search.spec
        sign = METRICS[spec.metric]
        ok = [r for r in records if not r["failed"]]
        if not ok:
            return
        winner = max(ok, key=lambda r: sign * r["mean"])
        best = self.search.best
        gain = None if best is None else sign * (winner["mean"] - best["mean"])
        if gain is None or (gain > 0 and gain >= spec.delta):
            winner["accepted"] = True
            self.search.best = winner


def _shared_folder(folder: Path, ex: RayExecutor) -> Path:
    """The search folder as the tasks see it: absolute; on a multi-node cluster it must be a
    path every node shares, so a relative one is refused."""
    if not folder.is_absolute() and not folder.expanduser().is_absolute() and ex.multi_node:
        raise SurgeonError(f"out={folder} is relative, but the Ray cluster has {len(ex.nodes())} nodes; give the "
                           "absolute path of a folder on a filesystem every node shares (e.g. /shared/runs/NAME)")
    return folder.expanduser().resolve()


def _search_run(run: Run | None, old: dict[str, Any]) -> Run:
    """The `Run` of a search, from ``run=`` or 0.1's keywords (deprecated): ``resume=``,
    ``progress=``, ``on_record=`` (the callback) and the executor's ``workers=``, ``backend=``,
    ``address=``, ``job_cpus=``, ``job_gpus=``, ``retries=`` (`surgeon.executor`'s arguments)."""
    names = ("workers", "backend", "address", "job_cpus", "job_gpus", "retries")
    engine = moved_keywords(old, names, function="run_search",
                            new="run=Run(executor=surgeon.parallel.executor(backend, workers=, address=, ...))")
    run = options_from(Run, run, old, function="run_search", keyword="run", renamed={"on_record": "callback"})
    run = run.only("run_search", "executor", "resume", "progress", "callback")
    if engine:
        if run.executor is not None:
            raise SurgeonError("run_search: give run.executor or workers=, backend=, ..., not both")
        checks.args(job_cpus=engine.get("job_cpus"), job_gpus=engine.get("job_gpus"), retries=engine.get("retries"))
        run = dataclasses.replace(run, executor=make_executor(engine.pop("backend", "local"), **engine))
    return run


def run_search(spec: str | os.PathLike | SearchSpec, out: str | os.PathLike, *, evaluator: Evaluator | None = None,
               run: Run | None = None, **old: Any) -> SearchResult:
    """Run the search `spec` describes into the folder `out` (docs/architecture.md, "Build-up search").

    Args:
        spec: a search spec file (TOML or Python) or a `SearchSpec`.
        out: a new (or empty) folder; with ``run.resume``, the folder of an interrupted search
            made by the same spec (another spec is refused).
        evaluator: ``evaluator(job) -> metrics`` (default `train_candidate`); a top-level function
            when the executor has more than one worker. Raise `surgeon.training.Diverged` to fail
            a candidate.
        run: a `surgeon.parallel.Run`: ``executor`` runs the (candidate, seed) trainings of a step
            (``surgeon.parallel.executor("local", workers=2)``: spawned local processes; ``"ray"``: one Ray
            task each; a job whose worker dies is run again up to the executor's ``retries``,
            then recorded as failed, the candidate rejected; default: this process); ``resume``;
            ``progress`` (training progress bars, one worker only); ``callback``, called with
            each candidate's record once its step is decided.
        old: 0.1's ``resume=``, ``progress=``, ``on_record=``, ``workers=``, ``backend=``,
            ``address=``, ``job_cpus=``, ``job_gpus=``, ``retries=`` (deprecated: give ``run=``).

    Returns:
        `SearchResult`; ``OUT/best.safetensors`` is the best candidate's best seed (when trained
        models exist) and ``OUT/buildup.png`` the build-up chart.
    """
    run = _search_run(run, old)
    ex, resume, progress, on_record = run.executor or make_executor("local"), run.resume, run.progress, run.callback
    workers = ex.workers
    r = spec if isinstance(spec, SearchSpec) else search_spec(spec)
    folder = Path(out)
    _check_folder(folder, r, resume)
    if workers > 1:
        check_spawn_safe(f"run_search(workers={workers})")
    undo = None  # a failed start removes the folder it made (never an earlier run's files)
    try:
        with _Runner(evaluator or train_candidate, ex) as runner:
            if isinstance(ex, RayExecutor):  # join the cluster first: its errors come before any file
                runner.start()
                folder = _shared_folder(folder, ex)
            search = Search(r)
            steps = r.candidates(search)
            first = next(steps, None)  # the generator's own checks run before anything is written
            if not resume:
                undo = undo_on_failure(folder, _search_started)
                _create_folder(folder, r, search.setup)
            records = _Engine(search, folder, runner, progress, on_record).run(steps, first)
    except BaseException:
        if undo is not None:
            undo()
        raise
    best = SearchResult(folder, records).best
    if best is not None and best["model"] is not None:
        with atomic_path(folder / "best.safetensors") as tmp:
            shutil.copyfile(folder / best["model"], tmp)
    return SearchResult(folder, records, _chart(records, folder / "buildup.png") if records else None,
                        search.input_size)
