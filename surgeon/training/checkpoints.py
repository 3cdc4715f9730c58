"""A training run's folder: its checkpoint (written atomically every epoch, matched on resume by the
model's fingerprint, recipe and seed), its logs (log.jsonl, log.csv, TensorBoard) and its weight
snapshots (`surgeon.analysis.trajectory`).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surgeon.model import provenance
from surgeon.core.errors import SurgeonError, first_line
from surgeon.core.files import atomic_path, check_output
from surgeon.core.jsonio import dumps
from surgeon.core.runfolder import run_dir_for
from surgeon.analysis.trajectory import clear_snapshots, write_snapshot
from surgeon.training.state import _Run


def _run_started(run_dir: Path) -> bool:
    """Whether a run folder holds work worth resuming: a checkpoint."""
    return (run_dir / "checkpoint.pt").is_file()


def _fingerprint(model: nn.Module) -> str:
    """Architecture identity: the model's build spec and passes, and every state tensor's name and shape."""
    cfg = provenance.cfg_of(model)
    spec = {k: v for k, v in cfg.base.items() if k != "drop_path_rate"}
    parts = [dumps(spec, sort_keys=True, default=str), dumps(list(cfg.passes), sort_keys=True, default=str)]
    parts += [f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items()]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def _write_checkpoint(path: Path, state: dict[str, Any], previous: int | None) -> None:
    """torch.save through a temp file + rename: a failure (disk full) leaves the previous checkpoint."""
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except OSError as exc:
        kept = f"the previous checkpoint (epoch {previous}) is intact" if previous is not None else "no checkpoint was kept"
        full = " (disk full)" if exc.errno == errno.ENOSPC else ""
        raise SurgeonError(f"cannot write checkpoint {str(path)!r}{full}: {first_line(exc, 80)}; {kept}; "
                           "free space and rerun with resume=True") from None


def _write_logs(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """log.jsonl and log.csv with one row per epoch, rewritten whole (atomically) each epoch."""
    with atomic_path(run_dir / "log.jsonl") as tmp:
        tmp.write_text("".join(dumps(row) + "\n" for row in history))
    columns = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(run_dir / "log.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(history)


def _tensorboard(run_dir: Path) -> Any:
    if importlib.util.find_spec("tensorboard") is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / "tb"))


def _run_target(out: str | os.PathLike | None, resume: bool, overwrite: bool) -> Path | None:
    """The output file, checked: `resume` needs a checkpoint in its run folder, a new run refuses one."""
    target = check_output(out, overwrite=overwrite or resume) if out is not None else None
    ckpt_path = run_dir_for(target) / "checkpoint.pt" if target is not None else None
    if resume and (ckpt_path is None or not ckpt_path.is_file()):
        raise SurgeonError(f"resume=True: no checkpoint at {str(ckpt_path)!r}; start the run without resume=True")
    if ckpt_path is not None and ckpt_path.is_file() and not (resume or overwrite):
        raise SurgeonError(f"{str(ckpt_path)!r} holds an earlier run; pass resume=True to continue it or overwrite=True "
                           "to start over")
    return target


def _resume(run: _Run) -> None:
    """Continue from the run folder's checkpoint: refused if it is another model's or another recipe's."""
    path, r = run.ckpt_path, run.r
    state = torch.load(path, map_location=run.device, weights_only=False)
    if state["fingerprint"] != run.fingerprint:
        raise SurgeonError(f"checkpoint {str(path)!r} is from another model ({state['model']}); "
                           "resume with the same model or pass overwrite=True to start over")
    if state["recipe"] != r.to_dict() or state["seed"] != run.seed:
        diff = [k for k, v in r.to_dict().items() if state["recipe"].get(k) != v] or ["seed"]
        raise SurgeonError(f"checkpoint {str(path)!r} was made with another recipe ({', '.join(diff)} "
                           "differ); resume with the same options or pass overwrite=True to start over")
    run.net.load_state_dict(state["model_state"])
    run.opt.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    run.epoch, run.step, run.partial, run.history = state["epoch"], state["step"], state["partial"], state["history"]
    run.saved = run.epoch


def _check_snapshots(run: _Run) -> None:
    if run.snapshots and run.run_dir is None:
        raise SurgeonError("snapshots need a run folder: give out= as well")
    if not isinstance(run.snapshots, int) or run.snapshots < 0:
        raise SurgeonError(f"snapshots={run.snapshots!r} must be 0 (off) or a number of epochs")


def _open_folder(run: _Run, resume: bool) -> None:
    """TensorBoard, the run folder (an earlier run's snapshots cleared), the initial snapshot."""
    if run.run_dir is not None and run.main:
        run.writer = _tensorboard(run.run_dir)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            clear_snapshots(run.run_dir)  # an earlier run's snapshots would mix into this run's trajectory
    if run.epoch == 0 and run.step == 0:
        _snapshot(run, 0)


def _checkpoint(run: _Run, at_epoch: int, at_step: int, part: dict[str, float]) -> None:
    """checkpoint.pt (rank 0): the weights, optimiser, scaler and where the run stands."""
    if run.ckpt_path is None or not run.main:
        return
    state = {"fingerprint": run.fingerprint, "model": run.name, "recipe": run.r.to_dict(), "seed": run.seed,
             "epoch": at_epoch, "step": at_step, "partial": part, "history": run.history,
             "model_state": run.net.state_dict(), "optimizer": run.opt.state_dict(),
             "scaler": run.scaler.state_dict()}
    _write_checkpoint(run.ckpt_path, state, run.saved)
    run.saved = at_epoch


def _snapshot(run: _Run, at_epoch: int) -> None:
    """The trainable weights every `snapshots` epochs and at the last (`surgeon.trajectory`)."""
    if run.snapshots and run.main and (at_epoch % run.snapshots == 0 or at_epoch == run.r.total_epochs):
        write_snapshot(run.run_dir, run.net, at_epoch)


def _close_writer(run: _Run) -> None:
    if run.writer is not None:
        run.writer.close()
        run.writer = None
