"""Corruption robustness and frequency-band noise (Fig. 2b) against hand-written loops that corrupt
pixels in [0, 1] and normalise by hand; the released CIFAR-C / ImageNet-C layouts on tiny fake
folders whose accuracies are known by construction; the command line's one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data import resolve_model_data_config
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

import surgeon
from surgeon.data.corruptions import corrupt, frequency_noise
from surgeon.core.errors import SurgeonError
from surgeon.viz import plot_corruptions, plot_frequency_noise, save_figure
from surgeon.evaluation.frequency_noise import frequency_noise_robustness
from surgeon.evaluation.pixels import pixel_normalisation
from surgeon.evaluation.robustness import CorruptionSource, corruption_robustness
from tests.test_cli import one_line_error
from tests.test_cli import surgeon_process as surgeon_command

SIZE = (3, 32, 32)


class Tiny(nn.Module):
    """A 10-class CNN with BatchNorm and Dropout, so that train/eval flags matter."""

    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Dropout(0.5))
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@pytest.fixture
def model() -> Tiny:
    return Tiny().eval()


def _mean_std(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = resolve_model_data_config(model)
    return torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)


def _pixel_batches(model: nn.Module, batch_size: int = 16) -> DataLoader:
    """digits at 32 px as pixels in [0, 1]: the model's eval transform without its Normalize."""
    steps = [t for t in surgeon.data.eval_transform(model, input_size=SIZE).transforms
             if not isinstance(t, T.Normalize)]
    return DataLoader(surgeon.data.dataset("digits", transform=T.Compose(steps)), batch_size=batch_size)


@torch.no_grad()
def _naive(model: nn.Module, batches, fn: Callable[[torch.Tensor], torch.Tensor], n: int) -> tuple[float, float]:
    """(accuracy, mean NLL) of the first n batches of pixels x, fed as (fn(x) - mean) / std."""
    mean, std = _mean_std(model)
    logits, labels = [], []
    for (x, y), _ in zip(batches, range(n)):
        logits.append(model((fn(x) - mean) / std))
        labels.append(y)
    z, y = torch.cat(logits).double(), torch.cat(labels)
    return (z.argmax(1) == y).double().mean().item(), F.cross_entropy(z, y).item()


def test_on_the_fly_equals_a_naive_loop_on_pixels(model):
    loader = surgeon.data.loader("digits", model, input_size=SIZE, batch_size=16)
    res = corruption_robustness(model, loader, ["gaussian_noise", "contrast"], (3, 5), batches=2, seed=7)
    pixels = _pixel_batches(model)
    acc, nll = _naive(model, pixels, lambda x: x, 2)
    assert res.clean["acc"] == pytest.approx(acc, abs=1e-12) and res.clean["nll"] == pytest.approx(nll, rel=1e-5)
    for name in ("gaussian_noise", "contrast"):
        for s in (3, 5):
            g = torch.Generator().manual_seed(7)
            acc, nll = _naive(model, pixels, lambda x: corrupt(x, name, s, g), 2)  # noqa: B023
            cell = res.metrics[name][s]
            assert cell["acc"] == pytest.approx(acc, abs=1e-12) and cell["nll"] == pytest.approx(nll, rel=1e-5)
    # corrupting the normalised tensors instead of the pixels would give another answer
    g = torch.Generator().manual_seed(7)
    mean, std = _mean_std(model)
    _, wrong = _naive(model, pixels, lambda x: corrupt((x - mean) / std, "contrast", 5, g) * std + mean, 2)
    assert abs(wrong - res.metrics["contrast"][5]["nll"]) > 1e-3
    assert res.samples == 32 and res.severities == [3, 5] and not res.interrupted


def test_normalisation_is_read_from_the_data(model):
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    normalised = surgeon.data.loader("digits", model, transform=T.Compose([T.ToTensor(), T.Normalize(mean, std)]))
    assert np.allclose(pixel_normalisation(model, normalised), (mean, std))
    assert pixel_normalisation(model, surgeon.data.loader("digits", model, transform=T.ToTensor())) == \
        ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    plain = [(torch.zeros(1, 3, 8, 8), torch.zeros(1, dtype=torch.long))]
    with pytest.raises(SurgeonError, match=r"do not say how their pixels were normalised.*surgeon.data.normalised"):
        pixel_normalisation(model, plain)  # never assumed: an assumed mean / std rescales every eps
    assert pixel_normalisation(model, surgeon.data.normalised(plain, (0, 0, 0), (1, 1, 1))) == ((0.0,) * 3, (1.0,) * 3)


def test_deterministic_cells_and_means(model):
    loader = surgeon.data.loader("digits", model, input_size=SIZE, batch_size=16)

    def run(names: list[str], seed: int = 0) -> surgeon.results.CorruptionResult:
        return corruption_robustness(model, loader, names, (1, 4), batches=1, seed=seed)

    a, b = run(["gaussian_noise", "impulse_noise"]), run(["gaussian_noise", "impulse_noise"])
    assert a.to_dict() == b.to_dict()
    assert run(["impulse_noise"]).metrics["impulse_noise"] == a.metrics["impulse_noise"]  # cells independent
    assert run(["gaussian_noise"], seed=1).metrics["gaussian_noise"][4]["nll"] != a.metrics["gaussian_noise"][4]["nll"]
    grid = np.array([[a.metrics[c][s]["nll"] for s in (1, 4)] for c in ("gaussian_noise", "impulse_noise")])
    assert np.allclose(a.grid("nll"), grid) and a.mean("nll") == pytest.approx(grid.mean())
    assert list(a.per_corruption("nll").values()) == pytest.approx(grid.mean(1))
    assert list(a.per_severity("nll").values()) == pytest.approx(grid.mean(0))
    d = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert d["mean"]["nll"] == pytest.approx(grid.mean()) and set(d["metrics"]["impulse_noise"]) == {"1", "4"}
    with pytest.raises(SurgeonError, match="unknown metric 'accuracy'"):
        a.grid("accuracy")


def _flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_model_unchanged_also_on_error(model):
    model.train()
    model.head.eval()
    flags, state = _flags(model), {k: v.clone() for k, v in model.state_dict().items()}
    loader = surgeon.data.loader("digits", model, input_size=SIZE, batch_size=8)
    corruption_robustness(model, loader, ["fog"], (2,), batches=1)
    frequency_noise_robustness(model, loader, (0.5,), batches=1)
    bad = [(torch.rand(4, *SIZE), torch.full((4,), 12))]  # labels beyond the 10 classes, found after the forward
    with pytest.raises(SurgeonError, match="outside"):
        corruption_robustness(model, bad, ["fog"], (2,))
    assert _flags(model) == flags
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_frequency_noise_equals_a_naive_recomputation(model):
    loader = surgeon.data.loader("digits", model, input_size=SIZE, batch_size=16)
    res = frequency_noise_robustness(model, loader, (0.2, 0.8), eps=0.5, batches=2, seed=3)
    pixels = _pixel_batches(model)
    clean, _ = _naive(model, pixels, lambda x: x, 2)
    expected = []
    for f in (0.2, 0.8):
        g = torch.Generator().manual_seed(3)
        expected.append(_naive(model, pixels, lambda x: frequency_noise(x, f, 0.5, 0.2, g), 2)[0])  # noqa: B023
    assert res.clean == pytest.approx(clean, abs=1e-12) and res.accuracy == pytest.approx(expected, abs=1e-12)
    assert res.change == pytest.approx([a - clean for a in expected], abs=1e-12)
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["frequencies"] == [0.2, 0.8] and d["eps"] == 0.5 and d["samples"] == 32
    with pytest.raises(SurgeonError, match="out of range"):
        frequency_noise_robustness(model, loader, (0.5, 1.5))


# ----------------------------------------------------------------------------------------------
# The released files, faked


def _clean(model: nn.Module) -> DataLoader:
    mean, std = resolve_model_data_config(model)["mean"], resolve_model_data_config(model)["std"]
    tf = T.Compose([T.Resize((32, 32)), T.ToTensor(), T.Normalize(mean, std)])
    return surgeon.data.loader("digits", model, batch_size=16, transform=tf)


@torch.no_grad()
def _predict(model: nn.Module, clean: DataLoader, images: list[Image.Image]) -> np.ndarray:
    tf = clean.dataset.transform
    return model(torch.stack([tf(im) for im in images])).argmax(1).numpy()


def _fake_cifar_c(root, model: nn.Module, clean: DataLoader, names=("gaussian_noise", "fog"), rows: int = 8) -> None:
    """labels.npy set from the model's own predictions so that severity s has accuracy s / rows,
    identical for every corruption file."""
    rng = np.random.default_rng(0)
    root.mkdir()
    arrays = {n: rng.integers(0, 256, (5 * rows, 32, 32, 3), dtype=np.uint8) for n in names}
    for n in names[1:]:
        arrays[n] = arrays[names[0]]
    pred = _predict(model, clean, [Image.fromarray(a) for a in arrays[names[0]]])
    i = np.arange(5 * rows)
    labels = np.where(i % rows < i // rows + 1, pred, (pred + 1) % 10).astype(np.int64)
    np.save(root / "labels.npy", labels)
    for n, a in arrays.items():
        np.save(root / f"{n}.npy", a)


def test_cifar_c_files_give_the_accuracy_built_in(tmp_path, model):
    clean = _clean(model)
    _fake_cifar_c(tmp_path / "c", model, clean)
    res = corruption_robustness(model, clean, ["gaussian_noise", "fog"], source=CorruptionSource(cifar_c=tmp_path / "c"),
                                batches=1)
    assert np.array_equal(res.grid("acc"), np.tile(np.arange(1, 6) / 8, (2, 1)))
    assert res.source.startswith("CIFAR-C files") and res.mean("acc") == pytest.approx(3 / 8)


@pytest.mark.parametrize("damage, fragment", [
    (lambda r: (r / "fog.npy").unlink(), "lacks fog.npy"),
    (lambda r: (r / "labels.npy").unlink(), "has no labels.npy"),
    (lambda r: np.save(r / "fog.npy", np.zeros((40, 32, 32), np.uint8)), "holds uint8 of shape (40, 32, 32)"),
    (lambda r: np.save(r / "fog.npy", np.zeros((35, 32, 32, 3), np.uint8)), "expected uint8 (40, H, W, 3)"),
    (lambda r: np.save(r / "labels.npy", np.zeros(41, np.int64)), "expected integer labels (5 n,)"),
    (lambda r: (r / "fog.npy").write_bytes(b"garbage"), "cannot read"),
])
def test_cifar_c_bad_folders_are_one_line_errors(tmp_path, model, damage, fragment):
    clean = _clean(model)
    _fake_cifar_c(tmp_path / "c", model, clean)
    damage(tmp_path / "c")
    with pytest.raises(SurgeonError) as exc:
        corruption_robustness(model, clean, ["gaussian_noise", "fog"], source=CorruptionSource(cifar_c=tmp_path / "c"))
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def _fake_imagenet_c(root, model: nn.Module, clean: DataLoader, severities=(1, 2), per_severity: int = 4) -> None:
    """fog/<s>/<class>/*.JPEG, all 10 class folders; severity 1 files lie in the folder of the
    class the model predicts for them (accuracy 1), severity 2 files in the next one (accuracy 0)."""
    rng = np.random.default_rng(1)
    for s in severities:
        for c in range(10):
            (root / "fog" / str(s) / str(c)).mkdir(parents=True)
        for k in range(per_severity):
            tmp = root / f"tmp{k}.JPEG"
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp)
            with Image.open(tmp) as im:
                pred = int(_predict(model, clean, [im.convert("RGB")])[0])
            tmp.rename(root / "fog" / str(s) / str((pred + s - 1) % 10) / f"img{k}.JPEG")


def test_imagenet_c_folders(tmp_path, model):
    clean = _clean(model)
    _fake_imagenet_c(tmp_path / "inc", model, clean)
    res = corruption_robustness(model, clean, ["fog"], (1, 2), source=CorruptionSource(imagenet_c=tmp_path / "inc"))
    assert res.grid("acc").tolist() == [[1.0, 0.0]]
    with pytest.raises(SurgeonError, match="lacks the severity folders fog/3, fog/5;"):
        corruption_robustness(model, clean, ["fog"], (1, 3, 5), source=CorruptionSource(imagenet_c=tmp_path / "inc"))
    with pytest.raises(SurgeonError, match="has no folder for contrast;"):
        corruption_robustness(model, clean, ["fog", "contrast"], (1,), source=CorruptionSource(imagenet_c=tmp_path / "inc"))
    (tmp_path / "inc" / "fog" / "2" / "9").rename(tmp_path / "inc" / "fog" / "2" / "x")
    with pytest.raises(SurgeonError, match="class folders"):
        corruption_robustness(model, clean, ["fog"], (1, 2), source=CorruptionSource(imagenet_c=tmp_path / "inc"))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"corruptions": ["gausian_noise"]}, "did you mean 'gaussian_noise'"),
    ({"severities": (0, 6)}, "integers from 1 to 5"),
    ({"preset": "tiny"}, "preset 'tiny' is unknown"),
    ({"cifar_c": "x", "imagenet_c": "y"}, "not both"),
    ({"cifar_c": "/no/such/folder"}, "does not exist"),
])
def test_bad_arguments(model, kwargs, fragment):
    with pytest.raises(SurgeonError, match=fragment.replace("(", r"\(")):
        kwargs = dict(kwargs)
        what = {k: kwargs.pop(k) for k in ("corruptions", "severities") if k in kwargs}
        corruption_robustness(model, [], **what, source=CorruptionSource(**kwargs))


def test_figures(tmp_path, model):
    loader = surgeon.data.loader("digits", model, input_size=SIZE, batch_size=8)
    res = corruption_robustness(model, loader, ["brightness", "pixelate"], (1, 2, 3), batches=1)
    ax = plot_corruptions(res, "nll")
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 4 * 3 and f"{res.mean('nll'):.3f}" in texts and "clean 2" in ax.get_title(loc="left")
    freq = [frequency_noise_robustness(model, loader, (0.3, 0.9), batches=1)]
    freq.append(frequency_noise_robustness(Tiny().eval(), loader, (0.3, 0.9), batches=1))
    ax2 = plot_frequency_noise(freq)
    assert len(ax2.get_lines()) == 3 and [t.get_text() for t in ax2.get_xticklabels()] == ["0.3\u03c0", "0.9\u03c0"]
    assert save_figure(ax.figure, tmp_path / "heat.png").stat().st_size > 0


# ----------------------------------------------------------------------------------------------
# Command line


def _cli(monkeypatch, capsys, *args: str) -> subprocess.CompletedProcess:
    """The `surgeon` command run in this process (faster than a subprocess)."""
    from surgeon.cli.main import main

    monkeypatch.setattr(sys, "argv", ["surgeon", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), exc.value.code, captured.out, captured.err)


COMMON = ("--num-classes", "10", "--input-size", "3,32,32", "--batches", "1", "--batch-size", "8")


def test_cli_tables_figures_json(tmp_path, monkeypatch, capsys):
    r = _cli(monkeypatch, capsys, "robustness", "resnet18", *COMMON, "-c", "contrast,fog", "-s", "1,5", "--metric",
             "nll", "--out", str(tmp_path / "c.png"), "--json", str(tmp_path / "c.json"))
    assert r.returncode == 0, r.stderr
    assert "severity 5" in r.stdout and "contrast" in r.stdout and (tmp_path / "c.png").stat().st_size > 0
    d = json.loads((tmp_path / "c.json").read_text())
    assert d["model"] == "resnet18" and set(d["metrics"]) == {"contrast", "fog"} and d["samples"] == 8
    r = _cli(monkeypatch, capsys, "frequency-noise", "resnet18", "vit_tiny_patch16_224", "--img-size", "32", *COMMON,
             "--frequencies", "0.3,0.9", "--json", str(tmp_path / "f.json"), "--out", str(tmp_path / "f.png"))
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "f.json").read_text())
    assert [x["model"] for x in d] == ["resnet18", "vit_tiny_patch16_224"] and d[0]["frequencies"] == [0.3, 0.9]
    assert (tmp_path / "f.png").stat().st_size > 0


@pytest.mark.parametrize("args, fragment", [
    (["robustness", "resnet18", "-c", "gausian_noise"], "did you mean 'gaussian_noise'"),
    (["robustness", "resnet18", "-s", "1,x"], "--severities '1,x' is not a comma-separated list of ints"),
    (["robustness", "resnet18", "-s", "0,6"], "--severities=0 is out of range; give an integer in [1, 5]"),
    (["robustness", "resnet18", "--metric", "accuracy"], "unknown --metric 'accuracy'"),
    (["robustness", "resnet18", "--out", "fig.txt"], "must end in"),
    (["robustness", "resnet18", "--cifar-c", "nowhere"], "does not exist"),
    (["robustness", "resnet18", "--cifar-c", "cc", "-c", "gaussian_noise,fog"], "lacks fog.npy"),
    (["frequency-noise", "resnet18", "--frequencies", "0.5,1.5"], "frequency=1.5 is out of range; give a number in [0, 1]"),
    (["frequency-noise", "resnet18", "--eps", "-1"], "--eps=-1.0 is out of range; give a number in [0, 1]"),
    (["frequency-noise", "resnet18", "resnet18", "--weights", "w.pt"], "give one --weights per model"),
])
def test_cli_bad_input_is_one_line_exit_2_and_no_file(tmp_path, monkeypatch, capsys, args, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cc").mkdir()
    np.save(tmp_path / "cc" / "labels.npy", np.zeros(5, np.int64))
    np.save(tmp_path / "cc" / "gaussian_noise.npy", np.zeros((5, 32, 32, 3), np.uint8))
    r = _cli(monkeypatch, capsys, *args, *COMMON, "--json", "out.json")
    one_line_error(r, fragment)
    assert not (tmp_path / "out.json").exists() and not list(tmp_path.glob("*.png")) and r.stdout == ""


def test_cli_entry_point_error(tmp_path):
    r = surgeon_command("robustness", "resnet18", "--metric", "accuracy", "--out", str(tmp_path / "x.png"))
    one_line_error(r, "unknown --metric 'accuracy'")
    assert not (tmp_path / "x.png").exists()
