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


def invoke(*args, **kwargs):
    """Run the `surgeon` app in this process (typer's CliRunner, no torch cold start):
    ``invoke("inspect", "test_resnet")`` -> click's Result (exit_code, output, exception). A
    SurgeonError comes back as ``result.exception`` (the entry point `main` makes it exit 2; tests of
    exit codes and stderr use `tests/test_cli.surgeon`, which runs `main`)."""
    from typer.testing import CliRunner

    from surgeon.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True, **kwargs)


@pytest.fixture
def cli_invoke():
    """`invoke` as a fixture."""
    return invoke


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
