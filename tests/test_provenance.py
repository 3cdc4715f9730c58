"""The provenance record (`surgeon.model.provenance`): files of surgeon 0.1 still load, bit-identical."""

from pathlib import Path

import pytest
import torch

import surgeon

DATA = Path(__file__).parent / "data"
V01 = DATA / "surgeon01_alternet.safetensors"


@pytest.mark.numeric
def test_surgeon01_file_loads_bit_identical():
    """A file written by surgeon 0.1 (tests/data/make_surgeon01_fixture.py) loads to its stored tensors
    bit for bit, and its outputs equal, bit for bit, those of the same architecture rebuilt here from the
    fixture's recipe and given the file's raw tensors (both computed in this process, on this CPU).

    The outputs stored beside the file were computed on another CPU: float32 kernels differ in the last
    bits across CPUs (AVX-512 vs AVX2 vs default), so they are compared with a tolerance: a 7-layer net
    of unit-scale activations accumulates a few float32 rounding errors per output (eps = 1.2e-7), far
    below the 1e-4 at which a wrongly rebuilt layer would show."""
    from safetensors.torch import load_file

    ref = torch.load(DATA / "surgeon01_alternet_io.pt")
    model = surgeon.load(V01)
    raw = load_file(V01)
    state = model.state_dict()
    assert set(raw) <= set(state) and all(torch.equal(state[k], raw[k]) for k in raw)  # stored bits: weights read back, not results
    size = (3, 32, 32)
    rebuilt = surgeon.load_model("test_resnet", num_classes=10, channels=(8, 16, 24, 32), layers=(1, 2, 1, 1))
    rebuilt = surgeon.alternate(rebuilt, "c2", heads=2, dim_head=8, input_size=size)
    rebuilt = surgeon.insert(rebuilt, after="c3.b-1", module="smoothing", input_size=size)
    rebuilt.load_state_dict(raw, strict=False)
    with torch.no_grad():
        y, y_rebuilt = model(ref["x"]), rebuilt.eval()(ref["x"])
    assert torch.equal(y, y_rebuilt)  # same process, same kernels: exact
    torch.testing.assert_close(y, ref["y"], rtol=1e-5, atol=1e-5)  # another CPU's kernels: a tolerance
    assert not model.training


def test_surgeon01_record_is_read_into_the_dataclass():
    cfg = surgeon.model.weights.read_cfg(V01)
    assert cfg.spec == "test_resnet" and cfg.model_args["channels"] == [8, 16, 24, 32]
    assert [p["pass"] for p in cfg.passes] == ["alternate", "insert"]
    assert cfg.training["data"] == "digits" and cfg.version == "0.1.0"
    assert cfg.input_size == ((3, 32, 32), "trained")
    model = surgeon.load(V01)
    assert model.surgeon_cfg.passes == cfg.passes and model.surgeon_cfg.training == cfg.training


def test_record_follows_build_passes_and_save(tmp_path):
    """load_model records the build, every pass appends itself, save/load keeps the record, and a
    re-saved file holds the same metadata layout as surgeon 0.1 wrote."""
    from surgeon.model import provenance

    m = surgeon.load_model("test_resnet", num_classes=10)
    assert m.surgeon_cfg.base == {"spec": "test_resnet", "num_classes": 10, "img_size": None}
    r = surgeon.remove(m, "c1.b0", input_size=(3, 32, 32))
    assert m.surgeon_cfg.passes == () and [p["pass"] for p in r.surgeon_cfg.passes] == ["remove"]
    surgeon.save(r, tmp_path / "r.safetensors")
    back = surgeon.load(tmp_path / "r.safetensors")
    assert back.surgeon_cfg.base == r.surgeon_cfg.base and back.surgeon_cfg.passes == r.surgeon_cfg.passes
    meta = provenance.to_metadata(back)
    assert set(meta) == {"surgeon"} and '"base"' in meta["surgeon"] and '"passes"' in meta["surgeon"]
    assert provenance.from_metadata(meta, "x") == back.surgeon_cfg
    assert provenance.cfg_of(torch.nn.Linear(2, 2)) == provenance.SurgeonCfg()  # a foreign model: empty


USER_PASS = '''
import copy

import pytest
import torch
from torch import nn

import surgeon


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.register_buffer("factor", torch.tensor(float(factor)))

    def forward(self, x):
        return x * self.factor


@surgeon.register_pass
def scale_head_input(model, factor: float = 2.0):
    new = copy.deepcopy(model)
    new.fc = nn.Sequential(Scale(factor), new.fc)
    return new
'''

REPLAY = '''
import sys
import pytest
import torch
import surgeon
torch.set_num_threads(1)
path, folder = sys.argv[1], sys.argv[2]
try:
    surgeon.load(path)
except surgeon.SurgeonError as exc:
    print("refused:", exc)
sys.path.insert(0, folder)
import user_passes  # noqa: E402 - registers the pass, as a user's module would
ref = torch.load(folder + "/ref.pt")
model = surgeon.load(path)
print("passes", [p["pass"] for p in model.surgeon_cfg.passes])
print("equal", torch.equal(model(ref["x"]), ref["y"]))
'''


def test_user_pass_is_recorded_saved_and_replayed_in_a_fresh_process(tmp_path, monkeypatch):
    import subprocess
    import sys

    (tmp_path / "user_passes.py").write_text(USER_PASS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_passes

    m = surgeon.load_model("test_resnet", num_classes=5)
    e = user_passes.scale_head_input(m, factor=3.0)
    assert e.surgeon_cfg.passes[-1]["pass"] == "scale_head_input" and e.surgeon_cfg.passes[-1]["factor"] == 3.0
    assert "scale_head_input" in surgeon.surgery.passes.PASSES and not hasattr(m.fc, "0")  # the input is untouched
    surgeon.save(e, tmp_path / "u.safetensors")
    x = torch.randn(2, 3, 32, 32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same summation order as the fresh process
    try:
        with torch.no_grad():
            torch.save({"x": x, "y": e.eval()(x)}, tmp_path / "ref.pt")
    finally:
        torch.set_num_threads(threads)
    r = subprocess.run([sys.executable, "-c", REPLAY, str(tmp_path / "u.safetensors"), str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith("refused:") and "'scale_head_input' that is not registered" in lines[0]
    assert "import the module that registers it" in lines[0]
    assert lines[1] == "passes ['scale_head_input']" and lines[2] == "equal True"


def test_registry_suggests_and_registers():
    from surgeon.core.registry import Registry

    reg = Registry("widget", {"fourier": 1, "variance": 2})

    @reg.register
    def stats():
        return 3

    reg.register("norm", 4)
    assert reg.names() == ["fourier", "variance", "stats", "norm"] and reg["norm"] == 4 and "stats" in reg
    with pytest.raises(surgeon.SurgeonError, match=r"unknown widget 'fourir'; did you mean 'fourier'\? choose from"):
        reg.get("fourir")
    with pytest.raises(KeyError):  # mapping code still sees a KeyError
        reg["zzz"]
    assert reg.get("zzz", None) is None


def test_norm_probe_matches_the_definition():
    """The worked example of docs/architecture.md: (1/N) sum_i ||x_i||_2 of each block output,
    against forward hooks computing it directly."""
    model = surgeon.load_model("test_resnet", num_classes=10)
    x = torch.randn(6, 3, 32, 32)
    res = surgeon.probe(model, [x[:4], x[4:]], probes="norm", blocks="c*")
    g = surgeon.graph(model, input_size=(3, 32, 32))
    seen = {}

    def keep(address):
        def hook(module, args, out):  # returns None: the output is left as it is
            seen.setdefault(address, out.flatten(1).double().norm(dim=1))
        return hook

    assert all(b.tap[1] == "out" for b in g.select("c*"))
    hooks = [model.get_submodule(b.tap[0]).register_forward_hook(keep(b.address)) for b in g.select("c*")]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    assert seen
    for address, norms in seen.items():
        assert res[address]["norm"] == pytest.approx(float(norms.mean()), rel=1e-5)
