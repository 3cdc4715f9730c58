"""Layout and grid detection: whether a block output is NCHW, NHWC, tokens (NLC) or windows of
tokens (BTNC), its (H, W) grid and its prefix tokens, from the shape and the input's aspect ratio."""

from __future__ import annotations

import math
from collections.abc import Sequence


def _spatial(shape: Sequence[int], img_hw: tuple[int, int], prefix_hint: int) -> tuple[str | None, tuple[int, int] | None, int]:
    """Guess the layout of a block output: ``(layout, (H, W), prefix tokens)``.

    A 4-D tensor is NCHW or NHWC, whichever pair of dims has the input's aspect ratio (NCHW on a
    tie); a 3-D tensor (B, N, C) is a token sequence when N minus a few prefix tokens factors into
    a grid of that aspect ratio.
    """
    H, W = img_hw

    def plausible(h: int, w: int) -> bool:
        return 1 <= h <= H and 1 <= w <= W and abs(math.log((H / h) / (W / w))) < 0.25

    if len(shape) == 4:
        for layout, hw in (("NCHW", (shape[2], shape[3])), ("NHWC", (shape[1], shape[2]))):
            if plausible(*hw):
                return layout, hw, 0
        layout, hw, _ = _spatial((shape[0], shape[1] * shape[2], shape[3]), img_hw, 0)
        # (B, windows, tokens per window, C): NesT's nested blocks
        return ("BTNC", hw, 0) if layout else (None, None, 0)
    if len(shape) == 3 and shape[1] > 1:  # (B, 1, C) is a lone class token (CaiT), not a map
        candidates = []  # (aspect error, preference, prefix, h, w): the best-fitting grid wins
        for rank, p in enumerate(dict.fromkeys([prefix_hint, *range(9)])):
            tokens = shape[1] - p
            h = max(1, round(math.sqrt(max(tokens, 1) * H / W)))
            for hh in (h - 1, h, h + 1):
                if tokens >= 1 and hh >= 1 and tokens % hh == 0 and plausible(hh, tokens // hh):
                    candidates.append((round(abs(math.log((H / hh) / (W / (tokens // hh)))), 6), rank, p, hh, tokens // hh))
        if candidates:
            _, _, p, hh, ww = min(candidates)
            return "NLC", (hh, ww), p
    return None, None, 0
