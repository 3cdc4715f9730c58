import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the test machine has no model hub
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
