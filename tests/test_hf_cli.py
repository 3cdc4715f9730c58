"""Every analysis command on `hf:<dir>` (issue #20, "the analyses run on an HF model exactly as on a
timm model, through the API and the CLI"): a small saved transformers ViT and ResNet, tiny data,
each command exits 0 and writes its figure."""

from __future__ import annotations

import pytest
import torch

from tests.test_cli import surgeon

tf = pytest.importorskip("transformers")

BATCH = ("--batches", "1", "--batch-size", "4")

#: command -> its arguments ({m}: the model), the file it writes
COMMANDS = {
    "eval": (["eval", "{m}", "--data", "digits", *BATCH, "--json", "out.json"], "out.json"),
    "probe": (["probe", "variance", "{m}", *BATCH, "--out", "out.png"], "out.png"),
    "hessian": (["hessian", "{m}", *BATCH, "--top-k", "2", "--tol", "1e-2", "--out", "out.png"], "out.png"),
    "landscape": (["landscape", "{m}", *BATCH, "--grid", "3", "--dims", "1", "--out", "out.png"], "out.png"),
    "attack": (["attack", "{m}", *BATCH, "--attack", "fgsm", "--eps", "0.01", "--out", "out.png"], "out.png"),
    "stability": (["stability", "{m}", *BATCH, "--out", "out.png"], "out.png"),
    "robustness": (["robustness", "{m}", *BATCH, "-c", "contrast", "-s", "1", "--out", "out.png"], "out.png"),
}


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """name -> a directory written by save_pretrained (random init, 32 px, 10 classes)."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    tf.ViTForImageClassification(tf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=2, intermediate_size=64, num_labels=10)).save_pretrained(root / "vit")
    tf.ResNetForImageClassification(tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1],
                                                    num_labels=10)).save_pretrained(root / "resnet")
    return root


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("model", ["vit", "resnet"])
def test_every_analysis_command_runs_on_an_hf_directory(hf_dirs, tmp_path, model, command):
    args, written = COMMANDS[command]
    r = surgeon(*[a.format(m=f"hf:{hf_dirs / model}") for a in args], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / written).stat().st_size > 0
