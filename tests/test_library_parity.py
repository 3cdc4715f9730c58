"""Where surgeon keeps its own code beside a library that does the same (issue 19, item 6), or
switched to the library: each result checked against an independent truth (a hand count, a closed
form, a direct computation) and, where both exist, against the library itself."""

from __future__ import annotations

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from surgeon.blockgraph.record import _record


# --- FLOPs: our dispatch mode over torch's registry == FlopCounterMode == a hand count ------------

class _ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 2))

    def forward(self, x):
        return self.head(self.act(self.conv(x)))


def test_flops_of_a_small_conv_net_equal_a_hand_count():
    per_module = _record(_ConvNet().eval(), torch.zeros(1, 3, 8, 8)).flops.per_module
    conv = 2 * 4 * 3 * 3 * 3 * 8 * 8  # 2 FLOPs per MAC: out channels x in channels x 3x3 x 8x8 positions
    linear = 2 * (4 * 8 * 8) * 2    # elementwise ops (bias, ReLU) count 0, as in torch.utils.flop_counter
    assert per_module["conv"] == conv and per_module["head.1"] == linear
    assert per_module.get("act", 0) == 0 and per_module[""] == conv + linear


def _library_counts(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """FlopCounterMode's per-module totals, its names ("VisionTransformer.blocks.0") turned into paths."""
    def flash_cpu(q, k, v, *args, out_shape=None, **kwargs):  # the CPU kernel torch's registry lacks
        return sdpa_flop_count(q, k, v)

    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: flash_cpu})
    with torch.no_grad(), counter:
        model(x)
    root = type(model).__name__
    return {("" if name == root else name[len(root) + 1:]): sum(ops.values())
            for name, ops in counter.get_flop_counts().items() if name != "Global"}


def test_flops_per_module_equal_flop_counter_mode():
    """Also fused attention (F.scaled_dot_product_attention) and modules called inside others."""
    for model in (timm.create_model("resnet18", num_classes=3),
                  timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2)):
        model.eval()
        x = torch.randn(1, 3, 32, 32)
        ours = {p: n for p, n in _record(model, x).flops.per_module.items() if n}
        assert ours == {p: n for p, n in _library_counts(model, x).items() if n}
    tokens, dim = 1 + (32 // 8) ** 2, 192  # attention: qkv 2·L·E·3E, QKᵀ and AV 2·2·L·L·E, proj 2·L·E·E
    assert ours["blocks.1.attn"] == 2 * tokens * dim * 3 * dim + 4 * tokens * tokens * dim + 2 * tokens * dim * dim


# --- LR schedule and parameter groups: ours beside timm.scheduler / timm.optim --------------------

def test_cosine_after_warmup_equals_timm_scheduler_and_warmup_the_closed_form():
    from timm.scheduler import CosineLRScheduler

    from surgeon.training.recipe import Recipe, lr_at

    r, spe = Recipe(lr=0.3, min_lr=1e-3, warmup_epochs=2, epochs=5), 7
    warm, total = r.warmup_epochs * spe, r.epochs * spe
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=r.lr)
    timm_lr = CosineLRScheduler(opt, t_initial=total, lr_min=r.min_lr, warmup_t=warm, warmup_prefix=True,
                                t_in_epochs=False)
    for step in range(r.total_epochs * spe + 3):  # 3 steps past the end stay at min_lr
        if step < warm:
            assert lr_at(r, step, spe) == r.lr * (step + 1) / warm, step
        else:
            assert abs(lr_at(r, step, spe) - timm_lr._get_lr(step)[0]) <= 1e-15, step
    assert abs(lr_at(r, r.total_epochs * spe + 2, spe) - r.min_lr) <= 1e-15


def test_param_groups_split_like_timm():
    from timm.optim import param_groups_weight_decay

    from surgeon.training.recipe import Recipe
    from surgeon.training.setup import _param_groups

    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1)
    model.patch_embed.proj.weight.requires_grad_(False)  # frozen parameters are in no group
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    theirs = {g["weight_decay"]: ids(g["params"]) for g in param_groups_weight_decay(model, 0.05)}
    decayed, plain = _param_groups(model, Recipe(weight_decay=0.05, decay_all=False))
    assert (decayed["weight_decay"], plain["weight_decay"]) == (0.05, 0.0)
    assert ids(decayed["params"]) == theirs[0.05] and ids(plain["params"]) == theirs[0.0]
    everything = {id(p) for p in model.parameters() if p.requires_grad}
    (one,) = _param_groups(model, Recipe(weight_decay=0.05, decay_all=True))
    assert ids(one["params"]) == everything and one["weight_decay"] == 0.05


# --- FX tracer: torchvision's LeafModuleAwareTracer given timm's notrace lists --------------------

def test_tracer_is_torchvisions_with_timms_leaves():
    from timm.layers.pool2d_same import MaxPool2dSame  # registered with timm.layers.register_notrace_module
    from torchvision.models.feature_extraction import LeafModuleAwareTracer

    from surgeon.blockgraph.fx import symbolic_trace, tracer_class

    model = nn.Sequential(nn.Conv2d(3, 4, 3), MaxPool2dSame(2), nn.Sequential(nn.ReLU(), nn.Flatten()))
    assert issubclass(tracer_class(), LeafModuleAwareTracer)
    calls = lambda g: [n.target for n in g.nodes if n.op == "call_module"]  # noqa: E731
    assert calls(symbolic_trace(model)) == ["0", "1", "2.0", "2.1"]  # timm's leaf is not traced into
    assert calls(symbolic_trace(model, leaf=lambda m, q: q == "2")) == ["0", "1", "2"]  # the extra predicate


# --- Latency: torch.utils.benchmark.Timer, one timed forward per repeat ----------------------------

class _Sleeper(nn.Module):
    """A forward of known duration that records how it was called."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.calls, self.threads = seconds, 0, set()
        self.fc = nn.Linear(1, 1)

    def forward(self, x):
        import time

        self.calls += 1
        self.threads.add(torch.get_num_threads())
        time.sleep(self.seconds)
        return self.fc(x.flatten(1)[:, :1])


def test_latency_times_each_forward_with_the_process_threads():
    from surgeon.evaluation.latency import latency

    model, threads = _Sleeper(0.02), torch.get_num_threads()
    torch.set_num_threads(2)  # Timer's own default is 1 thread: the process's count must be kept
    try:
        res = latency(model, batch_size=2, input_size=(1, 2, 2), repeats=3, warmup=1)
    finally:
        torch.set_num_threads(threads)
    assert model.threads == {2}
    assert model.calls == 2 * (1 + 3 * 3)  # per batch size: warmup, then 2 untimed + 1 timed per repeat
    for row in res.rows:  # time.sleep lasts at least its argument; a loaded machine adds, never removes
        assert 20 <= row.ms_mean < 20 + 200 and row.ms_std >= 0


# --- CLI ranges: typer's min / max of every numeric option come from checks.ARGS -------------------

def test_every_numeric_option_shows_the_tables_range():
    from surgeon.cli.main import command
    from surgeon.cli.ranges import range_of
    from surgeon.core.checks import INT_MAX

    group, seen = command(), 0
    for name, cmd in group.commands.items():
        for p in cmd.params:
            kind = {"int": int, "float": float}.get(p.bare_type() if hasattr(p, "bare_type") else "")
            if p.param_type_name != "option" or kind is None:
                continue
            rule = range_of(name, p.name)
            assert rule is not None and rule.kind is kind, f"{name} {p.opts[0]}"
            if rule.min_open or rule.max_open or rule.odd:  # typer cannot say these: no range shown
                assert (p.min, p.max) == (None, None), f"{name} {p.opts[0]}"
            else:
                top = INT_MAX if kind is int and rule.max is None else rule.max
                assert (p.min, p.max) == (rule.min, top), f"{name} {p.opts[0]}"
            seen += 1
    assert seen >= 40


# --- Stratified subset: ours (per-class rounding) beside scikit-learn's train_test_split ----------

def test_balanced_subset_counts_are_the_closed_form_and_within_one_of_sklearn():
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from surgeon.data.datasets import balanced_subset

    y = load_digits().target
    for fraction in (0.06, 0.25, 0.9):
        keep = balanced_subset(y, fraction, seed=3)
        assert keep == sorted(set(keep)) and keep == balanced_subset(y, fraction, seed=3)
        ours = np.bincount(y[keep], minlength=10)
        assert ours.tolist() == [max(1, round(fraction * n)) for n in np.bincount(y)]
        theirs, _ = train_test_split(np.arange(len(y)), train_size=fraction, stratify=y, random_state=3)
        assert np.abs(ours - np.bincount(y[theirs], minlength=10)).max() <= 1  # the stated difference
    assert balanced_subset(y, 0.25, seed=3) != balanced_subset(y, 0.25, seed=4)
    assert balanced_subset([0, 1, 1, 1], 0.1) in ([0, 1], [0, 2], [0, 3])  # a 1-item class keeps its item


# --- Gaussian blur: ours (the reference's borders) beside torchvision's ---------------------------

def test_gaussian_blur_is_a_direct_conv_and_torchvisions_inside_the_border():
    import torch.nn.functional as F
    from torchvision.transforms.v2.functional import gaussian_blur as tv_blur

    from surgeon.data.corruptions import corrupt

    x = torch.rand(2, 3, 20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigma, r = 1.0, 4  # CIFAR preset, severity 5; taps to radius int(4 sigma + 0.5)
    got = corrupt(x, "gaussian_blur", 5, preset="cifar")
    i = torch.arange(-r, r + 1, dtype=torch.float64)
    k2 = torch.exp(-(i[:, None] ** 2 + i[None] ** 2) / (2 * sigma**2))  # one 2-D kernel, not two passes
    direct = F.conv2d(F.pad(x, (r,) * 4, mode="replicate"), (k2 / k2.sum()).expand(3, 1, -1, -1), groups=3)
    assert (got - direct).abs().max() <= 1e-12
    theirs = tv_blur(x, kernel_size=[2 * r + 1] * 2, sigma=[sigma] * 2)
    inner = (..., slice(r, -r), slice(r, -r))
    assert (got[inner] - theirs[inner]).abs().max() <= 1e-12  # the stated tolerance: same taps
    assert (got - theirs).abs().max() > 1e-3  # borders: torchvision reflects, the reference replicates
