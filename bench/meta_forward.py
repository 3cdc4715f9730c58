"""A forward on the meta device (shapes only), as `surgeon.graph` and every pass's shape check run
it, with and without `on_meta`'s normalisations answered by shape (issue #22, item 1): BatchNorm's
meta kernel is a Python decomposition of some 20 prims.

    python bench/meta_forward.py --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import timm
import torch

from surgeon.model import runtime

MODELS = ("resnet50", "vit_small_patch16_224", "convnext_tiny", "efficientnet_b0", "swin_tiny_patch4_window7_224")


def meta_forward_ms(model: torch.nn.Module, norms_by_shape: bool) -> float:
    x = torch.empty(1, 3, 224, 224, device="meta")
    table = runtime._SHAPE_KEEPING if norms_by_shape else {}
    with mock.patch.dict(runtime._SHAPE_KEEPING, table, clear=True), torch.no_grad(), runtime.on_meta(model):
        start = time.perf_counter()
        model(x)
        return 1000 * (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    for name in MODELS:
        m = timm.create_model(name).eval()
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeat + 1):  # the first round warms up
            for mode in (False, True):
                times[mode].append(meta_forward_ms(m, mode))
        a, b = (statistics.median(times[k][1:]) for k in (False, True))
        print(f"{name:32s} decomposed {a:6.1f} ms   by shape {b:6.1f} ms   {a / b:4.1f}x")


if __name__ == "__main__":
    main()
