"""Streaming probes against naive references on captured activations, streaming exactness, the
model left untouched, and the layouts (NCHW, NHWC, tokens with prefix tokens, NesT windows)."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
from torch import nn

import surgeon
from surgeon.core.errors import SurgeonError


def paper_fourier(a: np.ndarray) -> np.ndarray:
    """The paper's definition on (B, C, H, W) maps, in numpy: mean over batch and channels of
    log(|FFT2| + 1e-6), centred, read on the diagonal from DC, minus the DC value."""
    h, w = a.shape[-2:]
    f = np.log(np.abs(np.fft.fft2(a.astype(np.float64))) + 1e-6)
    f = np.roll(f, (h // 2, w // 2), axis=(2, 3)).mean(axis=(0, 1))
    k = math.ceil(min(h, w) / 2)
    d = np.array([f[h // 2 + i, w // 2 + i] for i in range(k)])
    return d - d[0]


def capture(model: nn.Module, g: surgeon.blockgraph.BlockGraph, xs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every block's tap tensor over all batches, concatenated (the notebooks' way)."""
    seen: dict[str, list[torch.Tensor]] = {}
    handles = []
    for b in g.blocks:
        mod = model.get_submodule(b.tap[0])

        def keep(value, b=b):
            t = value if isinstance(value, torch.Tensor) else value[0]
            seen.setdefault(b.address, []).append(t.detach().clone())

        if b.tap[1] == "out":
            handles.append(mod.register_forward_hook(lambda m, a, o, keep=keep: keep(o)))
        else:
            handles.append(mod.register_forward_pre_hook(lambda m, a, keep=keep: keep(a)))
    with torch.no_grad():
        for x in xs:
            model(x)
    for h in handles:
        h.remove()
    return {k: torch.cat(v) for k, v in seen.items()}


def as_nchw(t: torch.Tensor, b: surgeon.blockgraph.Block) -> torch.Tensor:
    """A captured block output as (B, C, H, W), written independently of the probes' views."""
    h, w = b.grid
    if b.layout == "NHWC":
        return t.permute(0, 3, 1, 2)
    if b.layout == "NLC":
        return t[:, b.prefix_tokens:].transpose(1, 2).reshape(t.shape[0], -1, h, w)
    if b.layout == "BTNC":  # windows of s x s tokens, row-major, on a (H/s) x (W/s) grid of windows
        s = math.isqrt(t.shape[2])
        grid = t.reshape(t.shape[0], h // s, w // s, s, s, t.shape[-1])
        return grid.permute(0, 5, 1, 3, 2, 4).reshape(t.shape[0], -1, h, w)
    return t


ZOO = [
    ("resnet18", {}, (3, 64, 64)),
    ("resnet18", {}, (3, 64, 96)),  # non-square maps: the matmul path
    ("vit_tiny_patch16_224", {"img_size": 64, "reg_tokens": 4}, (3, 64, 64)),  # class + 4 register tokens
    ("vit_tiny_patch16_224", {"img_size": (64, 96)}, (3, 64, 96)),  # a 4 x 6 token grid
    ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 4}, (3, 64, 64)),  # NHWC maps
    ("nest_tiny", {"img_size": 128}, (3, 128, 128)),  # tokens in windows
]


@pytest.mark.parametrize("name, kwargs, size", ZOO, ids=[f"{n}-{s[1]}x{s[2]}" for n, _, s in ZOO])
def test_probes_equal_naive_reference(name, kwargs, size):
    model = timm.create_model(name, **kwargs).eval()
    xs = [torch.randn(2, *size), torch.randn(3, *size)]
    res = surgeon.probe(model, xs, ("fourier", "variance", "stats"))
    acts = capture(model, res.graph, xs)
    spatial = [b for b in res.blocks if "fourier" in res.values[b.address]]
    assert len(spatial) >= 5
    layouts = {b.layout for b in spatial}
    for b in spatial:
        a = as_nchw(acts[b.address], b)
        got = res[b.address]
        np.testing.assert_allclose(got["fourier"].dlogamp, paper_fourier(a.numpy()), atol=2e-5, err_msg=b.address)
        want_var = torch.var(a.double(), dim=(2, 3)).mean().item()
        assert got["variance"] == pytest.approx(want_var, rel=1e-5), b.address
        flat = a.double().flatten()
        st = got["stats"]
        assert st.mean == pytest.approx(flat.mean().item(), rel=1e-4, abs=1e-6)
        assert st.std == pytest.approx(flat.std().item(), rel=1e-4)
        assert st.absmax == pytest.approx(flat.abs().max().item(), rel=1e-6)
        assert st.count == flat.numel() and st.nonfinite == 0
    if "reg_tokens" in kwargs:
        assert all(b.prefix_tokens == 5 and b.grid == (4, 4) for b in spatial)
    expected = {"resnet18": {"NCHW"}, "vit_tiny_patch16_224": {"NLC"}, "swin_tiny_patch4_window7_224": {"NHWC", "NLC"},
                "nest_tiny": {"NCHW", "BTNC"}}[name]
    assert layouts == expected


def test_streaming_equals_all_at_once():
    model = timm.create_model("resnet18").eval()
    xs = [torch.randn(n, 3, 64, 64) for n in (1, 4, 2)]
    probes = (surgeon.analysis.reductions.Fourier(full=True), "variance", "stats")
    streamed = surgeon.probe(model, xs, probes)
    whole = surgeon.probe(model, torch.cat(xs), probes)
    assert streamed.batches == 3 and whole.batches == 1 and streamed.samples == whole.samples == 7
    for b in streamed.blocks:
        s, w = streamed[b.address], whole[b.address]
        if "fourier" in s:
            np.testing.assert_allclose(s["fourier"].logamp, w["fourier"].logamp, rtol=1e-6)
            np.testing.assert_allclose(s["fourier"].map, w["fourier"].map, rtol=1e-6)
            assert s["variance"] == pytest.approx(w["variance"], rel=1e-6)
        for k in ("mean", "std", "absmax", "zeros"):
            assert getattr(s["stats"], k) == pytest.approx(getattr(w["stats"], k), rel=1e-5, abs=1e-7)


def test_full_map_diagonal_and_radial_agree_with_the_diagonal():
    model = timm.create_model("resnet18").eval()
    res = surgeon.probe(model, torch.randn(2, 3, 64, 64), surgeon.analysis.reductions.Fourier(full=True), "c*")
    for b in res.blocks:
        r = res[b.address]["fourier"]
        h, w = r.map.shape
        diag = np.array([r.map[h // 2 + k, w // 2 + k] for k in range(len(r.logamp))])
        np.testing.assert_allclose(diag, r.logamp, rtol=1e-5, atol=1e-6)
        assert r.radial[0] == pytest.approx(r.logamp[0]) and np.isfinite(r.radial).all()


def _state(model: nn.Module):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()])


def _same(before, model: nn.Module) -> bool:
    sd, flags = _state(model)
    return all(torch.equal(sd[k], v) for k, v in before[0].items()) and flags == before[1]


def test_model_untouched_after_success_error_and_interrupt():
    model = timm.create_model("resnet18")
    model.train()
    model.layer2.eval()  # a mixed state must come back as it was
    model.fc.register_forward_hook(lambda m, a, o: None)
    before = _state(model)
    surgeon.probe(model, [torch.randn(2, 3, 64, 64)])
    assert _same(before, model)

    def failing():
        yield torch.randn(2, 3, 64, 64)
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        surgeon.probe(model, failing())
    assert _same(before, model)

    first = torch.randn(2, 3, 64, 64)

    def interrupted():
        yield first
        raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="first 1 batches"):
        res = surgeon.probe(model, interrupted(), "variance")
    assert res.interrupted and res.batches == 1
    assert _same(before, model)
    once = surgeon.probe(model, first, "variance")
    assert res["c1.b0"]["variance"] == once["c1.b0"]["variance"]


def test_a_batch_cut_short_is_rolled_back():
    model = timm.create_model("resnet18").eval()
    x = torch.randn(2, 3, 64, 64)
    boom = {"armed": False}

    def explode(m, a, o):
        if boom["armed"]:
            raise RuntimeError("mid-forward")

    model.layer3.register_forward_hook(explode)
    with surgeon.analysis.probes.ProbeSession(model, "variance", input_size=(3, 64, 64)) as s:
        s.step(x)
        boom["armed"] = True
        with pytest.raises(RuntimeError):
            s.step(torch.randn(2, 3, 64, 64) * 100)  # layer1 and layer2 see it before the failure
    res = s.results()
    boom["armed"] = False
    clean = surgeon.probe(model, x, "variance")
    assert res.batches == 1
    for b in res.blocks:
        assert res[b.address]["variance"] == pytest.approx(clean[b.address]["variance"], rel=1e-12)


def test_nan_is_counted_not_fatal():
    class Spiky(nn.Module):
        def forward(self, x):
            x = x.clone()
            x[:, 0, 0, 0] = float("nan")
            x[:, 1, 0, 0] = float("inf")
            return x

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), Spiky(), nn.Conv2d(4, 4, 3, padding=1)).eval()
    x = torch.randn(3, 3, 16, 16)
    res = surgeon.probe(model, x, "stats")
    b = next(b for b in res.blocks if b.path.startswith("2") or "2" in b.members)
    st = res[b.address]["stats"]
    ref = torch.relu(model[0](x)).detach()
    ref[:, :2, 0, 0] = float("nan")
    finite = ref[torch.isfinite(ref)].double()
    assert st.nonfinite == 6 and st.count == ref.numel()
    assert st.mean == pytest.approx(finite.mean().item(), rel=1e-5)
    assert st.std == pytest.approx(finite.std().item(), rel=1e-5)
    assert st.zeros == pytest.approx((ref == 0).sum().item() / ref.numel())


@pytest.mark.skipif(bool(os.environ.get("ATEN_CPU_CAPABILITY")),
                    reason="torch.compile ignores a forced ATEN_CPU_CAPABILITY (seen: at 'default' its C++ code does "
                           "not build, at 'avx2' on an AVX-512 CPU the compiled kernel segfaults); eager probes run")
def test_compiled_model_gives_the_same_results():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 3)).eval()
    xs = [torch.randn(2, 3, 16, 16) for _ in range(2)]
    eager = surgeon.probe(model, xs)
    compiled = surgeon.probe(model, xs, compile=True)
    assert compiled.batches == 2
    for b in eager.blocks:
        np.testing.assert_allclose(compiled[b.address]["fourier"].dlogamp, eager[b.address]["fourier"].dlogamp,
                                   atol=1e-5)
        assert compiled[b.address]["variance"] == pytest.approx(eager[b.address]["variance"], rel=1e-5)
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.numeric
def test_trained_model_gives_finite_nontrivial_spectra():
    from torchvision import transforms as T

    torch.manual_seed(0)
    tf = T.Compose([T.Resize(16), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    train = surgeon.data.loader("digits", train=True, batch_size=64, sampling=surgeon.data.Sampling(shuffle=True), transform=tf)
    test = surgeon.data.loader("digits", batch_size=360, transform=tf)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(6):  # 6 epochs x 23 steps
        for x, y in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    x, y = next(iter(test))
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    # Trained, i.e. far above chance (10%). Not a bound on how well: the trajectory depends on the CPU's
    # kernels (test accuracy 0.91 with ATEN_CPU_CAPABILITY=default or avx2, 0.84 or 0.78 with avx512).
    assert acc > 0.5
    res = surgeon.probe(model, test, ("fourier", "variance"))
    spatial = [b for b in res.blocks if "fourier" in res.values[b.address]]
    assert len(spatial) >= 3
    for b in spatial:
        r = res[b.address]["fourier"]
        assert np.isfinite(r.dlogamp).all() and np.abs(r.dlogamp[1:]).max() > 0.05
        assert 0 < res[b.address]["variance"] < 1e4


def test_selection_and_bad_input():
    model = timm.create_model("resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    res = surgeon.probe(model, x, "variance", "c2.b-1,c4")
    assert [b.address for b in res.blocks] == ["c2.b1", "c4.b0", "c4.b1"]
    assert res["layer2.1"] is res["c2.b-1"]
    with pytest.raises(SurgeonError, match="unknown block 'c9'; valid: stem, c1.b0..b1"):
        surgeon.probe(model, x, "variance", "c9")
    with pytest.raises(SurgeonError, match="unknown probe 'fourrier'; did you mean 'fourier'"):
        surgeon.probe(model, x, "fourrier")
    with pytest.raises(SurgeonError, match="no selected block has a feature map"):
        surgeon.probe(model, x, "fourier", "head")
    with pytest.raises(SurgeonError, match="no images"):
        surgeon.probe(model, [])
    with pytest.raises(SurgeonError, match="was not probed"):
        res["c1.b0"]


NNSIGHT_CHECK = """
import numpy as np, timm, torch, surgeon
from nnsight import NNsight
torch.manual_seed(0)
for name, size in [("resnet18", 64), ("vit_tiny_patch16_224", 64)]:
    m = timm.create_model(name, **({"img_size": 64} if "vit" in name else {})).eval()
    xs = [torch.randn(2, 3, size, size) for _ in range(2)]
    ref = surgeon.probe(m, xs, ("fourier", "variance", "stats"))
    got = surgeon.probe(NNsight(m), xs, ("fourier", "variance", "stats"))
    assert got.batches == 2 and [b.address for b in got.blocks] == [b.address for b in ref.blocks]
    for b in ref.blocks:
        r, g = ref[b.address], got[b.address]
        assert set(r) == set(g)
        if "fourier" in r:
            np.testing.assert_allclose(g["fourier"].dlogamp, r["fourier"].dlogamp, atol=1e-6)
            assert abs(g["variance"] - r["variance"]) <= 1e-6 * abs(r["variance"])
        assert g["stats"] == r["stats"]
    print(name, len(ref.blocks))
"""


@pytest.mark.skipif(importlib.util.find_spec("nnsight") is None, reason="needs the nnsight extra")
def test_nnsight_trace_gives_the_hook_results():
    # a separate process: nnsight patches every module it wraps and imports transformers
    r = subprocess.run([sys.executable, "-c", NNSIGHT_CHECK], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["resnet18", "10", "vit_tiny_patch16_224", "26"]


def test_hooks_never_sync_with_the_host(monkeypatch):
    """No .item() / float() / bool() (aten._local_scalar_dense), no data-dependent shapes
    (nonzero, masked_select) and no .cpu() / .numpy() / .tolist() while a batch runs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    syncing = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
               torch.ops.aten.masked_select.default}

    class Watch(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in syncing:
                self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    model = timm.create_model("vit_tiny_patch16_224", img_size=64, reg_tokens=4).eval()
    x = torch.randn(2, 3, 64, 64)
    with Watch() as plain, torch.no_grad():
        model(x)
    with surgeon.analysis.probes.ProbeSession(model, (surgeon.analysis.reductions.Fourier(full=True), "variance", "stats"), input_size=(3, 64, 64)) as s:
        calls = []
        for name in ("cpu", "numpy", "tolist", "item"):
            def spy(self, *a, _n=name, _f=getattr(torch.Tensor, name), **k):
                calls.append(_n)
                return _f(self, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, spy)
        with Watch() as probed:
            s.step(x)
        monkeypatch.undo()
    assert probed.seen == plain.seen and calls == []
    assert s.results()["c1.b0"]["stats"].count > 0


def test_low_precision_activations_are_reduced_in_float32():
    model = timm.create_model("resnet18").eval().to(torch.bfloat16)
    xs = [torch.randn(2, 3, 64, 64, dtype=torch.bfloat16)]
    res = surgeon.probe(model, xs, ("fourier", "variance"), "c*")
    acts = capture(model, res.graph, xs)
    for b in res.blocks:
        a = acts[b.address].double()  # the bf16 values, exactly
        np.testing.assert_allclose(res[b.address]["fourier"].dlogamp, paper_fourier(a.numpy()), atol=1e-4)
        assert res[b.address]["variance"] == pytest.approx(torch.var(a, dim=(2, 3)).mean().item(), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# What the Fourier probe measures: both conventions against a closed form, true frequencies,
# blocks it cannot measure listed with the reason (issue #18, items 5 and 6)


class _Plant(nn.Module):
    """Adds a fixed map to its input: after a zero 1x1 conv the stem's output is exactly `m`."""

    def __init__(self, m: torch.Tensor):
        super().__init__()
        self.register_buffer("m", m)

    def forward(self, x):
        return x + self.m


def _planted(m: torch.Tensor) -> nn.Module:
    conv = nn.Conv2d(3, 2, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(conv, _Plant(m), nn.Conv2d(2, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2, 3)).eval()


# x(h, w) = sum_j a_j cos(2 pi j (h + w) / N) on an 8 x 8 map: |FFT2| on the diagonal is a_0 N^2 at
# k = 0, a_j N^2 / 2 at k = j for 0 < j < N/2, a_4 N^2 at the Nyquist entry k = N/2 = 4 (cos(pi (h+w))
# is (-1)^(h+w)); closed form, no FFT involved.
_AMPS = (1.0, 2.0, 1.5, 3.0, 0.5)


def _closed_form_logamp(n: int) -> np.ndarray:
    half = n // 2
    return np.log(np.array([a * n * n * (1 if j in (0, half) else 0.5) for j, a in enumerate(_AMPS)]) + 1e-6)


@pytest.mark.parametrize("exact", [False, True], ids=["notebook", "exact"])
def test_fourier_conventions_on_a_plane_wave_sum(exact):
    n = 8
    s = (torch.arange(n)[:, None] + torch.arange(n)[None, :]).double()
    m = sum(a * torch.cos(2 * math.pi * j * s / n) for j, a in enumerate(_AMPS)).float()
    res = surgeon.probe(_planted(m), torch.randn(2, 3, n, n), surgeon.analysis.reductions.Fourier(exact=exact), "stem")
    r = res["stem"]["fourier"]
    truth = _closed_form_logamp(n)
    k = 5 if exact else 4  # exact: entries 0..N/2 (Nyquist included); notebook: 0..N/2-1
    np.testing.assert_allclose(r.logamp, truth[:k], atol=1e-4)
    np.testing.assert_allclose(r.dlogamp, truth[:k] - truth[0], atol=1e-4)
    np.testing.assert_allclose(r.omega, 2 * np.arange(k) / n)  # true frequency 2 pi k / N, times pi
    np.testing.assert_allclose(r.freq, r.omega if exact else np.linspace(0, 1, k))
    assert r.exact is exact and r.high_omega == (1.0 if exact else 0.75)
    assert r.high == pytest.approx(truth[k - 1] - truth[0], abs=1e-4)
    rows = [row for row in res.tidy() if row["quantity"] == "dlogamp"]
    assert [row["omega"] for row in rows] == pytest.approx(list(2 * np.arange(k) / n))


@pytest.mark.parametrize("exact", [False, True], ids=["notebook", "exact"])
def test_true_frequencies_at_every_map_size(exact):
    """The resnet18 of the reproducer at 32 px: 8x8, 4x4, 2x2 and 1x1 maps. The notebook's last
    entry is at 3pi/4, pi/2 and 0; the exact one at pi; the 1x1 maps are listed, with the reason."""
    model = timm.create_model("resnet18", num_classes=10).eval()
    res = surgeon.probe(model, torch.randn(2, 3, 32, 32), surgeon.analysis.reductions.Fourier(exact=exact))
    last = {8: 0.75, 4: 0.5, 2: 0.0}
    for b in res.blocks:
        r = res[b.address]["fourier"]
        n = b.grid[0]
        np.testing.assert_allclose(r.omega, 2 * np.arange(len(r.freq)) / n, err_msg=b.address)
        assert r.high_omega == (1.0 if exact else last[n]), b.address
    unmeasured = {(u.block.address, u.reason) for u in res.unmeasured}
    assert unmeasured == {("c4.b0", "1x1 map: no frequency above 0"), ("c4.b1", "1x1 map: no frequency above 0"),
                          ("head", "no spatial map: output (1, 10)")}
    d = res.to_dict()
    assert {(u["address"], u["reason"]) for u in d["unmeasured"]} == unmeasured
    assert {(r["block"], r["reason"]) for r in res.tidy() if r["quantity"] == "not measured"} == unmeasured
    assert "c4.b0, c4.b1 (1x1 map: no frequency above 0)" in res.unmeasured_note()
    with pytest.raises(SurgeonError, match=r"c4.b0 was not measured \(fourier: 1x1 map"):
        res["c4.b0"]


def test_omega_on_non_square_maps():
    """A 4x6 map: entry k is at (2k/4, 2k/6) pi; exact keeps k = 0..2 (min side / 2)."""
    model = timm.create_model("resnet18", num_classes=10).eval()
    for exact, k in ((False, 2), (True, 3)):
        r = surgeon.probe(model, torch.randn(1, 3, 32, 48), surgeon.analysis.reductions.Fourier(exact=exact), "c2.b-1")["c2.b-1"]["fourier"]
        np.testing.assert_allclose(r.omega, 2 * np.arange(k) / 4)
        np.testing.assert_allclose(r.omega_w, 2 * np.arange(k) / 6)


def test_cli_probe_lists_unmeasured_blocks_and_true_frequencies(tmp_path):
    from tests.conftest import invoke

    js = tmp_path / "f.json"
    r = invoke("probe", "fourier", "resnet18", "--num-classes", "10", "--input-size", "3,32,32", "--data", "digits",
               "--batches", "1", "--batch-size", "4", "--json", js)
    assert r.exit_code == 0, r.output
    assert "1x1 map: no frequency above 0" in r.output and "\u03c0/2" in r.output
    assert "fourier not measured on c4.b0, c4.b1" in r.output
    import json

    d = json.loads(js.read_text())[0]
    assert [u["address"] for u in d["unmeasured"] if u["probe"] == "fourier"][:2] == ["c4.b0", "c4.b1"]
    c2 = next(b for b in d["blocks"] if b["address"] == "c2.b1")["fourier"]
    assert c2["omega"] == [0.0, 0.5] and c2["exact"] is False
    js.unlink()
    r = invoke("probe", "fourier", "resnet18", "--num-classes", "10", "--input-size", "3,32,32", "--data", "digits",
               "--batches", "1", "--batch-size", "4", "--exact", "--json", js)
    assert r.exit_code == 0, r.output
    c2 = next(b for b in json.loads(js.read_text())[0]["blocks"] if b["address"] == "c2.b1")["fourier"]
    assert c2["omega"] == c2["freq"] == [0.0, 0.5, 1.0] and c2["exact"] is True
    r = invoke("probe", "variance", "resnet18", "--exact")
    assert isinstance(r.exception, SurgeonError) and "--exact applies to the fourier probe only" in str(r.exception)
