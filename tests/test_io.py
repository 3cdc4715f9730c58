"""Weight files: every format researchers have, with and without prefixes, and every bad file."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import save_file

import surgeon
from surgeon import SurgeonError


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(1)
    return surgeon.load_model("resnet18", num_classes=10)


def _write(path, sd, layout):
    if layout == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif layout == "bare":
        torch.save(sd, path)
    elif layout == "state_dict+module":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    elif layout == "model+args":  # timm train.py checkpoints keep an argparse.Namespace
        torch.save({"model": sd, "args": argparse.Namespace(lr=0.1), "arch": "resnet18"}, path)
    elif layout == "compiled":
        torch.save({f"_orig_mod.{k}": v for k, v in sd.items()}, path)


@pytest.mark.parametrize("layout, name", [
    ("safetensors", "w.safetensors"),
    ("bare", "w.pt"),
    ("state_dict+module", "w.pth"),
    ("model+args", "w.pth.tar"),
    ("compiled", "w.bin"),
])
def test_weights_round_trip(tmp_path, reference, layout, name):
    path = tmp_path / name
    _write(path, reference.state_dict(), layout)
    model = surgeon.load_model("resnet18", num_classes=10, weights=path)
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in reference.state_dict().items())
    assert surgeon.model.weights.read_state_dict(path).keys() == reference.state_dict().keys()


def test_missing_and_unexpected_keys_are_reported(tmp_path, reference):
    sd = dict(reference.state_dict())
    sd.pop("fc.bias")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "w.pt")
    with pytest.warns(UserWarning, match=r"1 missing \['fc.bias'\], 1 unexpected \['extra.weight'\]"):
        surgeon.load_model("resnet18", num_classes=10, weights=tmp_path / "w.pt")


@pytest.mark.parametrize("make, fragment", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.write_text("not a checkpoint at all\n"), "cannot read weights file"),
    (lambda p: torch.save({"epoch": 3}, p), "holds no state_dict"),
    (lambda p: torch.save([1, 2], p), "holds no state_dict"),
])
def test_bad_files_get_one_line(tmp_path, make, fragment):
    path = tmp_path / "w.pth"
    make(path)
    with pytest.raises(SurgeonError, match=fragment) as e:
        surgeon.load_model("resnet18", weights=path)
    assert "\n" not in str(e.value)


def test_truncated_files(tmp_path, reference):
    for name, layout in (("w.safetensors", "safetensors"), ("w.pth", "bare")):
        path = tmp_path / name
        _write(path, reference.state_dict(), layout)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(SurgeonError, match="cannot read weights file"):
            surgeon.load_model("resnet18", num_classes=10, weights=path)


def test_other_architecture_is_refused(tmp_path, reference):
    torch.save(reference.state_dict(), tmp_path / "r18.pt")
    with pytest.raises(SurgeonError, match=r"shape mismatch for layer1\.0\.conv1\.weight .*pick the matching model"):
        surgeon.load_model("resnet50", num_classes=10, weights=tmp_path / "r18.pt")
    with pytest.raises(SurgeonError, match="shares no tensor name"):
        surgeon.load_model("vit_tiny_patch16_224", weights=tmp_path / "r18.pt")
    with pytest.raises(SurgeonError, match=r"fc\.weight \(file \[10, 512\] vs model \[1000, 512\]\).*num_classes="):
        surgeon.load_model("resnet18", weights=tmp_path / "r18.pt")


@pytest.mark.parametrize("name, other", [("resnet18", "resnet50"), ("tv:resnet18", "tv:resnet50"),
                                         ("vit_tiny_patch16_224", "vit_small_patch16_224")])
def test_fine_tuning_with_another_class_count_keeps_a_fresh_head(tmp_path, name, other):
    """--num-classes given and the file's classifier of another size: everything but the head loads."""
    source = surgeon.load_model(name)  # 1000 classes
    torch.save(source.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(1)
    fresh = surgeon.load_model(name, num_classes=7)
    torch.manual_seed(1)
    with pytest.warns(UserWarning, match=r"classifier (fc|head|heads\.head) not loaded .*a new head") as caught:
        tuned = surgeon.load_model(name, num_classes=7, weights=tmp_path / "w.pt")
    assert len(caught) == 1  # no second warning listing the head as missing
    src, new, init = source.state_dict(), tuned.state_dict(), fresh.state_dict()
    head = [k for k in new if new[k].shape != src[k].shape]
    assert head and all(k.split(".")[0] in ("fc", "head", "heads") for k in head)
    assert all(torch.equal(new[k], init[k]) for k in head)  # the head keeps its initialisation
    assert all(torch.equal(new[k], src[k]) for k in new if k not in head)
    with pytest.raises(SurgeonError, match="shape mismatch"):  # beyond the head: still another architecture
        surgeon.load_model(other, num_classes=7, weights=tmp_path / "w.pt")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with surgeon.core.files.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with surgeon.core.files.atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done" and list(tmp_path.iterdir()) == [target]


def test_atomic_outputs_get_the_mode_of_a_normal_file(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        with surgeon.core.files.atomic_path(tmp_path / "fig.png") as tmp:
            tmp.write_bytes(b"x")
        (tmp_path / "plain.png").write_bytes(b"x")
        surgeon.save(surgeon.load_model("resnet18"), tmp_path / "model.safetensors")  # safetensors writes privately
    finally:
        os.umask(umask)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {0o644}


def _not_a_file(tmp_path, what: str):
    """A directory or a FIFO at a path that names a file."""
    import os

    path = tmp_path / "thing.safetensors"
    if what == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    return path


@pytest.mark.parametrize("what, said", [("directory", "is a directory"), ("fifo", "is a FIFO")])
def test_a_directory_or_fifo_is_named_for_what_it_is(tmp_path, what, said):
    """Every reader of a user-given file says what the path is, not that it does not exist
    (a FIFO would also block a reader that opened it)."""
    import surgeon.data.datasets
    import surgeon.model.weights
    from surgeon.search import search_spec
    from surgeon.training.recipe import training_recipe

    path = _not_a_file(tmp_path, what)
    readers = {
        "weights": lambda p: surgeon.model.weights.read_state_dict(p),
        "surgeon file": lambda p: surgeon.model.weights.read_cfg(p),
        "surgeon file as a model": lambda p: surgeon.load_model(str(p)),
        "training recipe": lambda p: training_recipe(str(p)),
        "search spec": lambda p: search_spec(p),
    }
    if what == "fifo":  # a folder is valid data (a folder of images)
        readers["data file"] = lambda p: surgeon.data.dataset(str(p))
    for name, read in readers.items():
        with pytest.raises(SurgeonError, match=said) as e:
            read(path)
        assert "does not exist" not in str(e.value) and "give a file" in str(e.value), name
    with pytest.raises(SurgeonError, match="does not exist"):
        surgeon.core.files.check_input(tmp_path / "missing.pt", "weights file")
