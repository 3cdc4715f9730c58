"""Trajectories (`surgeon.analysis.trajectory`, Fig. 1b) on hand-made snapshots against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import surgeon
from surgeon.core.errors import SurgeonError
from surgeon.analysis.trajectory import write_snapshot


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    net[3].bias.requires_grad_(False)  # frozen: excluded like the BatchNorm buffers
    return net


def test_radii_and_angles_equal_a_direct_computation(tmp_path):
    net = _net()
    run = tmp_path / "m.run"
    thetas = []
    for epoch in range(4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * (epoch + 1))
            net[1].running_mean.add_(100.0)  # a buffer: must not move the trajectory
        write_snapshot(run, net, epoch)
        thetas.append(np.concatenate([p.detach().double().numpy().ravel() for p in net.parameters() if p.requires_grad]))
    res = surgeon.trajectory(run)
    d = [t - thetas[0] for t in thetas]
    radii = [float(np.linalg.norm(v)) for v in d]
    cos = [float(v @ d[-1] / (np.linalg.norm(v) * np.linalg.norm(d[-1]))) if np.linalg.norm(v) else 1.0 for v in d]
    assert res.epochs == [0, 1, 2, 3]
    assert res.radii == pytest.approx(radii, rel=1e-9)
    assert res.angles == pytest.approx([math.degrees(math.acos(min(1.0, c))) for c in cos], abs=1e-6)
    assert res.angles[0] == 0.0 and res.angles[-1] == pytest.approx(0.0, abs=1e-4)
    assert res.parameters == thetas[0].size
    assert "1.running_mean" in res.excluded and "1.num_batches_tracked" in res.excluded and "3.bias" in res.excluded
    assert surgeon.trajectory(tmp_path / "m.safetensors").radii == res.radii  # the model file names its run


def test_missing_or_single_snapshots_are_refused(tmp_path):
    with pytest.raises(SurgeonError, match="snapshots"):
        surgeon.trajectory(tmp_path / "none.run")
    write_snapshot(tmp_path / "one.run", _net(), 0)
    with pytest.raises(SurgeonError, match="at least one later epoch"):
        surgeon.trajectory(tmp_path / "one.run")


def test_train_keeps_snapshots_for_the_trajectory(tmp_path):
    out = tmp_path / "r.safetensors"
    surgeon.train("test_resnet", "digits", recipe=surgeon.training.recipe_with("digits", epochs=1, input_size=(3, 16, 16)), subset=0.05, val="none", out=out, run=surgeon.parallel.Run(snapshots=1))
    files = sorted(p.name for p in (tmp_path / "r.run" / "snapshots").iterdir())
    assert files == ["epoch_0000.safetensors", "epoch_0001.safetensors", "epoch_0002.safetensors"]  # 1 warmup + 1
    res = surgeon.trajectory(out)
    assert res.epochs == [0, 1, 2] and res.radii[0] == 0 and res.radii[-1] > 0
    assert any("running_mean" in n for n in res.excluded)


def test_cli_csv_holds_the_json_numbers(tmp_path):
    """`surgeon trajectory --json - --csv FILE`: the tidy CSV rows are the JSON's radii and angles in full."""
    import csv
    import json

    from typer.testing import CliRunner

    from surgeon.cli.main import app

    net, run = _net(), tmp_path / "m.run"
    for epoch in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        write_snapshot(run, net, epoch)
    res = CliRunner().invoke(app, ["trajectory", str(run), "--json", "-", "--csv", str(tmp_path / "t.csv")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)[0]
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [(int(r["epoch"]), float(r["value"])) for r in rows if r["quantity"] == "radius"] == \
        list(zip(data["epochs"], data["radii"]))
    assert [float(r["value"]) for r in rows if r["quantity"] == "angle"] == data["angles"]
    assert {r["run"] for r in rows} == {data["run"]} == {"m"}
