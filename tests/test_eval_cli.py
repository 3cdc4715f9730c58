"""`surgeon eval` and `surgeon lesion-study` against a plain computation of accuracy and NLL over the
same images, their figures, and one-line errors (exit code 2, no output file) for user mistakes."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from surgeon.cli.main import main
from test_cli import one_line_error
from torch import nn

import surgeon

SIZE = (3, 32, 32)


def _cli(monkeypatch, capsys, *args: str, cwd=None) -> subprocess.CompletedProcess:
    """Run the `surgeon` entry point in this process (as the console script does) and collect its
    exit code and output."""
    if cwd is not None:
        monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["surgeon", *args])
    monkeypatch.setenv("COLUMNS", "200")
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


@torch.no_grad()
def _naive(model: nn.Module, batch_size: int, batches: int) -> tuple[float, float, int]:
    """Accuracy, mean per-sample NLL and the number of images over the first test batches of digits."""
    model.eval()
    data = list(itertools.islice(surgeon.data.loader("digits", model, batch_size=batch_size, input_size=SIZE),
                                 batches))
    logits = torch.cat([model(x) for x, _ in data]).double()
    y = torch.cat([y for _, y in data])
    return (logits.argmax(1) == y).double().mean().item(), F.cross_entropy(logits, y).item(), len(y)


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    """A resnet18 for digits whose every block matters (random BN affine), as weights and as a surgeon file."""
    torch.manual_seed(3)
    m = surgeon.load_model("resnet18", num_classes=10)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            nn.init.normal_(mod.weight, 1.0, 0.5)
            nn.init.normal_(mod.bias, 0.0, 0.2)
    root = tmp_path_factory.mktemp("models")
    save_file(m.state_dict(), str(root / "r18.safetensors"))
    surgeon.save(m, root / "r18_model.safetensors")
    return m, root


def test_eval_json_equals_naive_and_reliability_figure(trained_like, tmp_path):
    model, root = trained_like
    r = subprocess.run([sys.executable, "-m", "surgeon.cli", "eval", "resnet18", "--num-classes", "10", "--weights",
                        str(root / "r18.safetensors"), "--data", "digits", "--input-size", "3,32,32", "--batch-size",
                        "40", "--batches", "3", "--json", "e.json", "--reliability", "rel.png"],
                       check=False, capture_output=True, text=True, cwd=tmp_path,
                       env={"COLUMNS": "200", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "e.json").read_text())
    acc, nll, n = _naive(model, 40, 3)
    assert d["split"] == "test" and d["samples"] == n == 120 and d["batches"] == 3
    assert d["metrics"]["acc"] == pytest.approx(acc, abs=1e-12)
    assert d["metrics"]["nll"] == pytest.approx(nll, rel=1e-6)
    assert sum(d["reliability"]["count"]) == n
    for col in ("Acc", "Top-5", "NLL", "Brier", "ECE", "signed ECE", "Acc-90", "Unc-90", "Freq-90", "IoU", "IoU-90"):
        assert col in r.stdout
    assert f"{100 * acc:.2f}%" in r.stdout and f"{nll:.4f}" in r.stdout
    with Image.open(tmp_path / "rel.png") as im:
        im.verify()
        assert im.format == "PNG"


def test_eval_surgeon_file_batch_nll(trained_like, tmp_path, monkeypatch, capsys):
    model, root = trained_like
    r = _cli(monkeypatch, capsys, "eval", str(root / "r18_model.safetensors"), "--data", "digits", "--input-size",
             "3,32,32", "--batch-size", "50", "--batches", "2", "--nll", "batch", "--json", str(tmp_path / "e.json"))
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "e.json").read_text())
    data = list(itertools.islice(surgeon.data.loader("digits", model, batch_size=50, input_size=SIZE), 2))
    with torch.no_grad():
        means = [F.cross_entropy(model(x).double(), y).item() for x, y in data]
    assert d["model"] == "r18_model" and d["nll_mode"] == "batch"
    assert d["metrics"]["nll"] == pytest.approx(sum(means) / 2, rel=1e-6)


def test_lesion_study_rows_equal_hand_lesion(trained_like, tmp_path, monkeypatch, capsys):
    model, root = trained_like
    vit = surgeon.load_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4, depth=2)
    surgeon.save(vit, tmp_path / "vit.safetensors")
    r = _cli(monkeypatch, capsys, "lesion-study", str(root / "r18_model.safetensors"), str(tmp_path / "vit.safetensors"),
             "--data", "digits", "--input-size", "3,32,32", "--blocks", "c1.b1", "--batch-size", "30", "--batches", "2",
             "--out", str(tmp_path / "les.png"), "--json", str(tmp_path / "les.json"))
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "les.json").read_text())
    assert [x["model"] for x in d] == ["r18_model", "vit"]
    row = d[0]["rows"][0]
    assert (row["address"], row["path"], row["kind"]) == ("c1.b1", "layer1.1", "conv")
    by_hand = copy.deepcopy(model)
    by_hand.layer1[1] = nn.Identity()
    acc, nll, _ = _naive(by_hand, 30, 2)
    acc0, nll0, _ = _naive(model, 30, 2)
    assert row["metrics"]["acc"] == pytest.approx(acc, abs=1e-12)
    assert row["metrics"]["nll"] == pytest.approx(nll, rel=1e-6)
    assert row["delta"]["nll"] == pytest.approx(nll - nll0, rel=1e-5) and abs(nll - nll0) > 1e-3
    assert d[0]["intact"]["metrics"]["acc"] == pytest.approx(acc0, abs=1e-12)
    assert d[1]["rows"][0]["kind"] == "mlp"  # ViT: c1.b1 is the MLP half of block 0
    assert "intact" in r.stdout and "layer1.1" in r.stdout and "blocks.0.mlp" in r.stdout
    with Image.open(tmp_path / "les.png") as im:
        im.verify()


@pytest.mark.parametrize("args, fragment", [
    (["eval", "resnet18", "--data", "samples", "--json", "e.json"], "images without labels"),
    (["eval", "resnet18", "--num-classes", "5", "--data", "digits", "--input-size", "3,32,32", "--json", "e.json",
      "--reliability", "r.png"], "the model has 5 classes but the data has 10"),
    (["eval", "resnet18", "--data", "no/such/folder", "--json", "e.json"], "is neither a file, a folder"),
    (["eval", "resnet18", "--data", "digits", "--json", "e.txt"], "must end in .json"),
    (["eval", "resnet18", "--data", "digits", "--reliability", "r.xyz"], "output 'r.xyz' must end in .eps or"),
    (["eval", "resnet18", "--data", "digits", "--json", "missing/e.json"], "does not exist"),
    (["eval", "resnet18", "--data", "digits", "--nll", "median"], "unknown --nll 'median'; choose from sample, batch"),
    (["lesion-study", "resnet18", "--num-classes", "10", "--data", "digits", "--blocks", "c9", "--out", "l.png"],
     "unknown block 'c9'"),
    (["lesion-study", "resnet18", "--num-classes", "10", "--data", "digits", "--blocks", "stem,head", "--input-size",
      "3,32,32", "--json", "l.json"], "no block of the selection 'stem,head' can be lesioned"),
    (["lesion-study", "resnet18", "resnet34", "--data", "digits", "--weights", "a.pt"], "1 --weights for 2 models"),
    (["lesion-study", "resnet18", "--data", "digits", "--out", "l.txt"], "must end in"),
])
def test_user_mistakes_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, args, fragment):
    r = _cli(monkeypatch, capsys, *args, cwd=tmp_path)
    one_line_error(r, fragment)
    assert list(tmp_path.iterdir()) == []  # no output file, no temporary left behind
