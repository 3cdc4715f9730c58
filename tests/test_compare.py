"""surgeon compare: the claim rules on constructed measures whose verdict is known, the comparison
on tiny random-init models (same batches as the analyses alone, model untouched, resume without
redoing finished measures, also after SIGKILL), the report files and the command."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import surgeon
from surgeon.comparison import claims as C
from surgeon.core.errors import SurgeonError
from surgeon.parallel import Run

from conftest import invoke

cmpmod = importlib.import_module("surgeon.comparison.compare")  # the module (surgeon.compare is the function)

SIZE = (3, 32, 32)
TINY = cmpmod.Settings(batch_size=16, probe_batches=1, hessian_k=1, hessian_batches=1, hessian_tol=1e-2,
                       hessian_max_iter=4, landscape_grid=3, landscape_batches=1, frequencies=(0.1, 0.9),
                       noise_batches=1, lesion_batches=1, input_size=SIZE)


# ----------------------------------------------------------------------------------------------
# Constructed comparisons


def _block(address, kind, stage, grid=(4, 4), down=False):
    return {"address": address, "kind": kind, "stage": stage, "depth": 0.0, "downsamples": down,
            "grid": list(grid) if grid else None, "params": 1, "flops": 1}


def _cnn(label="cnn"):
    """stem, c1 (two convs), c2 (a downsampling conv then two convs), head."""
    blocks = [_block("stem", "stem", None, down=True), _block("c1.b0", "conv", "c1"), _block("c1.b1", "conv", "c1"),
              _block("c2.b0", "conv", "c2", (2, 2), True), _block("c2.b1", "conv", "c2", (2, 2)),
              _block("c2.b2", "conv", "c2", (2, 2)), _block("head", "head", None, None)]
    return {"label": label, "spec": label, "input_size": [3, 8, 8], "num_classes": 10, "params": 1, "blocks": blocks}


def _vit(label="vit"):
    blocks = [_block("stem", "stem", None, down=True)]
    blocks += [_block(f"c1.b{i}", "msa" if i % 2 == 0 else "mlp", "c1") for i in range(4)]
    blocks.append(_block("head", "head", None, None))
    return {"label": label, "spec": label, "input_size": [3, 8, 8], "num_classes": 10, "params": 1, "blocks": blocks}


def _alternet(label="alt"):
    """stem, c1 (two convs, an MSA at its end), c2 (a downsampling conv, a conv, an MSA at its end), head."""
    blocks = [_block("stem", "stem", None, down=True), _block("c1.b0", "conv", "c1"), _block("c1.b1", "conv", "c1"),
              _block("c1.b2", "msa", "c1"), _block("c2.b0", "conv", "c2", (2, 2), True),
              _block("c2.b1", "conv", "c2", (2, 2)), _block("c2.b2", "msa", "c2", (2, 2)),
              _block("head", "head", None, None)]
    return {"label": label, "spec": label, "input_size": [3, 8, 8], "num_classes": 10, "params": 1, "blocks": blocks}


def _probe(model, values, key):
    """A probe's JSON with `values[address]` (Fourier: the Delta log amplitude at pi)."""
    out = []
    for b in model["blocks"]:
        if b["address"] in values:
            v = values[b["address"]]
            out.append({**b, key: {"dlogamp": [0.0, v]} if key == "fourier" else v})
    return {"blocks": out}


def _comparison(models, results, measures=cmpmod.MEASURES):
    return cmpmod.ComparisonResult({"measures": list(measures), "data": "x", "seed": 0}, models, results)


def _series(model, first, step_by_kind, reset=1.0):
    """Values along the blocks: each block adds step_by_kind[kind] to the previous one; a
    downsampling block starts again at `reset`."""
    vals, v = {}, first
    for b in model["blocks"][:-1]:
        if b["kind"] == "stem":
            v = first
        elif b["downsamples"]:
            v = reset
        else:
            v = v + step_by_kind.get(b["kind"], 0.0)
        vals[b["address"]] = v
    return vals


def _fourier_case(msa_step, conv_step):
    cnn, vit = _cnn(), _vit()
    return _comparison([cnn, vit], {
        "cnn": {"fourier": _probe(cnn, _series(cnn, -3.0, {"conv": conv_step}), "fourier")},
        "vit": {"fourier": _probe(vit, _series(vit, -3.0, {"msa": msa_step, "mlp": 0.1}), "fourier")}})


def _variance_case(msa_factor, other_factor, reset=None, models=None):
    models = models or [_cnn(), _vit()]

    def mult(model, factors, reset):
        vals, v = {}, 1.0
        for b in model["blocks"][:-1]:
            v = reset if (b["downsamples"] and b["kind"] != "stem" and reset is not None) else v * factors.get(b["kind"], 1.0)
            vals[b["address"]] = v
        return vals

    factors = {"conv": other_factor, "mlp": other_factor, "msa": msa_factor}
    return _comparison(models, {m["label"]: {"variance": _probe(m, mult(m, factors, reset), "variance")} for m in models})


def _hessian(lm, sa):
    return {"hessian": {"lm": {"eigenvalues": lm, "residuals": lm, "losses": [1.0] * len(lm), "which": "LM", "hvps": 1},
                        "sa": {"eigenvalues": sa, "residuals": sa, "losses": [1.0] * len(sa), "which": "SA", "hvps": 1}}}


def _hessian_case(cnn_lm, cnn_sa, vit_lm, vit_sa):
    return _comparison([_cnn(), _vit()], {"cnn": _hessian(cnn_lm, cnn_sa), "vit": _hessian(vit_lm, vit_sa)})


def _landscape(rise):
    a = np.linspace(-1, 1, 5)
    loss = 1.0 + rise * (a[:, None] ** 2 + a[None, :] ** 2)
    return {"landscape": {"coords": a.tolist(), "loss": loss.tolist()}}


def _noise(clean, changes):
    f = [0.1, 0.3, 0.7, 0.9]
    return {"frequency_noise": {"frequencies": f, "clean": clean, "change": changes,
                                "accuracy": [clean + c for c in changes], "eps": 0.1, "width": 0.2, "samples": 100}}


def _lesions(model, nll, acc=0.9):
    rows = [{"address": b["address"], "kind": b["kind"], "stage": b["stage"], "depth": 0.0,
             "delta": {"nll": nll[b["address"]], "acc": -0.01}, "metrics": {}}
            for b in model["blocks"] if b["address"] in nll]
    return {"lesions": {"intact": {"metrics": {"acc": acc}}, "rows": rows}}


def _lesion_case(end_msa_wins, acc=0.9, models=None):
    """Lesions where the MSA at the end of each stage raises the NLL most (or least). The CNN's
    stages do the opposite (their first block matters most, the paper's ResNet): the claim is
    about MSAs, so they must not count either way."""
    hi, lo = (2.0, 0.5) if end_msa_wins else (0.1, 1.0)
    out = {}
    for m in models or [_cnn(), _vit(), _alternet()]:
        nll = {}
        for blocks in C._stages(m).values():
            end = C._end_msa(blocks)
            removable = [b for b in blocks if not b["downsamples"]]
            for i, b in enumerate(removable):
                nll[b["address"]] = (hi if b is end else lo) if end is not None else (2.0 if i == 0 else 0.5)
        out[m["label"]] = (m, _lesions(m, nll, acc))
    return _comparison([m for m, _ in out.values()], {lab: r for lab, (_, r) in out.items()})


CASES = [  # (claim id, constructed comparison, expected verdict)
    ("low-pass", _fourier_case(-0.5, +0.3), C.HOLDS),
    ("low-pass", _fourier_case(+0.5, +0.3), C.FAILS),
    ("low-pass", _fourier_case(-0.5, -0.3), C.FAILS),
    ("low-pass", _comparison([_cnn()], {"cnn": {"fourier": _probe(_cnn(), _series(_cnn(), -3, {"conv": 1}), "fourier")}}),
     C.UNMEASURABLE),
    ("variance", _variance_case(0.5, 2.0), C.HOLDS),
    ("variance", _variance_case(2.0, 2.0), C.FAILS),
    ("series-of-models", _variance_case(0.5, 2.0, reset=0.1), C.HOLDS),
    ("series-of-models", _variance_case(0.5, 0.5, reset=100.0), C.FAILS),
    # an MSA at a stage's end cuts the variance below the stage's first block: the drop at its end
    ("series-of-models", _variance_case(0.1, 2.0, reset=1.0, models=[_alternet()]), C.HOLDS),
    # variance that only grows through the network builds up in every stage but never drops
    ("series-of-models", _variance_case(2.0, 2.0, reset=None, models=[_cnn(), _alternet()]), C.FAILS),
    ("series-of-models", _comparison([_vit()], {"vit": {"variance": _probe(_vit(), {"c1.b0": 1.0, "c1.b1": 2.0}, "variance")}}),
     C.UNMEASURABLE),
    ("flat-hessian", _hessian_case([[500.0, 300.0]], [[-1.0]], [[20.0, -10.0]], [[-15.0]]), C.HOLDS),
    ("flat-hessian", _hessian_case([[5.0, 3.0]], [[-1.0]], [[20.0, -10.0]], [[-15.0]]), C.FAILS),
    ("flat-hessian", _comparison([_vit()], {"vit": _hessian([[20.0]], [[-15.0]])}), C.UNMEASURABLE),
    ("negative-eigenvalues", _hessian_case([[500.0]], [[-1.0]], [[20.0]], [[-15.0]]), C.HOLDS),
    ("negative-eigenvalues", _hessian_case([[500.0]], [[-1.0]], [[20.0]], [[-0.01]]), C.FAILS),
    ("negative-eigenvalues", _hessian_case([[500.0]], [[-400.0]], [[20.0]], [[-15.0]]), C.FAILS),
    ("negative-eigenvalues", _comparison([_cnn()], {"cnn": _hessian([[500.0]], [[-1.0]])}), C.UNMEASURABLE),
    ("flat-landscape", _comparison([_cnn(), _vit()], {"cnn": _landscape(10.0), "vit": _landscape(1.0)}), C.HOLDS),
    ("flat-landscape", _comparison([_cnn(), _vit()], {"cnn": _landscape(1.0), "vit": _landscape(10.0)}), C.FAILS),
    ("noise-frequency", _comparison([_cnn(), _vit()], {"cnn": _noise(0.9, [0.0, -0.01, -0.1, -0.2]),
                                                       "vit": _noise(0.9, [-0.2, -0.1, -0.01, 0.0])}), C.HOLDS),
    ("noise-frequency", _comparison([_cnn(), _vit()], {"cnn": _noise(0.9, [-0.2, -0.1, -0.01, 0.0]),
                                                       "vit": _noise(0.9, [-0.2, -0.1, -0.01, 0.0])}), C.FAILS),
    ("noise-frequency", _comparison([_cnn(), _vit()], {"cnn": _noise(0.1, [0.0, -0.01, -0.1, -0.2]),
                                                       "vit": _noise(0.1, [-0.2, -0.1, -0.01, 0.0])}), C.UNMEASURABLE),
    ("stage-end-msa", _lesion_case(True), C.HOLDS),
    ("stage-end-msa", _lesion_case(False), C.FAILS),
    ("stage-end-msa", _lesion_case(True, acc=0.1), C.UNMEASURABLE),
    ("stage-end-msa", _lesion_case(True, models=[_cnn()]), C.UNMEASURABLE),  # no MSA: conv stages do not count
]


@pytest.mark.parametrize("claim,cmp,verdict", CASES, ids=[f"{c}-{v}-{i}" for i, (c, _, v) in enumerate(CASES)])
def test_claim_rules_on_constructed_measures(claim, cmp, verdict):
    res = {r.id: r for r in cmp.claims()}[claim]
    assert res.verdict == verdict, res
    assert res.rule and res.figure.startswith("Fig.") and res.claim.endswith(".")
    if verdict == C.UNMEASURABLE:
        assert res.reason


def test_every_claim_has_a_case_of_each_verdict_it_can_give():
    ids = {c.id for c in C.CLAIMS}
    assert {c for c, _, v in CASES if v == C.HOLDS} == ids
    assert {c for c, _, v in CASES if v == C.FAILS} == ids
    assert len(ids) == len(C.CLAIMS) >= 7


def test_a_claim_whose_measure_did_not_run_is_not_measurable():
    cmp = _comparison([_cnn(), _vit()], {}, measures=("variance",))
    res = {r.id: r for r in cmp.claims()}
    assert res["flat-hessian"].verdict == C.UNMEASURABLE and "hessian" in res["flat-hessian"].reason


@pytest.mark.parametrize("kinds,end", [
    (["conv", "conv", "msa"], 2),                 # AlterNet: the stage's last block
    (["msa", "mlp", "msa", "mlp"], 2),            # transformer: the last MSA-MLP pair
    (["conv", "msa", "conv"], None),              # a conv after the last MSA: not at the end
    (["msa", "mlp", "conv", "mlp"], None),
    (["conv", "conv"], None),                     # no MSA
    (["mlp"], None),
])
def test_the_msa_at_the_end_of_a_stage(kinds, end):
    blocks = [_block(f"c1.b{i}", k, "c1") for i, k in enumerate(kinds)]
    got = C._end_msa(blocks)
    assert (None if got is None else blocks.index(got)) == end


def test_stage_end_msa_compares_with_the_median_of_the_other_blocks():
    """One AlterNet stage c1 (conv, conv, MSA at its end): the MSA's NLL increase of 1.0 against
    the others' 0.5 and 3.0 (median 1.75) does not count, against 0.5 and 0.9 it does."""
    alt = _alternet()
    for others, verdict in (((0.5, 3.0), C.FAILS), ((0.5, 0.9), C.HOLDS)):
        nll = {"c1.b0": others[0], "c1.b1": others[1], "c1.b2": 1.0}
        res = {r.id: r for r in _comparison([alt], {"alt": _lesions(alt, nll)}).claims()}["stage-end-msa"]
        assert res.verdict == verdict and res.reason == f"{int(verdict == C.HOLDS)} of 1 stages"


def test_block_changes_skip_downsampling_and_other_grids():
    probe = {"blocks": [_block("a", "conv", "c1") | {"variance": 1.0}, _block("b", "msa", "c1") | {"variance": 0.5},
                        _block("c", "conv", "c2", (2, 2), True) | {"variance": 9.0},
                        _block("d", "conv", "c2", (2, 2)) | {"variance": 18.0}]}
    ch = C.block_changes(probe, lambda b: b["variance"], log=True)
    assert [k for k, _ in ch] == ["msa", "conv"]
    assert ch[0][1] == pytest.approx(np.log(0.5)) and ch[1][1] == pytest.approx(np.log(2.0))


def test_aligned_positions_line_stages_up():
    from surgeon.comparison.report import aligned_positions

    pos, spans = aligned_positions([_cnn(), _vit()])
    assert pos[0]["c2.b0"] == pos[1]["head"] - 3 + 0  # c2 starts right after the widest c1 (the ViT's 4 blocks)
    assert pos[0]["c1.b0"] == pos[1]["c1.b0"] and pos[0]["head"] == pos[1]["head"]
    assert [s[0] for s in spans] == ["c1", "c2"]


# ----------------------------------------------------------------------------------------------
# Real models


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: on a shared 2-core machine two threads per process stall each other
    (measured: the comparison below takes 10x longer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    cnn = surgeon.load_model("test_resnet", num_classes=10)
    vit = surgeon.load_model("test_vit", num_classes=10, img_size=32, patch_size=8)
    return cnn, vit


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}, [x.training for x in m.modules()]


@pytest.fixture(scope="module")
def done(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "report"
    before = [_state(m) for m in models]
    cmp = surgeon.compare(dict(zip(["cnn", "vit"], models)), "digits", out, settings=TINY)
    for m, (sd, modes) in zip(models, before):
        assert all(torch.equal(v, m.state_dict()[k]) for k, v in sd.items())
        assert modes == [x.training for x in m.modules()]
    return cmp, out


def test_compare_runs_every_measure_on_the_same_batches(models, done):
    cmp, out = done
    assert cmp.labels == ["cnn", "vit"] and not cmp.interrupted
    assert all(set(cmp.results[lab]) == set(cmpmod.MEASURES) for lab in cmp.labels)
    for m, lab in zip(models, cmp.labels):  # the test split's first batch of 16, as the analyses read it alone
        batch = next(iter(surgeon.data.loader("digits", m, batch_size=16, input_size=SIZE)))
        ev = surgeon.evaluate(m, [batch])
        assert cmp.results[lab]["lesions"]["intact"]["metrics"]["acc"] == pytest.approx(ev.metrics["acc"], abs=1e-12)
        pr = surgeon.probe(m, [batch], "variance", "*")
        assert cmp.results[lab]["variance"]["blocks"][-1]["variance"] == pytest.approx(
            pr.values[pr.blocks[-1].address]["variance"], rel=1e-9)
    back = surgeon.read_comparison(out)
    assert back.results == json.loads(json.dumps(cmp.to_dict()))["results"]
    assert [c.verdict for c in back.claims()] == [c.verdict for c in cmp.claims()]


def test_report_files(done, tmp_path):
    cmp, out = done
    index = cmp.report(out)
    text = index.read_text()
    assert text.count('<tr class="claim"') == len(C.CLAIMS)
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert text.count("data:image/png;base64,") == len(cmpmod.MEASURES) + 1  # every figure and the block graphs
    for name in ("blocks", "fourier", "variance", "hessian", "landscape", "frequency_noise", "lesions"):
        assert (out / f"{name}.png").stat().st_size > 1000 and (out / f"{name}.svg").stat().st_size > 1000
    claims_csv = (out / "claims.csv").read_text().splitlines()
    assert len(claims_csv) == len(C.CLAIMS) + 1 and "value[cnn]" in claims_csv[0]
    assert "<table" in cmp._repr_html_()


def test_resume_skips_finished_measures_and_refuses_other_settings(models, done, monkeypatch, tmp_path):
    cmp, out = done
    folder = tmp_path / "r"
    folder.mkdir()
    saved = json.loads(json.dumps(cmp.to_dict()))
    del saved["results"]["vit"]["lesions"]
    (folder / "results.json").write_text(json.dumps(saved))
    calls = []
    for name, fn in list(cmpmod.RUNNERS.items()):
        monkeypatch.setitem(cmpmod.RUNNERS, name, lambda ctx, fn=fn, name=name: calls.append((ctx.label, name)) or fn(ctx))
    again = surgeon.compare(dict(zip(["cnn", "vit"], models)), "digits", folder, settings=TINY, run=Run(resume=True))
    assert calls == [("vit", "lesions")]
    assert again.results["vit"]["lesions"] == cmp.results["vit"]["lesions"]
    with pytest.raises(SurgeonError, match="exists; pass resume=True"):
        surgeon.compare(dict(zip(["cnn", "vit"], models)), "digits", folder, settings=TINY)
    with pytest.raises(SurgeonError, match="other settings"):
        surgeon.compare(dict(zip(["cnn", "vit"], models)), "digits", folder, settings=cmpmod.QUICK.replace(input_size=SIZE),
                        run=Run(resume=True))


@pytest.mark.parametrize("kwargs,match", [
    ({"measures": ["fourrier"]}, "unknown measure 'fourrier'; did you mean fourier"),
    ({"measures": []}, "no measure given"),
    ({"out": "/nonexistent/dir/report"}, "does not exist"),
    ({"run": Run(resume=True)}, "resume=True needs out="),
    ({"settings": None, "seed": -1}, "seed"),
])
def test_bad_input_is_refused_before_any_work(kwargs, match):
    with pytest.raises(SurgeonError, match=match):
        surgeon.compare([torch.nn.Identity()], "digits", **kwargs)


def test_settings_are_range_checked():
    with pytest.raises(SurgeonError, match="probe_batches"):
        cmpmod.Settings(probe_batches=0)
    with pytest.raises(SurgeonError, match="hessian_batch_size"):
        cmpmod.Settings(hessian_batch_size=0)
    with pytest.raises(SurgeonError):
        cmpmod.Settings(hessian_k=0)


def test_the_hessian_reads_batches_of_its_own_size(models, monkeypatch):
    """hessian_batch_size sets the Hessian's mini-batches (both solves); None keeps batch_size."""
    sizes = []
    real = cmpmod.Context.loader

    def spy(self, train, batch_size=None):
        loader = real(self, train, batch_size)
        sizes.append((train, next(iter(loader))[0].shape[0]))
        return loader

    monkeypatch.setattr(cmpmod.Context, "loader", spy)
    for settings, n in ((cmpmod.with_settings(TINY, hessian_batch_size=8), 8), (TINY, TINY.batch_size)):
        sizes.clear()
        cmpmod.RUNNERS["hessian"](cmpmod.Context(models[0], SIZE, "digits", settings, 0, False, None, None, "cnn"))
        assert sizes == [(True, n), (True, n)]
    assert cmpmod.QUICK.hessian_batch_size < cmpmod.QUICK.batch_size and cmpmod.PAPER.hessian_batch_size is None


# ----------------------------------------------------------------------------------------------
# The command


def test_command_writes_the_report(tmp_path):
    out = tmp_path / "rep"
    r = invoke("compare", "test_resnet", "test_vit", "--num-classes", "10", "--input-size", "3,32,32", "--measures", "variance,fourier",
               "--quick", "--out", out)
    assert r.exit_code == 0, r.output
    assert "series-of-models" in r.output and (out / "index.html").is_file()
    r = invoke("compare", "test_resnet", "--measures", "variance", "--out", out)
    assert isinstance(r.exception, SurgeonError) and "--resume" in str(r.exception) or "resume" in str(r.exception)


def test_sigkill_then_resume_does_not_redo_finished_measures(tmp_path, monkeypatch):
    out = tmp_path / "rep"
    args = ["test_resnet", "test_vit", "--num-classes", "10", "--input-size", "3,32,32", "--measures", "fourier,variance", "--quick", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "surgeon.cli", "compare", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.json"
    deadline = time.time() + 120
    finished = {}
    try:
        while time.time() < deadline and proc.poll() is None:
            if results.exists():
                finished = json.loads(results.read_text()).get("seconds", {})
                if finished:
                    break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finished = json.loads(results.read_text())["seconds"]
    pairs = {(lab, m) for lab, ms in finished.items() for m in ms}
    assert pairs, "the command finished no measure before the kill"
    calls = []
    for name, fn in list(cmpmod.RUNNERS.items()):
        monkeypatch.setitem(cmpmod.RUNNERS, name, lambda ctx, fn=fn, name=name: calls.append((ctx.label, name)) or fn(ctx))
    r = invoke("compare", *args, "--resume")
    assert r.exit_code == 0, r.output
    assert not pairs & set(calls)
    final = json.loads(results.read_text())
    assert {(lab, m) for lab, ms in final["seconds"].items() for m in ms} == {
        (lab, m) for lab in ("test_resnet", "test_vit") for m in ("fourier", "variance")}
    assert all(final["seconds"][lab][m] == finished[lab][m] for lab, m in pairs)
