"""Curvature against a dense Hessian (torch.func.hessian, float64) of tiny networks, the model left
untouched, and loss landscapes against plain evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from timm.layers import Attention
from torch import nn
from torch.func import functional_call, hessian
from torch.nn.attention import SDPBackend, sdpa_kernel

import surgeon
from surgeon.analysis import curvature as C
from surgeon.analysis import hessian as hess
from surgeon.analysis import landscapes as L
from surgeon.analysis import Lattice, Objective, Solver
from surgeon.core.errors import SurgeonDeprecationWarning, SurgeonError


class TinyAttention(nn.Module):
    """Pixels as tokens, one timm attention layer (fused kernel on by default), mean pool."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.attn = Attention(8, num_heads=2, qkv_bias=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.embed(x.flatten(2).transpose(1, 2))
        return self.head((t + self.attn(t)).mean(1))


class Res(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return x + torch.tanh(self.conv(x))


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))


def cnn_bn():
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.GELU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(4, 3))
    m.train()
    with torch.no_grad():
        for _ in range(3):  # non-trivial running statistics, which the analysis must use and keep
            m(torch.randn(8, 3, 2, 2) * 2 + 1)
    return m


def residual():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), Res(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


NETS = {"mlp": mlp, "cnn_bn": cnn_bn, "attention": TinyAttention}


def setup(name):
    torch.manual_seed(0)
    model = NETS[name]().double()
    x = torch.randn(16, 3, 2, 2, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    return model, (x, y)


def dense(model, batch, names=None, wd=0.0, l2="standard"):
    """The exact Hessian of the objective in eval mode, over the parameters `names` (default all)."""
    x, y = batch
    params = {k: p.detach() for k, p in model.named_parameters() if names is None or k in names}
    rest = {k: t.detach() for k, t in (*model.named_parameters(), *model.named_buffers()) if k not in params}
    sizes = [p.numel() for p in params.values()]

    def f(flat):
        p = {k: t.view(params[k].shape) for k, t, in zip(params, flat.split(sizes))}
        return hess.objective(functional_call(model, {**rest, **p}, (x,)), y, p, wd=wd, l2=l2)

    training = model.training
    model.eval()
    try:
        with sdpa_kernel([SDPBackend.MATH]):  # the fused CPU kernel has no forward-mode derivative
            return hessian(f)(torch.cat([p.reshape(-1) for p in params.values()])).numpy()
    finally:
        model.train(training)


def state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(m.training, getattr(m, "fused_attn", None), dict(m._forward_hooks)) for m in model.modules()])


def unchanged(before, model):
    sd, flags = state(model)
    return all(torch.equal(sd[k], v) for k, v in before[0].items()) and flags == before[1]


@pytest.mark.parametrize("mode", hess.MODES)
@pytest.mark.parametrize("name", NETS)
def test_hvp_matches_dense(name, mode):
    model, batch = setup(name)
    H = dense(model, batch)
    with C.analysis_mode(model):
        op = hess.HessianOperator(model, batch, hess.selected_parameters(model), mode=mode)
        v = torch.randn(op.n, dtype=torch.float64)
        np.testing.assert_allclose(op(v).numpy(), H @ v.numpy(), rtol=1e-6, atol=1e-10)
    assert op.n == H.shape[0]


@pytest.mark.parametrize("name", NETS)
def test_eigenvalues_match_dense(name):
    model, batch = setup(name)
    before = state(model)
    ev = np.linalg.eigvalsh(dense(model, batch))
    lm = surgeon.hessian_eigs(model, batch, k=5, which="LM")
    np.testing.assert_allclose(lm.eigenvalues, ev[np.argsort(-np.abs(ev))][:5], rtol=1e-5)
    assert lm.converged and lm.residuals.max() <= 1e-3
    la = surgeon.hessian_eigs(model, batch, k=3, which="LA")
    np.testing.assert_allclose(la.eigenvalues, np.sort(ev)[::-1][:3], rtol=1e-5)
    sa = surgeon.hessian_eigs(model, batch, k=3, which="SA")
    np.testing.assert_allclose(sa.eigenvalues, np.sort(ev)[:3], rtol=1e-5)
    assert sa.eigenvalues[0] < 0  # negative curvature is found, not only the top
    pw = surgeon.hessian_eigs(model, batch, k=3, solver=Solver(method="power", tol=1e-12, max_iter=3000))
    np.testing.assert_allclose(pw.eigenvalues, ev[np.argsort(-np.abs(ev))][:3], rtol=1e-4)
    assert unchanged(before, model)


@pytest.mark.parametrize("method", ["hutch++", "hutchinson"])
def test_trace_within_three_standard_errors(method):
    model, batch = setup("cnn_bn")
    exact = np.trace(dense(model, batch))
    t = surgeon.hessian_trace(model, batch, method=method, matvecs=90)
    assert t.stderr > 0 and abs(t.value - exact) <= 3 * t.stderr, (t, exact)
    assert t.hvps == 90  # Hutch++: a third each on S, Q and G


def test_hutchpp_is_exact_for_low_rank():
    model, batch = setup("mlp")
    with C.analysis_mode(model):
        op = hess.HessianOperator(model, batch, hess.selected_parameters(model))
        t = C.hutchpp(op, matvecs=3 * op.n)  # the sketch spans the whole space
    assert t.value == pytest.approx(np.trace(dense(model, batch)), rel=1e-8)


def test_slq_density_matches_the_exact_spectrum():
    model, batch = setup("mlp")
    ev = np.linalg.eigvalsh(dense(model, batch))
    d = surgeon.hessian_density(model, batch, vectors=40, solver=Solver(max_iter=len(ev)))
    edges = np.linspace(ev.min() - 1e-9, ev.max() + 1e-9, 9)
    exact = np.histogram(ev, edges)[0] / len(ev)
    slq = np.histogram(d.nodes.reshape(-1), edges, weights=d.weights.reshape(-1))[0] / len(d.nodes)
    assert np.abs(slq - exact).max() < 0.04, (slq, exact)
    assert d.density.sum() * (d.grid[1] - d.grid[0]) == pytest.approx(1, rel=1e-3)


def test_weight_decay_shifts_every_eigenvalue_by_lambda():
    model, batch = setup("attention")
    lam = 0.37
    for which in ("LA", "SA"):
        plain = surgeon.hessian_eigs(model, batch, k=3, which=which, solver=Solver(tol=1e-10)).eigenvalues
        shifted = surgeon.hessian_eigs(model, batch, k=3, which=which, objective=Objective(wd=lam), solver=Solver(tol=1e-10)).eigenvalues
        np.testing.assert_allclose(shifted, plain + lam, rtol=0, atol=1e-10)


#: each function that measures the objective, run small; returns the array it measured
MEASURES_OF_THE_OBJECTIVE = {
    "hessian_eigs": lambda m, b, **kw: surgeon.hessian_eigs(m, b, k=1, solver=Solver(tol=1e-8), **kw).eigenvalues,
    "hessian_trace": lambda m, b, **kw: np.array([surgeon.hessian_trace(m, b, matvecs=6, **kw).value]),
    "hessian_density": lambda m, b, **kw: surgeon.hessian_density(m, b, vectors=1, solver=Solver(max_iter=4), **kw).nodes,
    "hessian_spectrum": lambda m, b, **kw: surgeon.hessian_spectrum(m, [b], k=1, batches=1, solver=Solver(tol=1e-8), **kw).eigenvalues,
    "landscape": lambda m, b, **kw: surgeon.landscape(m, [b], lattice=Lattice(dims=1, grid=3), **kw).loss,
}


@pytest.mark.parametrize("name", MEASURES_OF_THE_OBJECTIVE)
def test_the_old_loss_keywords_build_the_objective_with_a_deprecation_warning(name):
    """``objective=Objective(...)`` reaches the computation; 0.1's ``wd=, l2=, label_smoothing=``
    give the same numbers with one SurgeonDeprecationWarning naming the new form; both at once,
    or an unknown keyword, are refused."""
    run = MEASURES_OF_THE_OBJECTIVE[name]
    model, batch = setup("mlp")
    new = run(model, batch, objective=Objective(wd=0.1, l2="paper", label_smoothing=0.2))
    assert not np.allclose(run(model, batch), new)  # the objective changed what was measured
    with pytest.warns(SurgeonDeprecationWarning, match=rf"{name}\(wd=, l2=, label_smoothing=\) is deprecated; "
                      r"pass objective=Objective\(wd=0.1, l2='paper', label_smoothing=0.2\)"):
        old = run(model, batch, wd=0.1, l2="paper", label_smoothing=0.2)
    np.testing.assert_allclose(old, new, rtol=1e-12, atol=0)  # the same computation in this process
    with pytest.raises(SurgeonError, match="give objective= or wd=, not both"):
        run(model, batch, objective=Objective(), wd=0.1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'weight_decay'"):
        run(model, batch, weight_decay=0.1)


@pytest.mark.parametrize("kwargs, message", [
    ({"wd": -0.1}, r"wd=-0.1 is out of range; give a number >= 0"),
    ({"label_smoothing": 1.0}, r"label_smoothing=1.0 is out of range; give a number in \[0, 1\)"),
    ({"l2": "l1"}, "unknown l2 'l1'; use 'standard'"),
])
def test_the_objective_checks_its_settings(kwargs, message):
    with pytest.raises(SurgeonError, match=message):
        Objective(**kwargs)


def test_paper_l2_hessian_matches_dense():
    model, batch = setup("mlp")
    H = dense(model, batch, wd=0.05, l2="paper")
    with C.analysis_mode(model):
        op = hess.HessianOperator(model, batch, hess.selected_parameters(model), wd=0.05, l2="paper")
        v = torch.randn(op.n, dtype=torch.float64)
        np.testing.assert_allclose(op(v).numpy(), H @ v.numpy(), rtol=1e-6, atol=1e-10)


def test_block_hessian_is_the_principal_submatrix():
    torch.manual_seed(0)
    model = residual().double()
    batch = (torch.randn(16, 3, 2, 2, dtype=torch.float64), torch.randint(0, 3, (16,)))
    names = list(hess.selected_parameters(model, "c1.b0"))
    assert names == ["2.conv.weight", "2.conv.bias"]
    sub = np.linalg.eigvalsh(dense(model, batch, names=set(names)))
    r = surgeon.hessian_eigs(model, batch, k=3, which="LA", blocks="c1.b0")
    np.testing.assert_allclose(r.eigenvalues, np.sort(sub)[::-1][:3], rtol=1e-5)


def test_state_restored_after_errors_and_fused_attention_back_on():
    model, (x, y) = setup("attention")
    model.train()
    assert model.attn.fused_attn is True
    before = state(model)
    surgeon.hessian_trace(model, (x, y), matvecs=6)
    assert unchanged(before, model)
    with pytest.raises(SurgeonError, match="the loss is nan"):
        surgeon.hessian_eigs(model, (x * float("nan"), y))
    assert unchanged(before, model)
    with pytest.raises(SurgeonError, match="with only 347 parameters"):
        surgeon.hessian_eigs(model, (x, y), k=10_000)
    assert unchanged(before, model)


def test_spectrum_over_batches_and_bad_batches():
    model, (x, y) = setup("cnn_bn")
    data = [(x[i:i + 8], y[i:i + 8]) for i in (0, 8)] * 2
    spec = surgeon.hessian_spectrum(model, data, k=2, batches=3)
    assert spec.eigenvalues.shape == (3, 2) and spec.residuals.max() <= 1e-3 and len(spec.losses) == 3
    single = surgeon.hessian_eigs(model, data[1], k=2).eigenvalues
    np.testing.assert_allclose(spec.eigenvalues[1], single, rtol=1e-10)
    with pytest.raises(SurgeonError, match="batch 1: the loss is nan"):
        surgeon.hessian_spectrum(model, [data[0], (x[:8] * float("nan"), y[:8])], k=2, batches=2)
    with pytest.raises(SurgeonError, match="no batches"):
        surgeon.hessian_spectrum(model, [], k=2)


def test_bad_input():
    model, (x, y) = setup("mlp")
    with pytest.raises(SurgeonError, match="no labels"):
        surgeon.hessian_eigs(model, (x, torch.full_like(y, -1)))
    with pytest.raises(SurgeonError, match="label 7 is out of range for a model with 3 classes"):
        surgeon.hessian_eigs(model, (x, torch.full_like(y, 7)))
    with pytest.raises(SurgeonError, match="unknown which"):
        surgeon.hessian_eigs(model, (x, y), which="XX")
    frozen = mlp().double().requires_grad_(False)
    with pytest.raises(SurgeonError, match="no trainable parameters"):
        surgeon.hessian_eigs(frozen, (x, y))
    res = residual().double()
    with pytest.raises(SurgeonError, match="unknown block 'c9'"):
        surgeon.hessian_eigs(res, (x, y), blocks="c9")
    res[2].requires_grad_(False)
    with pytest.raises(SurgeonError, match="blocks 'c1.b0' has no trainable parameters"):
        surgeon.hessian_eigs(res, (x, y), blocks="c1.b0")


# ----------------------------------------------------------------------------------------------
# Loss landscapes


def test_landscape_centre_is_the_plain_loss_and_shapes():
    model, (x, y) = setup("cnn_bn")
    before = state(model)
    data = [(x[:8], y[:8]), (x[8:], y[8:])]
    res = surgeon.landscape(model, data, lattice=Lattice(dims=2, grid=5), batches=2, objective=Objective(wd=0.05, l2="paper"))
    model.eval()
    with torch.no_grad():
        nll = [nn.functional.cross_entropy(model(a), b).item() for a, b in data]
    l2 = 0.05 * sum(p.norm().item() for p in model.parameters())
    model.train()
    assert unchanged(before, model)
    assert res.loss.shape == (5, 5) and np.isfinite(res.loss).all()
    assert res.loss[2, 2] == pytest.approx(np.mean(nll) + l2, rel=1e-10)
    assert res.stderr[2, 2] == pytest.approx(np.std(nll, ddof=1) / np.sqrt(2), rel=1e-8)
    assert res.loss.min() < res.loss.max()
    line = surgeon.landscape(model, data, lattice=Lattice(dims=1, grid=3), batches=1)
    assert line.loss.shape == (3,) and np.isnan(line.stderr).all()


@pytest.mark.parametrize("norm", L.NORMS)
def test_direction_norms_equal_the_weights(norm):
    model = TinyAttention()
    model.pos_embed = nn.Parameter(torch.randn(1, 4, 8))
    d = L.directions(model, norm=norm, seed=3)
    sd = model.state_dict()
    assert set(d) == {k for k, v in sd.items() if v.dim() >= 2 and "pos_embed" not in k}
    for k, t in d.items():
        dims = tuple(range(1, t.dim())) if norm == "filter" else (0,)
        torch.testing.assert_close(t.norm(dim=dims), sd[k].norm(dim=dims), rtol=1e-5, atol=1e-6)
    assert not torch.equal(d["embed.weight"], L.directions(model, norm=norm, seed=4)["embed.weight"])


def test_landscape_resumes_where_it_stopped(tmp_path, monkeypatch):
    model, (x, y) = setup("mlp")
    data = [(x, y)]
    whole = surgeon.landscape(model, data, lattice=Lattice(grid=4), batches=1)
    calls = {"n": 0}
    real = L.loss_of

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(L, "loss_of", flaky)
    path = tmp_path / "ls.json"
    with pytest.warns(UserWarning, match="6 of 16 points done"):
        part = surgeon.landscape(model, data, lattice=Lattice(grid=4), batches=1, save=path)
    assert part.interrupted and part.done == 6
    monkeypatch.setattr(L, "loss_of", real)
    saved = json.loads(path.read_text())
    assert sum(v is not None for row in saved["loss"] for v in row) == 6
    resumed = surgeon.landscape(model, data, lattice=Lattice(grid=4), batches=1, save=path)
    np.testing.assert_array_equal(resumed.loss, whole.loss)
    with pytest.raises(SurgeonError, match="other settings \\(grid 4 here 5\\)"):
        surgeon.landscape(model, data, lattice=Lattice(grid=5), batches=1, save=path)


def test_forward_over_reverse_falls_back_where_forward_ad_is_missing():
    class NoForwardAD(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.tanh(x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * (1 - torch.tanh(x) ** 2)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(12, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.b(NoForwardAD.apply(self.a(x.flatten(1))))

    torch.manual_seed(0)
    model = Net().double()
    batch = (torch.randn(8, 3, 2, 2, dtype=torch.float64), torch.randint(0, 3, (8,)))
    with C.analysis_mode(model):
        op = hess.HessianOperator(model, batch, hess.selected_parameters(model), mode="forward-over-reverse")
        v = torch.randn(op.n, dtype=torch.float64)
        with pytest.warns(UserWarning, match="using double backward"):
            hv = op(v)
        ref = hess.HessianOperator(model, batch, hess.selected_parameters(model))(v)
    assert op.mode == "double-backward" and op.calls == 1
    torch.testing.assert_close(hv, ref)


@pytest.mark.parametrize("name", NETS)
def test_residuals_from_kept_products_equal_explicit_ones(name, monkeypatch):
    """Lanczos reports ||H v - theta v|| / |theta| from the products it kept (H Q^T s = W^T s):
    the same numbers as one explicit product per Ritz vector, and the dense truth, k products fewer."""
    from surgeon.analysis import eigensolvers as eigsolve

    model, batch = setup(name)
    ritz_calls = []
    monkeypatch.setattr(eigsolve, "_ritz", lambda *a, _f=eigsolve._ritz: ritz_calls.append(len(a[0])) or _f(*a))
    kept = surgeon.hessian_eigs(model, batch, k=3, solver=Solver(vectors=True))
    assert kept.converged and ritz_calls and len(set(ritz_calls)) == len(ritz_calls), ritz_calls
    calls_kept = len(ritz_calls)  # the check that passed is the result: no second pass over basis and products
    monkeypatch.setattr(eigsolve, "KEEP_PRODUCTS_BYTES", 0)
    explicit = surgeon.hessian_eigs(model, batch, k=3, solver=Solver(vectors=True))
    np.testing.assert_array_equal(kept.eigenvalues, explicit.eigenvalues)
    np.testing.assert_allclose(kept.residuals, explicit.residuals, rtol=1e-3, atol=1e-9)
    assert kept.hvps == explicit.hvps - 3
    assert len(ritz_calls) == calls_kept + 1  # without kept products: the Ritz vectors once, at the end
    H = dense(model, batch)
    v = kept.eigenvectors.double().numpy()
    truth = np.linalg.norm(v @ H - kept.eigenvalues[:, None] * v, axis=1) / np.abs(kept.eigenvalues)
    np.testing.assert_allclose(kept.residuals, truth, rtol=1e-3, atol=1e-9)


@pytest.mark.parametrize("name", NETS)
def test_landscape_points_equal_the_direct_formula(name):
    """Every point is the objective at (theta + a d1) + b d2, computed here directly from the
    directions (bit for bit, both in this process): reused buffers, the row's theta + a d1 kept
    across a row, one reparametrisation for all the batches change nothing."""
    from torch.func import functional_call

    from surgeon.analysis.landscapes import directions
    from surgeon.model.runtime import analysis_mode

    model, (x, y) = setup(name)
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]
    res = surgeon.landscape(model, batches, lattice=Lattice(grid=3, span=0.5), batches=2)
    d1, d2 = directions(model, seed=0), directions(model, seed=1)
    base = dict(model.state_dict())
    with analysis_mode(model), torch.no_grad():  # eval mode, math attention: what the landscape runs
        for i, a in enumerate(res.coords):
            for j, b in enumerate(res.coords):
                moved = {**base, **{k: (base[k] + float(a) * d1[k]) + float(b) * d2[k] for k in d1}}
                values = [float(torch.nn.functional.cross_entropy(functional_call(model, moved, (xb,)), yb))
                          for xb, yb in batches]
                assert res.loss[i, j] == np.mean(values)


@pytest.mark.parametrize("rows", [None, 5])
def test_lanczos_dot_sums_in_float64_over_chunks(rows):
    """`_dot` (every sum over the n entries in Lanczos) equals the float64 product of the same
    float32 numbers to within float32 chunk sums: |err| <= 2^-24 * sqrt(chunk) * sum |a_i w_i|
    per row, on a length that is not a multiple of the chunk (the remainder counts)."""
    from surgeon.analysis import eigensolvers as eigsolve

    g = torch.Generator().manual_seed(0)
    n = 3 * eigsolve.DOT_CHUNK + 1234
    a = torch.randn((n,) if rows is None else (rows, n), generator=g) + 0.5
    w = torch.randn(n, generator=g) + 0.5
    got = eigsolve._dot(a, w)
    ref = a.double() @ w.double()
    bound = 2.0 ** -24 * eigsolve.DOT_CHUNK ** 0.5 * (a.double().abs() @ w.double().abs())
    assert got.dtype == torch.float64 and got.shape == ref.shape
    assert torch.all((got - ref).abs() <= bound)
    assert torch.all((eigsolve._dot(a[..., :-1234], w[:-1234]) - ref).abs() > bound)  # the remainder is summed


def test_landscape_evaluates_only_its_points_and_times_them(tmp_path):
    """A landscape's forwards are its points' (grid^2 x batches) and the one-sample label check:
    no extra evaluation pass to report `eval_seconds`, which is the median of the points' own
    forwards (so at most the seconds a point takes), and 0 when every point was read back."""
    model, (x, y) = setup("cnn_bn")
    batches = [(x[:8], y[:8]), (x[8:], y[8:])]
    seen = []
    handle = model.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        res = surgeon.landscape(model, batches, lattice=Lattice(grid=3, span=0.5), batches=2, save=tmp_path / "l.json")
        assert sorted(seen) == sorted([1] + [8, len(x) - 8] * 9)
        assert 0 < res.eval_seconds <= res.seconds_per_point
        seen.clear()
        again = surgeon.landscape(model, batches, lattice=Lattice(grid=3, span=0.5), batches=2, save=tmp_path / "l.json")
    finally:
        handle.remove()
    assert seen == [1] and again.eval_seconds == 0.0 and np.array_equal(again.loss, res.loss)
