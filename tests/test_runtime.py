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


NORMS = [  # (layer, a good input shape, a bad one), the bad one refused by the layer's own check
    (nn.BatchNorm2d(8), (2, 8, 5, 5), (2, 4, 5, 5)),
    (nn.BatchNorm1d(6), (3, 6), (3, 5)),
    (nn.LayerNorm(8), (2, 3, 8), (2, 3, 7)),
    (nn.LayerNorm((4, 4)), (2, 3, 4, 4), (2, 3, 4, 5)),
    (nn.GroupNorm(3, 9), (2, 9, 4, 4), (2, 8, 4, 4)),
]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("layer,good,bad", NORMS, ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None)
def test_on_meta_norms_take_their_shape_and_refuse_what_the_real_layer_refuses(layer, good, bad, training):
    """`on_meta` answers a normalisation by shape (no decomposition): the same output shape, dtype
    and strides as the real layer on real tensors, and every input the real layer refuses
    (wrong channels, wrong trailing shape, one value per channel in training) still raises."""
    from surgeon.model.runtime import on_meta

    layer.train(training)
    real = layer(torch.randn(good))
    with on_meta(layer):
        out = layer(torch.empty(good, device="meta"))
    assert out.device.type == "meta" and out.shape == real.shape and out.dtype == real.dtype
    assert out.stride() == real.stride()
    for shape in [bad] + ([(1, good[1])] if training and isinstance(layer, nn.BatchNorm1d) else []):
        with pytest.raises((RuntimeError, ValueError)):
            layer(torch.randn(shape))
        with pytest.raises((RuntimeError, ValueError)), on_meta(layer):
            layer(torch.empty(shape, device="meta"))
    assert all(p.device.type == "cpu" for p in layer.parameters())
