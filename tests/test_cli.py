"""The `surgeon` command as a user meets it: tables, JSON, and one-line errors with exit code 2."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import traceback

import numpy as np
import pytest
import torch


def one_line_error(r: subprocess.CompletedProcess, fragment: str) -> None:
    """Exit code 2 and exactly one line on stderr, starting with 'error:' and holding `fragment`."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error:") and fragment in lines[0] and "Traceback" not in r.stderr, r.stderr


def surgeon_process(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """`python -m surgeon.cli ARGS` in a fresh process with a bare environment (the entry point itself)."""
    return subprocess.run([sys.executable, "-m", "surgeon.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={"COLUMNS": "160", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def surgeon(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """`surgeon ARGS` run by the console entry point `surgeon.cli.main.main` in this process, in the
    folder `cwd`: its exit code, stdout and stderr, as `surgeon_process` gives them (an exception that
    escapes is a traceback on stderr and exit code 1, as in a process) without a cold start of torch
    (about 5 s) per call."""
    from surgeon.cli.main import main

    argv, here, out, err, code = sys.argv, os.getcwd(), io.StringIO(), io.StringIO(), 0
    try:
        sys.argv = ["surgeon", *map(str, args)]
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            except Exception:  # noqa: BLE001 - what a process would die of
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = argv
        os.chdir(here)
    return subprocess.CompletedProcess(["surgeon", *args], code, out.getvalue(), err.getvalue())


def test_inspect_table_and_json():
    r = surgeon("inspect", "resnet18", "--input-size", "3,64,64")
    assert r.returncode == 0, r.stderr
    for text in ("c4.b1", "layer4.1", "conv1+bn1+act1+maxpool", "global_pool+fc", "4 stages", "graph by fx"):
        assert text in r.stdout
    r = surgeon("inspect", "tv:vit_b_16", "--img-size", "32", "--json", "-")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["method"] == "fx" and list(data["stages"]) == ["c1"]
    assert [b["kind"] for b in data["blocks"][1:-1]] == ["msa", "mlp"] * 12
    assert data["params"] == sum(b["params"] for b in data["blocks"])


def test_inspect_with_weights(tmp_path):
    from safetensors.torch import save_file

    import surgeon as lib

    sd = lib.load_model("resnet18", num_classes=3).state_dict()
    save_file(sd, str(tmp_path / "w.safetensors"))
    r = surgeon("inspect", "resnet18", "--num-classes", "3", "--weights", str(tmp_path / "w.safetensors"),
                "--input-size", "3,32,32", "--json", "-")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["blocks"][-1]["out_shape"] == [1, 3]


@pytest.mark.parametrize("args, fragment", [
    (["inspect", "resnet5"], "unknown model 'resnet5': did you mean resnet50"),
    (["inspect", "resnet18", "--input-size", "3,2"], "--input-size '3,2' is not C,H,W"),
    (["inspect", "vit_tiny_patch16_224", "--input-size", "3,64,64"], "cannot take input size 3x64x64"),
    (["inspect", "resnet18", "--weights", "missing.pt"], "does not exist"),
    (["inspect", "resnet18", "--weights", "bad.pth"], "cannot read weights file"),
    (["inspect", "resnet18", "--weights", "r50.pt"], "shape mismatch"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, fragment):
    (tmp_path / "bad.pth").write_text("garbage")
    torch.save({"conv1.weight": torch.zeros(1, 1, 1, 1)}, tmp_path / "r50.pt")
    r = surgeon(*args, cwd=tmp_path)
    one_line_error(r, fragment)
    assert r.stdout == ""


def test_usage_errors_exit_2():
    r = surgeon_process("inspect")  # the real entry point, once
    assert r.returncode == 2 and "Missing argument" in r.stderr and r.stdout == ""
    r = surgeon("nonsense")
    assert r.returncode == 2


def test_alternate_info_lesion_insert(tmp_path):
    r = surgeon("alternate", "resnet50", "--stages", "c2,c3", "--out", "alt.safetensors", "--input-size", "3,64,64",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "c2.b3" in r.stdout and "c3.b5" in r.stdout and "params 25.56M ->" in r.stdout
    assert (tmp_path / "alt.safetensors").is_file()
    r = surgeon("info", "alt.safetensors", "--input-size", "3,64,64", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "alternate(stages={'c2': 1, 'c3': 1}" in r.stdout and "1 msa" in r.stdout
    r = surgeon("lesion", "alt.safetensors", "--blocks", "c3.b1,c3.b2", "--out", "les.safetensors",
                "--input-size", "3,64,64", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = surgeon("insert", "resnet18", "--after", "c*.b-1", "--out", "sm.safetensors", "--input-size", "3,64,64",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = surgeon("replace", "resnet18", "--blocks", "c4.b1", "--with", "msa", "--window", "2", "--out",
                "rep.safetensors", "--input-size", "3,64,64", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import surgeon as lib

    assert isinstance(lib.load(tmp_path / "rep.safetensors").layer4[1], lib.layers.MSABlock)
    lesioned = lib.load(tmp_path / "les.safetensors")  # the blocks named before the first edit
    assert [type(lesioned.layer3[i]).__name__ for i in range(4)] == ["Bottleneck", "Identity", "Identity", "Bottleneck"]
    assert [p["pass"] for p in lib.read_cfg(tmp_path / "les.safetensors").passes] == ["alternate", "remove", "remove"]
    assert len(lib.read_cfg(tmp_path / "sm.safetensors").passes) == 4


@pytest.mark.parametrize("args, fragment", [
    (["--stages", "c9"], "unknown stage c9"),
    (["--stages", "c2,c2"], "stage c2 is given twice"),
    (["--stages", "c4=2"], "at most 1 MSA (m <= n/2)"),
    (["--stages", "c4", "--window", "9"], "window 9 is larger than c4's 2x2"),
    (["--stages", "c2", "--weights", "r18.pt"], "shape mismatch"),
    (["--stages", "c2", "--out", "nodir/x.safetensors"], "does not exist; create it first"),
    (["--stages", "c2", "--out", "exists.safetensors"], "exists; pass --force"),
    (["--stages", "c2", "--out", "x.pt"], "must end in .safetensors"),
    (["--preset", "paper"], "preset paper is built on resnetv2_50"),
    (["--preset", "nope"], "unknown --preset 'nope'; choose from paper"),
])
def test_alternate_bad_input(tmp_path, args, fragment):
    import surgeon as lib

    torch.save(lib.load_model("resnet18").state_dict(), tmp_path / "r18.pt")
    (tmp_path / "exists.safetensors").write_bytes(b"keep me")
    argv = ["alternate", "resnet50", "--input-size", "3,64,64", *args]
    if "--out" not in args:
        argv += ["--out", "x.safetensors"]
    r = surgeon(*argv, cwd=tmp_path)
    one_line_error(r, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.safetensors", "r18.pt"]
    assert (tmp_path / "exists.safetensors").read_bytes() == b"keep me"


def test_info_refuses_foreign_and_corrupt(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "f.safetensors"))
    (tmp_path / "c.safetensors").write_bytes(b"\x01" * 64)
    for name, fragment in (("f.safetensors", "not saved by surgeon"), ("c.safetensors", "not a readable"),
                           ("none.safetensors", "does not exist")):
        r = surgeon("info", name, cwd=tmp_path)
        assert r.returncode == 2 and fragment in r.stderr and "Traceback" not in r.stderr


def _images(folder, n=3):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    modes = ["RGB", "L", "RGBA", "P"]
    for i in range(n):
        a = rng.integers(0, 255, (40, 50, 4 if modes[i % 4] == "RGBA" else 3), dtype=np.uint8)
        img = Image.fromarray(a[..., :4] if modes[i % 4] == "RGBA" else a[..., :3])
        img.convert(modes[i % 4]).save(folder / f"img{i}.png")
    return folder


def test_probe_figure_and_json(tmp_path):
    r = surgeon("probe", "fourier", "resnet18", "vit_tiny_patch16_224", "--img-size", "64", "--input-size", "3,64,64",
                "--batch-size", "8", "--batches", "1", "--out", "f.svg", "--json", "f.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "c4.b1" in r.stdout and "Δlogamp(last)" in r.stdout and "at ω" in r.stdout and "over 8 images" in r.stdout
    assert (tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")
    data = json.loads((tmp_path / "f.json").read_text())
    assert [d["model"] for d in data] == ["resnet18", "vit_tiny_patch16_224"]
    blocks = {b["address"]: b for b in data[0]["blocks"]}
    assert len(blocks["c4.b1"]["fourier"]["dlogamp"]) == 1 and blocks["c1.b0"]["fourier"]["dlogamp"][0] == 0
    assert data[1]["blocks"][1]["kind"] == "msa" and data[1]["samples"] == 8


def test_probe_folder_skips_unreadable_files(tmp_path):
    folder = _images(tmp_path / "imgs", 4)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    r = surgeon("probe", "stats", "resnet18", "--data", str(folder), "--input-size", "3,32,32", "--blocks", "c1",
                "--json", "s.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "skipped" in r.stderr and "Traceback" not in r.stderr
    data = json.loads((tmp_path / "s.json").read_text())[0]
    assert data["samples"] == 4 and all(b["stats"]["nonfinite"] == 0 for b in data["blocks"])


@pytest.mark.parametrize("args, fragment", [
    (["probe", "fourir", "resnet18"], "unknown KIND 'fourir'; did you mean 'fourier'?"),
    (["probe", "variance", "resnet18", "--blocks", "c9"], "unknown block 'c9'; valid: stem, c1.b0..b1"),
    (["probe", "variance", "resnet18", "--data", "empty"], "no images in"),
    (["probe", "variance", "resnet18", "--data", "nowhere"], "neither a file, a folder nor one of samples"),
    (["probe", "variance", "resnet18", "--out", "fig.xyz"], "must end in .eps or"),
    (["probe", "variance", "resnet18", "resnet34", "--weights", "a.pt"], "1 --weights for 2 models"),
    (["probe", "variance", "resnet18", "--data", "cifar10:nowhere"], "cifar10 not found under 'nowhere'"),
])
def test_probe_bad_input_is_one_line_exit_2(tmp_path, args, fragment):
    (tmp_path / "empty").mkdir()
    r = surgeon(*args, "--input-size", "3,32,32", cwd=tmp_path)
    one_line_error(r, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no output, no temp file


def test_hessian_and_landscape_commands(tmp_path):
    common = ["--num-classes", "10", "--input-size", "3,16,16", "--batch-size", "8"]
    r = surgeon("hessian", "resnet18", *common, "--batches", "2", "--top-k", "1", "--tol", "1e-3", "--trace",
                "--matvecs", "6", "--out", "h.png", "--json", "h.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "top-1 (LM) Hessian eigenvalues" in r.stdout and "trace (Hutch++, 6 products)" in r.stdout
    data = json.loads((tmp_path / "h.json").read_text())[0]
    assert np.array(data["eigenvalues"]).shape == (2, 1) and max(map(max, data["residuals"])) <= 2e-3
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    r = surgeon("landscape", "resnet18", *common, "--grid", "3", "--dims", "1", "--out", "l.pdf", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "3/3 points" in r.stdout and (tmp_path / "l.pdf").read_bytes()[:4] == b"%PDF"
    saved = json.loads((tmp_path / "landscape.json").read_text())
    assert saved["config"]["grid"] == 3 and len(saved["loss"]) == 3


@pytest.mark.parametrize("args, fragment", [
    (["hessian", "resnet18", "--which", "XX"], "unknown --which 'XX'"),
    (["hessian", "resnet18", "--top-k", "0"], "--top-k=0 is out of range; give an integer in [1, 100000]"),
    (["hessian", "resnet18", "--blocks", "c9"], "unknown block 'c9'"),
    (["hessian", "resnet18", "--data", "samples"], "have no labels"),
    (["hessian", "resnet18", "--num-classes", "5"], "the model has 5 classes but the data has 10"),
    (["landscape", "resnet18", "--norm", "l2"], "unknown --norm 'l2'; choose from filter, dim0"),
    (["landscape", "resnet18", "--grid", "1"], "--grid=1 is out of range; give an integer in [2, 1001]"),
    (["landscape", "resnet18", "--save", "notes.txt"], "must end in .json"),
])
def test_curvature_bad_input_is_one_line_exit_2(tmp_path, args, fragment):
    r = surgeon(*args, "--input-size", "3,16,16", "--batch-size", "200", "--out", "fig.png", cwd=tmp_path)
    one_line_error(r, fragment)
    assert list(tmp_path.iterdir()) == []


def test_alternate_with_the_cifar_stem(tmp_path):
    out = tmp_path / "alter.safetensors"
    r = surgeon("alternate", "resnet18", "--stages", "c3", "--cifar-stem", "--num-classes", "10", "--input-size",
                "3,32,32", "--window", "4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    import surgeon as lib

    model = lib.load(out)
    assert [p["pass"] for p in model.surgeon_cfg.passes] == ["cifar_stem", "alternate"]
    g = lib.graph(model, input_size=(3, 32, 32))
    assert g.stages["c1"][-1].grid == (32, 32) and [b.kind for b in g.stages["c3"]][-1] == "msa"


_FREEZE_PROBE = """
import gc, sys
sys.argv = ["surgeon", *sys.argv[1:]]
from surgeon.cli import main as cli_main
cli_main._import_base = (lambda base: lambda: (base(), print("frozen", gc.get_freeze_count(), "enabled", gc.isenabled(),
                                                             "torch", "torch" in sys.modules)))(cli_main._import_base)
cli_main.main()
"""


def test_a_run_imports_torch_and_timm_with_the_collector_off_then_freezes_them():
    """`main` imports the base of every command with gc off and freezes it (0.7 s of the headline
    job, bench/RESULTS.md); collection stays on for the command's own objects. Help imports nothing."""
    r = subprocess.run([sys.executable, "-c", _FREEZE_PROBE, "inspect", "resnet18"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    words = r.stdout.split("\n")[0].split()
    assert words[0] == "frozen" and int(words[1]) > 100_000 and words[3] == "True" and words[5] == "True", r.stdout
    r = subprocess.run([sys.executable, "-c", _FREEZE_PROBE, "alternate", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "frozen" not in r.stdout and "Usage" in r.stdout, r.stdout + r.stderr
    import gc
    from surgeon.cli import main as cli_main

    before = gc.get_freeze_count()
    cli_main._import_base()  # torch is here already: nothing to do
    assert gc.get_freeze_count() == before and gc.isenabled()
