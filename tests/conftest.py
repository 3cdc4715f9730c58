import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the test machine has no model hub
os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files, as the CLI sets it
# torch threads per test process: the cores shared among pytest-xdist's workers (`make test` runs
# one per core). Oversubscribed OpenMP threads stall each other on a small machine (a Hessian-vector
# product measured at 0.07 s alone took 4.8 s beside another busy process), so the subprocesses a
# test starts get the same share through OMP_NUM_THREADS.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // _WORKERS))
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)


@pytest.fixture
def cli_invoke():
    """Run the `surgeon` command in this process (typer's CliRunner, no torch cold start):
    ``cli_invoke("inspect", "test_resnet")`` -> click's Result (exit_code, output, exception)."""
    from typer.testing import CliRunner

    from surgeon.cli.main import app

    runner = CliRunner()
    return lambda *args, **kwargs: runner.invoke(app, [str(a) for a in args], catch_exceptions=True, **kwargs)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
