"""Where surgeon's sweeps run: one interface, two engines.

    with surgeon.executor("ray", retries=2, job_gpus=1) as ex:     # or "local" (the default)
        for i, out in ex.map(fn, items):                             # as the tasks finish
            out.value if out.ok else out.failed                      # a value, or the reason it failed

``local`` runs the tasks in this process (``workers=1``) or in a pool of spawned local processes
(no dependency beyond torch). ``ray`` runs every item as one Ray core task (the optional extra:
``pip install 'surgeon[ray]'``) on the cluster at ``address`` (default: ``RAY_ADDRESS`` when set,
else a local cluster that surgeon starts and stops). Ray is imported only when that engine is
entered: the core never needs it.

Faults, for both engines: a task whose worker process dies (killed for memory, a lost node) is
run again up to ``retries`` times (Ray's ``max_retries``), then recorded as failed with the reason
(``Outcome.failed``), and the sweep goes on. An exception raised by the task's own Python code is
never retried (``retry_exceptions=False``): it propagates to the caller, who decides (a search
turns `surgeon.training.Diverged` into a failed candidate inside the task already). Leaving the
``with`` block on an error or Ctrl-C cancels the tasks still pending or running.

Each task's numerics do not depend on the engine or on how many tasks run at once: analyses fan
out through `fan_out`, which runs every task with the executor's threads per task and restores
them after.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from surgeon.core.errors import SurgeonError, first_line

__all__ = ["BACKENDS", "Executor", "LocalExecutor", "Outcome", "RayExecutor", "executor", "fan_out"]

BACKENDS = ("local", "ray")
_RAY_HINT = "install the extra: pip install 'surgeon[ray]' (or pip install 'ray>=2.9')"


@dataclass
class Outcome:
    """One task's result: its ``value``, or ``failed`` (the reason) when its worker died on every
    attempt; ``attempts`` counts the runs."""

    value: Any = None
    failed: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.failed is None


class Executor:
    """The interface: a context manager whose `map` yields ``(index, Outcome)`` as tasks finish
    and whose `put` shares a large object (a model) with every task once."""

    backend: str = ""
    workers: int = 1  # tasks that run at once (a hint for progress display)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        pass

    def put(self, obj: Any) -> Any:
        """A handle for `obj` that `map`'s function receives as the object itself."""
        return obj

    def map(self, fn: Callable[..., Any], items: Iterable[tuple[Any, ...]]) -> Iterator[tuple[int, Outcome]]:
        raise NotImplementedError

    @property
    def in_process(self) -> bool:
        """Whether the tasks run in this very process (progress bars and closures are fine)."""
        return False

    @property
    def threads_per_task(self) -> int:
        """torch threads each task runs with: the CPUs a job reserves (Ray's ``job_cpus``), else 1."""
        return max(1, int(getattr(self, "job_cpus", 1) or 1))


def fan_out(ex: Executor, fn: Callable[..., Any], shared: tuple[Any, ...],
            tasks: Iterable[tuple[Any, ...]]) -> Iterator[tuple[int, Outcome]]:
    """The one fan-out of an analysis: ``fn(*shared, *task)`` for every task on `ex` (entered by
    the caller), the `shared` objects (a model, frozen batches) put once, each task run with
    ``ex.threads_per_task`` torch threads, restored after it, so a task computes what it would
    in this process whatever the engine. Yields ``(index, Outcome)`` as tasks finish."""
    refs = tuple(ex.put(x) for x in shared)  # top-level arguments: Ray resolves only those
    yield from ex.map(_with_threads, [(fn, ex.threads_per_task, *refs, *task) for task in tasks])


def _with_threads(fn: Callable[..., Any], threads: int, *args: Any) -> Any:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# local


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    return fn(*args)


class LocalExecutor(Executor):
    """This process (``workers=1``) or ``workers`` spawned processes, started on the first task
    and shut down on exit. At most ``workers`` tasks are in flight, so when a worker process
    dies the tasks that were running with it are known: each gets another attempt (up to
    ``retries``) in a fresh pool, else is recorded as failed."""

    backend = "local"

    def __init__(self, workers: int = 1, retries: int = 0) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise SurgeonError(f"workers = {workers!r}; give 1 or more local processes")
        self.workers, self.retries = workers, _retries(retries)
        if self.retries and workers == 1:
            raise SurgeonError(f"retries={retries} re-runs a task whose worker process died, but backend=local with "
                               "one worker runs the tasks in this process (no worker to die); pass retries=0 or backend=ray "
                               "(a search can also run workers=2 or more)")
        self.pool: cf.ProcessPoolExecutor | None = None

    @property
    def in_process(self) -> bool:
        return self.workers == 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=kind is None, cancel_futures=True)
            self.pool = None

    def _pool(self) -> cf.ProcessPoolExecutor:
        if self.pool is None:
            self.pool = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self.pool

    def map(self, fn: Callable[..., Any], items: Iterable[tuple[Any, ...]]) -> Iterator[tuple[int, Outcome]]:
        todo = list(enumerate(items))
        if self.workers == 1:
            for i, args in todo:
                yield i, Outcome(fn(*args))
            return
        todo.reverse()  # popped from the end: submitted in order
        attempts: dict[int, int] = {}
        running: dict[cf.Future, tuple[int, tuple[Any, ...]]] = {}
        while todo or running:
            while todo and len(running) < self.workers:
                i, args = todo.pop()
                attempts[i] = attempts.get(i, 0) + 1
                running[self._pool().submit(_call, fn, args)] = (i, args)
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            broken = False
            for future in done:
                i, args = running.pop(future)
                try:
                    value = future.result()
                except cf.process.BrokenProcessPool as exc:
                    broken = True
                    if attempts[i] <= self.retries:
                        todo.append((i, args))
                    else:
                        yield i, Outcome(failed=f"its worker process died ({first_line(exc, 80)})", attempts=attempts[i])
                    continue
                yield i, Outcome(value, attempts=attempts[i])
            if broken:  # the pool is unusable: the other running tasks died with it
                for future, (i, args) in list(running.items()):
                    running.pop(future)
                    if attempts[i] <= self.retries:
                        todo.append((i, args))
                    else:
                        yield i, Outcome(failed="its worker process died", attempts=attempts[i])
                self.pool.shutdown(wait=False, cancel_futures=True)  # type: ignore[union-attr]
                self.pool = None


def _retries(retries: int) -> int:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise SurgeonError(f"retries = {retries!r}; give 0 or more attempts after a worker dies")
    return retries


# ----------------------------------------------------------------------------------------------
# ray


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SurgeonError(f"backend=ray needs Ray, which is not installed; {_RAY_HINT}") from None
    return ray


class RayExecutor(Executor):
    """Ray core tasks: ``job_cpus`` / ``job_gpus`` per task, ``retries`` after a worker dies
    (``max_retries``; exceptions of the task's code are not retried). Joins the cluster at
    ``address`` (or ``RAY_ADDRESS``), else starts a local one (``local_cpus`` CPUs, default all)
    and stops it on exit; an already initialised Ray (``ray.init`` by the caller) is used as is."""

    backend = "ray"

    def __init__(self, address: str | None = None, *, job_cpus: float | None = None, job_gpus: float = 0,
                 retries: int = 0, local_cpus: int | None = None) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        if job_cpus is not None and not (job_cpus > 0):
            raise SurgeonError(f"job_cpus={job_cpus}: give a number of CPUs > 0 per task")
        if job_gpus < 0 or (job_gpus > 1 and job_gpus != int(job_gpus)):
            raise SurgeonError(f"job_gpus={job_gpus}: give 0 or more GPUs per task (a fraction up to 1, "
                               "else a whole number)")
        self.job_cpus, self.job_gpus, self.retries = job_cpus or 1, job_gpus, _retries(retries)
        self.local_cpus = local_cpus
        self.ray: Any = None
        self.started = False
        self.pending: list[Any] = []

    def __enter__(self) -> Self:
        ray = self.ray = _import_ray()
        if not ray.is_initialized():
            if self.address:
                _check_reachable(self.address)
            try:
                if self.address:
                    ray.init(address=self.address, logging_level="ERROR", log_to_driver=True)
                else:
                    ray.init(num_cpus=self.local_cpus, logging_level="ERROR", include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"address={self.address}" if self.address else "a local Ray cluster"
                raise SurgeonError(f"cannot reach {where} ({first_line(exc, 120)}); start one with `ray start --head` "
                                   "and pass its address, or leave address= out for a local one") from None
            self.started = True
        try:
            self._check_resources()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1) // self.job_cpus))
        return self

    def nodes(self) -> list[dict[str, Any]]:
        """The alive nodes of the cluster, with their resources."""
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def _check_resources(self) -> None:
        """Refuse, before any task, per-task resources that no node has."""
        nodes = self.nodes()
        have = ", ".join(f"{n.get('NodeManagerAddress', '?')}: {n['Resources'].get('CPU', 0):g} CPU, "
                         f"{n['Resources'].get('GPU', 0):g} GPU" for n in nodes)
        for key, want, flag in (("GPU", self.job_gpus, "job_gpus="), ("CPU", self.job_cpus, "job_cpus=")):
            if want and not any(n["Resources"].get(key, 0) >= want for n in nodes):
                raise SurgeonError(f"{flag}{want:g}: no node of the Ray cluster has {want:g} {key}s ({have}); "
                                   f"ask for at most the largest node's")

    @property
    def multi_node(self) -> bool:
        return len(self.nodes()) > 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.ray is None:
            return
        for ref in self.pending:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - a task that finished meanwhile
                pass
        self.pending = []
        if self.started:
            self.ray.shutdown()
            self.started = False

    def put(self, obj: Any) -> Any:
        return self.ray.put(obj)

    def map(self, fn: Callable[..., Any], items: Iterable[tuple[Any, ...]]) -> Iterator[tuple[int, Outcome]]:
        ray = self.ray
        task = ray.remote(fn).options(num_cpus=self.job_cpus, num_gpus=self.job_gpus, max_retries=self.retries,
                                      retry_exceptions=False)
        index = {}
        for i, args in enumerate(items):
            index[task.remote(*args)] = i
        self.pending = list(index)
        while self.pending:
            done, self.pending = ray.wait(self.pending, num_returns=1)
            for ref in done:
                yield index[ref], self._outcome(ref)

    def _outcome(self, ref: Any) -> Outcome:
        ex = self.ray.exceptions
        system = tuple(getattr(ex, n) for n in ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError",
                                                "ObjectLostError", "TaskUnschedulableError", "ActorDiedError")
                       if hasattr(ex, n))
        try:
            return Outcome(self.ray.get(ref), attempts=1)
        except ex.RayTaskError as err:  # the task's own exception: re-raised as itself
            cause = err.as_instanceof_cause()
            if isinstance(cause, system):
                return Outcome(failed=_reason(cause, self.retries), attempts=self.retries + 1)
            raise cause from None
        except system as err:
            return Outcome(failed=_reason(err, self.retries), attempts=self.retries + 1)


def _check_reachable(address: str) -> None:
    """Refuse at once (5 s) a ``host:port`` nobody listens on; Ray itself would retry for a minute."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" and other forms: Ray decides
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise SurgeonError(f"cannot reach address={address} ({exc.strerror or exc}); start a cluster with "
                           "`ray start --head` and pass its address, or leave address= out for a local one") from None


def _reason(err: BaseException, retries: int) -> str:
    tries = f" (after {retries} retr{'y' if retries == 1 else 'ies'})" if retries else ""
    text = str(err).strip().splitlines()
    detail = next((line.strip() for line in text if line.strip()), "")[:120]
    return f"its worker died{tries}: {type(err).__name__}" + (f": {detail}" if detail else "")


# ----------------------------------------------------------------------------------------------


def executor(backend: str | Executor = "local", *, workers: int = 1, address: str | None = None,
             job_cpus: float | None = None, job_gpus: float = 0, retries: int = 0) -> Executor:
    """The engine `backend` names (an `Executor` is returned as is): ``local`` (``workers``
    processes) or ``ray`` (the cluster at ``address``, per-task ``job_cpus`` / ``job_gpus``).
    Options that only one engine uses are refused for the other."""
    if isinstance(backend, Executor):
        return backend
    if backend == "local":
        if address is not None or job_gpus or job_cpus is not None:
            raise SurgeonError("address=, job_cpus= and job_gpus= are Ray options; add backend=ray")
        return LocalExecutor(workers, retries)
    if backend == "ray":
        if workers != 1:
            raise SurgeonError("workers= is for backend=local; with backend=ray give job_cpus= / job_gpus= "
                               "per task (the cluster's size decides how many run at once)")
        return RayExecutor(address, job_cpus=job_cpus, job_gpus=job_gpus, retries=retries)
    raise SurgeonError(f"unknown backend {backend!r}; use {' or '.join(BACKENDS)}")
