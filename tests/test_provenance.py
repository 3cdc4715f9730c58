"""The provenance record (`surgeon.provenance`): files of surgeon 0.1 still load, bit-identical."""

from pathlib import Path

import torch

import surgeon

DATA = Path(__file__).parent / "data"
V01 = DATA / "surgeon01_alternet.safetensors"


def test_surgeon01_file_loads_bit_identical():
    """A file written by surgeon 0.1 (tests/data/make_surgeon01_fixture.py) rebuilds to the same outputs."""
    ref = torch.load(DATA / "surgeon01_alternet_io.pt")
    model = surgeon.load(V01)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference was computed on one thread: the same summation order
    try:
        with torch.no_grad():
            y = model(ref["x"])
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(y, ref["y"])
    assert not model.training
