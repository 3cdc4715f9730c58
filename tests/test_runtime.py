"""The runtime contract (`surgeon.runtime`): modes restored, one device rule, Ctrl-C keeps whole
batches and rolls a cut batch back, a batch limit draws no extra batch."""

import pytest
import torch
from torch import nn

import surgeon
from surgeon.model.runtime import BatchLoop, display_name, model_device, restored_modes


def test_restored_modes_puts_every_flag_back_also_on_error():
    m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.BatchNorm1d(2))
    m.train()
    m[1].eval()  # a mixed state must come back exactly
    before = [x.training for x in m.modules()]
    with pytest.raises(RuntimeError), restored_modes(m, "eval"):
        assert not any(x.training for x in m.modules())
        raise RuntimeError("boom")
    assert [x.training for x in m.modules()] == before


def test_one_device_rule_and_display_name():
    assert model_device(nn.Identity()) == torch.device("cpu")
    buffers_only = nn.Module()
    buffers_only.register_buffer("b", torch.zeros(1, device="meta"))
    assert model_device(buffers_only) == torch.device("meta")  # no parameter: the first buffer
    assert display_name(nn.Linear(1, 1)) == "Linear"
    assert display_name(surgeon.load_model("test_resnet")) == "test_resnet"


def test_batch_loop_keeps_whole_batches_and_rolls_back_the_cut_one():
    total = [0]

    def step(x):
        total[0] += x
        if x == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the third batch

    loop = BatchLoop("sums cover")
    with pytest.warns(UserWarning, match="interrupted: sums cover the first 2 batches"):
        loop.run([1, 2, 3, 4], step, snapshot=lambda: total[0], restore=lambda s: total.__setitem__(0, s))
    assert loop.interrupted and loop.done == 2 and total[0] == 3  # batch 3 rolled back
    with pytest.raises(KeyboardInterrupt):  # nothing done yet: Ctrl-C propagates
        BatchLoop().run([3], step)


def test_batch_loop_limit_draws_no_extra_batch():
    drawn = []

    def data():
        for i in range(10):
            drawn.append(i)
            yield i

    loop = BatchLoop(limit=3).run(data(), lambda x: None)
    assert loop.done == 3 and drawn == [0, 1, 2]
    skipped = BatchLoop(limit=2).run([None, 1, None, 2, 3], lambda x: x is not None)  # False: not counted
    assert skipped.done == 2
