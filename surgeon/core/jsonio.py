"""One JSON writer for the project: strict JSON (``null`` for NaN and infinities), plain Python numbers.

Every JSON file or line surgeon writes (results, logs, recipes, run records) goes through `dumps`,
so no file ever holds the bare ``NaN`` / ``Infinity`` tokens that strict JSON readers reject.
Importing this module does not import torch or numpy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

__all__ = ["dumps", "plain"]


def plain(obj: Any) -> Any:
    """`obj` as JSON-ready Python: NaN and +-inf -> None; numpy / torch scalars and arrays -> numbers
    and lists (by their ``tolist``); tuples and sets -> lists; paths -> strings; mapping keys -> strings."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None  # float(): numpy.float64 is a float too
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [plain(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    tolist = getattr(obj, "tolist", None)  # numpy scalars and arrays, torch tensors
    if callable(tolist):
        return plain(tolist())
    item = getattr(obj, "item", None)
    if callable(item):
        return plain(item())
    return obj  # left to json's `default`


def dumps(obj: Any, **kwargs: Any) -> str:
    """`json.dumps` of `plain(obj)`, refusing NaN (none is left). Keyword arguments as for `json.dumps`."""
    return json.dumps(plain(obj), allow_nan=False, **kwargs)
