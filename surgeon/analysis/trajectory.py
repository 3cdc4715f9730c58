"""Optimisation trajectories in weight space (Park & Kim, Fig. 1b; the original code's weight-space
arithmetic, ``ops/arithmetic.py``).

    surgeon.train("resnet18", "digits", out="r18.safetensors", run=surgeon.parallel.Run(snapshots=1))  # r18.run/snapshots/
    res = surgeon.trajectory("r18.run")
    res.radii, res.angles                 # per snapshot: ||theta_t - theta_0||, angle in degrees

With theta_t the snapshot of epoch t (theta_0 the initial weights, theta_T the last snapshot):

    r_t = ||theta_t - theta_0||_2,    phi_t = arccos(<theta_t - theta_0, theta_T - theta_0> / (r_t r_T))

over all trainable parameters (phi_0 = 0). Excluded, as they are not parameters the optimiser
moves: buffers (BatchNorm's running mean / variance are statistics of the data, and
``num_batches_tracked`` an integer counter) and frozen parameters (``requires_grad=False``). The
snapshot files hold only the included tensors and list the excluded names in their metadata.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surgeon.core.errors import SurgeonError, first_line
from surgeon.core.files import atomic_path, check_folder
from surgeon.core.jsonio import dumps
from surgeon.core.runfolder import run_dir_for
from surgeon.core.tables import Tabular

__all__ = ["TrajectoryResult", "trajectory", "write_snapshot", "clear_snapshots", "snapshot_dir", "EXCLUDED"]

EXCLUDED = ("buffers (BatchNorm running mean / variance: statistics of the data; num_batches_tracked: a counter) "
            "and frozen parameters: the optimiser does not move them")
_NAME = re.compile(r"epoch_(\d+)\.safetensors")


def snapshot_dir(run: str | os.PathLike) -> Path:
    """The snapshots folder of a run folder (``NAME.run/snapshots``)."""
    return Path(run) / "snapshots"


def write_snapshot(run: str | os.PathLike, model: nn.Module, epoch: int) -> Path:
    """Write the trainable parameters of `model` after `epoch` epochs (0: the initial weights) to
    ``snapshots/epoch_NNNN.safetensors`` of the run folder, atomically (temp file + rename)."""
    from safetensors.torch import save_file

    folder = snapshot_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().float().cpu().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}
    excluded = [n for n, _ in model.named_buffers()] + [n for n, p in model.named_parameters() if not p.requires_grad]
    target = folder / f"epoch_{epoch:04d}.safetensors"
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata={"epoch": str(epoch), "excluded": dumps(excluded)})
    return target


def clear_snapshots(run: str | os.PathLike) -> None:
    """Delete the snapshots of an earlier run in this run folder (a fresh run starts over), so a
    trajectory never mixes two runs."""
    folder = snapshot_dir(run)
    if folder.is_dir():
        for p in folder.iterdir():
            if _NAME.fullmatch(p.name):
                p.unlink()


@dataclass
class TrajectoryResult(Tabular):
    """One run's trajectory: per snapshot ``epochs[i]``, ``radii[i]`` = ||theta_t - theta_0|| and
    ``angles[i]`` (degrees) between theta_t - theta_0 and theta_T - theta_0."""

    run: str
    epochs: list[int]
    radii: list[float]
    angles: list[float]
    parameters: int
    tensors: int
    excluded: list[str] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "epochs": self.epochs, "radii": self.radii, "angles": self.angles,
                "parameters": self.parameters, "tensors": self.tensors, "excluded": self.excluded,
                "excluded_why": EXCLUDED}

    def tidy(self) -> list[dict[str, Any]]:
        """Tidy rows: run x snapshot epoch x quantity (radius = ||theta_t - theta_0||, angle in degrees)."""
        return [{"run": self.run, "epoch": e, "quantity": q, "value": v}
                for e, r, a in zip(self.epochs, self.radii, self.angles) for q, v in (("radius", r), ("angle", a))]

    def plot(self):
        """The result's figure (a matplotlib Figure; `surgeon.viz`)."""
        from surgeon import viz

        return viz.plot_trajectories([self])


def run_folder(run: str | os.PathLike) -> Path:
    """The run folder of `run` (a run folder, or the model file beside it: ``r18.safetensors`` ->
    ``r18.run``), refused in one line when it does not exist or is not a folder."""
    root = Path(run).expanduser()
    if root.is_file() or root.suffix == ".safetensors":
        root = run_dir_for(root)
    return check_folder(root, "run folder", "give a run folder (NAME.run) or its model file, trained with snapshots=N")


def _snapshots(run: str | os.PathLike) -> list[tuple[int, Path]]:
    """(epoch, file) of every snapshot of `run` (a run folder or the model file beside it), sorted."""
    root = run_folder(run)
    folder = snapshot_dir(root)
    if not folder.is_dir():
        raise SurgeonError(f"{str(root)!r} has no snapshots folder; train with snapshots=N "
                           "to keep the weights every N epochs")
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name)))
    if len(found) < 2:
        raise SurgeonError(f"{str(folder)!r} holds {len(found)} snapshot(s); a trajectory needs the initial weights "
                           "and at least one later epoch")
    return found


def _read(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k).double() for k in f.keys()}
            excluded = json.loads((f.metadata() or {}).get("excluded", "[]"))
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
        raise SurgeonError(f"cannot read snapshot {str(path)!r} ({first_line(exc, 80)}); delete it or train again") from None
    return tensors, excluded


def trajectory(run: str | os.PathLike) -> TrajectoryResult:
    """The trajectory of one training run from its snapshots (see the module docstring); the first
    snapshot is theta_0 and the last theta_T. Sums are float64."""
    found = _snapshots(run)
    (_, first), (_, last) = found[0], found[-1]
    theta0, excluded = _read(first)
    thetaT, _ = _read(last)
    if set(thetaT) != set(theta0):
        raise SurgeonError(f"snapshots {first.name} and {last.name} hold different tensors: not one run; "
                           "train again into a fresh run folder")
    dT = {k: thetaT[k] - theta0[k] for k in theta0}
    rT = math.sqrt(sum(float(d.square().sum()) for d in dT.values()))
    radii, angles = [], []
    for epoch, path in found:
        theta, _ = _read(path)
        if set(theta) != set(theta0) or any(theta[k].shape != theta0[k].shape for k in theta0):
            raise SurgeonError(f"snapshot {path.name} holds other tensors than {first.name}: not one run")
        d = {k: theta[k] - theta0[k] for k in theta0}
        r = math.sqrt(sum(float(v.square().sum()) for v in d.values()))
        dot = sum(float((d[k] * dT[k]).sum()) for k in d)
        cos = dot / (r * rT) if r > 0 and rT > 0 else 1.0
        radii.append(r)
        angles.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
    return TrajectoryResult(str(run), [e for e, _ in found], radii, angles,
                            sum(t.numel() for t in theta0.values()), len(theta0), excluded)
