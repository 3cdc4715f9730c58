"""Interrupts of the command line (issue 18, item 4): SIGTERM unwinds like Ctrl-C, so no temporary
file is left behind, and an interrupted command says so in one line (exit 130). Resuming a training
run bit for bit after a signal is tested in tests/test_training.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

#: A CLI run whose save blocks inside the atomic write (after the temp file is created), so that a
#: signal arrives while a partial output exists.
SLOW_SAVE = """
import sys, time
import surgeon.model.weights
real = surgeon.model.weights.save_file
def slow(tensors, path, metadata=None):
    real(tensors, path, metadata=metadata)
    print("writing", flush=True)
    time.sleep(60)
surgeon.model.weights.save_file = slow
from surgeon.cli.main import main
sys.argv = ["surgeon", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_a_save_leaves_no_temp_file_and_says_so(tmp_path, signum):
    out = tmp_path / "alt.safetensors"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, "alternate", "resnet18", "--stages", "c3",
                             "--input-size", "3,32,32", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a shell (xdist ignores SIGINT)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            time.sleep(0.05)
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), f"the save never started: {proc.communicate()}"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "a temporary or partial file was left"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted: no file was left half-written"), err


# ----------------------------------------------------------------------------------------------
# The build-up search: Ctrl-C inside a candidate's training step, then resume


def _after_forward(call: int, act):
    """A global forward hook that runs `act` after the whole model's training forward number `call`
    (BatchNorm statistics already updated, the optimiser step not yet taken)."""
    import torch

    seen = {"n": 0}

    def hook(module, args, output):
        if module.__class__.__name__ == "ResNet" and module.training:
            seen["n"] += 1
            if seen["n"] == call:
                act()

    return torch.nn.modules.module.register_module_forward_hook(hook)


def test_search_resumed_after_ctrl_c_inside_a_step_gives_the_uninterrupted_metrics(tmp_path):
    import torch
    from test_search import DIGITS, write

    import surgeon

    recipe = write(tmp_path, DIGITS)  # baseline and c2x1, one epoch of 2 steps each
    whole = surgeon.run_search(recipe, tmp_path / "whole").records
    handle = _after_forward(3, lambda: os.kill(os.getpid(), signal.SIGINT))  # c2x1, step 1 of 2
    try:
        with pytest.raises(KeyboardInterrupt):
            surgeon.run_search(recipe, tmp_path / "cut")
    finally:
        handle.remove()
    cut = next((tmp_path / "cut" / "candidates").glob("*/*.run/checkpoint.pt"), None)
    assert cut is not None and torch.load(cut, weights_only=False)["step"] == 1
    again = surgeon.run_search(recipe, tmp_path / "cut", run=surgeon.parallel.Run(resume=True)).records
    assert [r["name"] for r in again] == [r["name"] for r in whole] == ["baseline", "c2x1"]
    assert [r["runs"][0]["metrics"] for r in again] == [r["runs"][0]["metrics"] for r in whole]
    a, b = (surgeon.load(tmp_path / d / whole[1]["model"]).state_dict() for d in ("whole", "cut"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
