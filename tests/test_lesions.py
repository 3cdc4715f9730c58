"""The lesion study against independent truths: each row equals the model with the block taken out
by hand (nn.Identity for a conv block, a zero residual branch for a transformer half), evaluated with
a plain loop; the model passed in never changes."""

from __future__ import annotations

import copy
import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import surgeon
from surgeon.core.errors import SurgeonError
from surgeon.viz import plot_lesions, plot_reliability, save_figure

SIZE = (3, 32, 32)


def _batches(model: nn.Module, n: int = 2) -> list:
    return list(itertools.islice(surgeon.data.loader("digits", model, batch_size=24, input_size=SIZE), n))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    m = surgeon.load_model("resnet18", num_classes=10)
    for mod in m.modules():  # timm zero-inits each block's last BN gamma: make every block matter
        if isinstance(mod, nn.BatchNorm2d):
            nn.init.normal_(mod.weight, 1.0, 0.5)
            nn.init.normal_(mod.bias, 0.0, 0.2)
    return m


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(2)
    return surgeon.load_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4, depth=4)


class _Zeros(nn.Module):
    """A residual branch that contributes nothing: x + 0."""

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return torch.zeros_like(x)


@torch.no_grad()
def _naive(model: nn.Module, data: list) -> tuple[float, float]:
    """Accuracy and mean per-sample cross-entropy with a plain loop."""
    model.eval()
    logits = torch.cat([model(x) for x, _ in data]).double()
    y = torch.cat([y for _, y in data])
    return (logits.argmax(1) == y).double().mean().item(), F.cross_entropy(logits, y).item()


def _snapshot(m: nn.Module) -> tuple[dict, dict, dict]:
    return ({k: v.clone() for k, v in m.state_dict().items()}, {n: mod.training for n, mod in m.named_modules()},
            {n: (dict(mod._forward_hooks), dict(mod._forward_pre_hooks)) for n, mod in m.named_modules()})


def _assert_unchanged(m: nn.Module, snap: tuple[dict, dict, dict]) -> None:
    sd, modes, hooks = _snapshot(m)
    assert sd.keys() == snap[0].keys() and all(torch.equal(sd[k], snap[0][k]) for k in sd)
    assert modes == snap[1]
    assert hooks == snap[2]


def test_resnet_rows_equal_hand_lesions(resnet):
    data = _batches(resnet)
    res = surgeon.lesion_study(resnet, data, "*")
    acc, nll = _naive(resnet, data)
    assert res.intact.metrics["acc"] == pytest.approx(acc, abs=1e-12)
    assert res.intact.metrics["nll"] == pytest.approx(nll, rel=1e-6)
    assert res.intact.samples == 48
    # the shape-preserving blocks are lesioned, in graph order; the rest are listed with the reason
    assert [r.address for r in res.rows] == ["c1.b0", "c1.b1", "c2.b1", "c3.b1", "c4.b1"]
    assert set(res.skipped) == {"stem", "c2.b0", "c3.b0", "c4.b0", "head"}
    assert "stem and head" in res.skipped["stem"] and "changes the shape" in res.skipped["c3.b0"]
    changed = 0
    for r in res.rows:
        by_hand = copy.deepcopy(resnet)
        stage, index = r.path.split(".")
        getattr(by_hand, stage)[int(index)] = nn.Identity()
        acc_l, nll_l = _naive(by_hand, data)
        assert r.metrics["acc"] == pytest.approx(acc_l, abs=1e-12), r.address
        assert r.metrics["nll"] == pytest.approx(nll_l, rel=1e-6), r.address
        assert r.delta["nll"] == pytest.approx(nll_l - nll, rel=1e-5, abs=1e-9)
        assert r.delta["acc"] == pytest.approx(acc_l - acc, abs=1e-12)
        assert (r.kind, r.stage) == ("conv", stage.replace("layer", "c"))
        changed += abs(r.delta["nll"]) > 1e-3
    assert changed >= 3  # the check is not vacuous: lesions move the NLL
    assert res["c4.b-1"] is res.rows[-1] and res["layer3.1"].address == "c3.b1"
    with pytest.raises(SurgeonError, match="no lesion row: cannot remove c2.b0"):
        res["c2.b0"]


def test_vit_halves_equal_zeroed_branches(vit):
    data = _batches(vit)
    res = surgeon.lesion_study(vit, data, "c1.b2,c1.b5")  # attention of block 1, MLP of block 2
    assert [(r.address, r.kind, r.path) for r in res.rows] == [("c1.b2", "msa", "blocks.1.attn"),
                                                               ("c1.b5", "mlp", "blocks.2.mlp")]
    _, nll = _naive(vit, data)
    for r in res.rows:
        by_hand = copy.deepcopy(vit)
        block, part = r.path.rsplit(".", 1)
        setattr(by_hand.get_submodule(block), part, _Zeros())
        acc_l, nll_l = _naive(by_hand, data)
        assert r.metrics["acc"] == pytest.approx(acc_l, abs=1e-12)
        assert r.metrics["nll"] == pytest.approx(nll_l, rel=1e-6)
        assert abs(nll_l - nll) > 1e-4  # removing the half changes the output
    assert not res.skipped


def test_graph_given_and_json(resnet):
    data = _batches(resnet, 1)
    g = surgeon.graph(resnet, input_size=SIZE)
    a = surgeon.lesion_study(g, data, "c1")
    b = surgeon.lesion_study(resnet, data, "c1")
    assert a.graph is g and [r.metrics for r in a.rows] == [r.metrics for r in b.rows]
    d = json.loads(json.dumps(a.to_dict()))
    assert d["input_size"] == list(SIZE) and [r["address"] for r in d["rows"]] == ["c1.b0", "c1.b1"]
    assert d["rows"][0]["delta"]["acc"] == a.rows[0].delta["acc"] and d["interrupted"] is False
    assert d["intact"]["metrics"]["nll"] == a.intact.metrics["nll"]


class _Flaky:
    """Re-iterable batches whose `fail_on`-th pass raises `error` after its first batch."""

    def __init__(self, batches: list, fail_on: int, error: BaseException):
        self.batches, self.fail_on, self.error, self.passes = batches, fail_on, error, 0

    def __iter__(self):
        self.passes += 1
        for i, b in enumerate(self.batches):
            if self.passes == self.fail_on and i == 1:
                raise self.error
            yield b


def test_model_unchanged_also_on_failure(resnet):
    data = _batches(resnet)
    resnet.train()
    resnet.layer2.eval()
    handle = resnet.layer3.register_forward_hook(lambda *a: None)
    pre = resnet.register_forward_pre_hook(lambda *a: None)
    try:
        snap = _snapshot(resnet)
        surgeon.lesion_study(resnet, data, "c1,c3.b1")
        _assert_unchanged(resnet, snap)
        with pytest.raises(RuntimeError, match="disk gone"):
            surgeon.lesion_study(resnet, _Flaky(data, 3, RuntimeError("disk gone")), "c1,c3.b1")
        _assert_unchanged(resnet, snap)
    finally:
        handle.remove()
        pre.remove()
        resnet.eval()


def test_ctrl_c_keeps_finished_rows(resnet):
    data = _batches(resnet)
    # passes: 1 intact, 2 c1.b0, 3 c1.b1 (interrupted half-way), c2.b1 never
    with pytest.warns(UserWarning, match="covers the first 1 blocks"):
        res = surgeon.lesion_study(resnet, _Flaky(data, 3, KeyboardInterrupt()), "c1,c2.b1", input_size=SIZE)
    assert res.interrupted and [r.address for r in res.rows] == ["c1.b0"]
    full = surgeon.lesion_study(resnet, data, "c1.b0")
    assert res.rows[0].metrics == full.rows[0].metrics
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning):  # nothing finished: the intact pass cut
        surgeon.lesion_study(resnet, _Flaky(data, 1, KeyboardInterrupt()), "c1", input_size=SIZE)


@pytest.mark.parametrize("blocks, kwargs, fragment", [
    ("c9", {}, "unknown block 'c9'"),
    ("stem,head", {}, "no block of the selection 'stem,head' can be lesioned"),
    ("c1", {"batches": 0}, "batches=0"),
])
def test_bad_input(resnet, blocks, kwargs, fragment):
    with pytest.raises(SurgeonError, match=fragment):
        surgeon.lesion_study(resnet, _batches(resnet, 1), blocks, **kwargs)


def test_one_shot_iterator_refused(resnet):
    with pytest.raises(SurgeonError, match="re-iterable"):
        surgeon.lesion_study(resnet, iter(_batches(resnet, 1)), "c1")


def test_figures_are_images(resnet, vit, tmp_path):
    r1 = surgeon.lesion_study(resnet, _batches(resnet, 1), "*")
    r2 = surgeon.lesion_study(vit, _batches(vit, 1), "*")
    path = save_figure(plot_lesions([r1, r2]), tmp_path / "lesions.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 300
    fig = plot_lesions(r1)
    # one panel per (quantity, model); points are the drops: 100 (acc_intact - acc_lesioned)
    top = fig.axes[0]
    line = next(ln for ln in top.get_lines() if len(ln.get_xdata()) == len(r1.rows))
    assert np.allclose(line.get_ydata(), [-100 * r.delta["acc"] for r in r1.rows])
    assert np.allclose(line.get_xdata(), [r.depth for r in r1.rows])
    path = save_figure(plot_reliability([r1.intact, r2.intact], ["resnet", "vit"]), tmp_path / "rel.svg")
    assert path.read_text().lstrip().startswith("<?xml")
    fig = plot_reliability(r1.intact)
    bars = [p.get_height() for p in fig.axes[0].patches[:10]]
    acc = r1.intact.reliability["accuracy"]
    assert np.allclose(bars, np.where(np.isnan(acc), 0, acc))
    hist = [p.get_height() for p in fig.axes[1].patches]
    assert math.isclose(sum(hist), 1.0)
    with pytest.raises(SurgeonError, match="2 labels for 1"):
        plot_reliability(r1.intact, ["a", "b"])
