"""Perturbation stability (`surgeon.perturbation_stability`, CIFAR-10-P style) against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import surgeon
from surgeon.core.errors import SurgeonError
from surgeon.evaluation.stability import PerturbationSource, sequence

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # timm's defaults


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 4)).eval()


def _direct(model, frames: np.ndarray, noise: bool) -> dict[str, float]:
    """The metrics with loops over images and frame pairs, from the uint8 frames (N, T, H, W, 3)."""
    n, t = frames.shape[:2]
    x = (frames / 255.0 - MEAN) / STD
    with torch.no_grad():
        logits = model(torch.tensor(x, dtype=torch.float32).reshape(n * t, *x.shape[2:]).permute(0, 3, 1, 2))
    p = logits.softmax(-1).double().numpy().reshape(n, t, -1)
    same, cec, flips = [], [], []
    for i in range(n):
        y = p[i].argmax(-1)
        for j in range(t - 1):
            same.append(y[j] == y[j + 1])
            cec.append(-np.mean(p[i, j + 1] * np.log(p[i, j])))
            flips.append(y[j + 1] != (y[0] if noise else y[j]))
    return {"consistency": np.mean(same), "cec": np.mean(cec), "flip_probability": np.mean(flips)}


def test_cifar_p_metrics_equal_a_direct_computation(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (7, 1, 8, 8, 3))
    files = {"gaussian_noise": np.clip(base + rng.integers(-90, 90, (7, 5, 8, 8, 3)), 0, 255).astype(np.uint8),
             "translate": np.stack([np.roll(base[:, 0], s, axis=2) for s in range(4)], 1).astype(np.uint8)}
    for name, a in files.items():
        np.save(tmp_path / f"{name}.npy", a)
    model = _model()
    res = surgeon.perturbation_stability(model, source=PerturbationSource(tmp_path, batch_size=3, input_size=(3, 8, 8)))
    assert res.perturbations == ["gaussian_noise", "translate"] and res.frames == {"gaussian_noise": 5, "translate": 4}
    for name, a in files.items():
        expected = _direct(model, a, name == "gaussian_noise")
        for k, v in expected.items():
            assert res.metrics[name][k] == pytest.approx(v, rel=1e-5, abs=1e-9), (name, k)
    assert res.mean_flip_probability == pytest.approx(np.mean([m["flip_probability"] for m in res.metrics.values()]))


def test_translate_frames_shift_by_one_pixel():
    x = torch.rand(2, 3, 8, 8)
    seq = sequence(x, "translate")
    assert seq.shape == (2, 6, 3, 8, 8) and torch.equal(seq[:, 0], x)
    for s in range(1, 6):
        assert torch.equal(seq[:, s, ..., s:], x[..., :-s])


def test_on_the_fly_runs_without_files_and_leaves_the_model_unchanged():
    model = _model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = surgeon.data.normalised([(torch.randn(3, 3, 8, 8), torch.zeros(3, dtype=torch.long))], (0.5,) * 3, (0.25,) * 3)
    res = surgeon.perturbation_stability(model, data, ["translate", "gaussian_noise", "brightness"],
                                         source=PerturbationSource(input_size=(3, 8, 8)))
    assert set(res.metrics) == {"translate", "gaussian_noise", "brightness"} and res.samples == 3
    for m in res.metrics.values():
        assert 0 <= m["consistency"] <= 1 and 0 <= m["flip_probability"] <= 1 and m["cec"] > 0
    assert all(mod.training for mod in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_bad_requests_are_refused(tmp_path):
    model, data = _model(), [(torch.randn(1, 3, 8, 8), torch.zeros(1, dtype=torch.long))]
    with pytest.raises(SurgeonError, match="unknown perturbation"):
        surgeon.perturbation_stability(model, data, ["wobble"])
    with pytest.raises(SurgeonError, match="either"):
        surgeon.perturbation_stability(model)
    with pytest.raises(SurgeonError, match="lacks"):
        surgeon.perturbation_stability(model, source=PerturbationSource(tmp_path), perturbations=["rotate"])


def test_cli_csv_holds_the_json_numbers(tmp_path):
    """`surgeon stability --csv - --json FILE`: the tidy CSV rows are the JSON's metrics in full, and
    --device / --seed are the shared options."""
    import csv
    import io
    import json

    from typer.testing import CliRunner

    from surgeon.cli.main import app

    args = ["stability", "test_resnet", "--num-classes", "10", "--input-size", "3,16,16", "-p", "translate",
            "--batches", "1", "--batch-size", "4", "--device", "cpu", "--seed", "1"]
    res = CliRunner().invoke(app, [*args, "--csv", "-", "--json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "s.json").read_text())[0]
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert {(r["perturbation"], r["quantity"]): float(r["value"]) for r in rows if r["perturbation"]} == \
        {("translate", k): v for k, v in data["metrics"]["translate"].items()}
    assert [float(r["value"]) for r in rows if r["quantity"] == "mean_flip_probability"] == \
        [data["mean_flip_probability"]]
    res = CliRunner().invoke(app, [*args[:-4], "--device", "cuda:x"])
    assert isinstance(res.exception, SurgeonError) and "--device 'cuda:x'" in str(res.exception)
