"""The one fan-out (`surgeon.parallel.executors.fan_out`): shared objects put once, every task run
with the executor's threads per task, torch's threads restored after each task."""

from __future__ import annotations

import torch

from surgeon.parallel.executors import LocalExecutor, fan_out


def _task(scale, offset, x):
    return scale * x + offset, torch.get_num_threads()


def test_fan_out_runs_every_task_with_its_threads_and_restores_them():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with LocalExecutor(workers=1) as ex:
            outs = dict(fan_out(ex, _task, (3, 1), [(x,) for x in range(5)]))
        assert sorted(outs) == list(range(5))
        assert [outs[i].value[0] for i in range(5)] == [3 * x + 1 for x in range(5)]
        assert {outs[i].value[1] for i in range(5)} == {ex.threads_per_task} == {1}
        assert torch.get_num_threads() == 2  # restored after every task
    finally:
        torch.set_num_threads(before)


def test_threads_per_task_follow_the_cpus_a_job_reserves():
    ex = LocalExecutor(workers=1)
    ex.job_cpus = 3  # what a Ray executor records
    assert ex.threads_per_task == 3


class _Ref:
    def __init__(self, obj):
        self.obj = obj


class _RayLike(LocalExecutor):
    """Shares objects by reference and resolves only top-level arguments, as Ray does."""

    def put(self, obj):
        return _Ref(obj)

    def map(self, fn, items):
        resolved = [tuple(a.obj if isinstance(a, _Ref) else a for a in item) for item in items]
        yield from super().map(fn, resolved)


def test_fan_out_hands_shared_objects_as_top_level_arguments():
    """Ray resolves an object reference only where it is a task's own argument, not inside a tuple."""
    with _RayLike(workers=1) as ex:
        outs = dict(fan_out(ex, _task, (3, 1), [(x,) for x in range(3)]))
    assert [outs[i].value[0] for i in range(3)] == [1, 4, 7]
