import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the test machine has no model hub
os.environ.setdefault("MPLBACKEND", "Agg")  # figures are files, as the CLI sets it
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
