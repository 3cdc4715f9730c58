"""Reading weight files and writing outputs safely.

`read_state_dict` understands the checkpoint layouts researchers actually have on disk:
safetensors files, bare PyTorch state_dicts, and training checkpoints that keep the weights under
``state_dict`` / ``model`` (timm, torchvision references, Lightning-style), with the ``module.``
prefix of (Distributed)DataParallel and the ``_orig_mod.`` prefix of ``torch.compile`` stripped.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .errors import SurgeonError, first_line

__all__ = ["read_state_dict", "load_weights", "atomic_path"]

_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module")
_PREFIXES = ("module.", "_orig_mod.")


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the weights in `path` as a flat ``{name: tensor}`` dict on the CPU.

    Accepts ``.safetensors`` and PyTorch pickles (``.pt``, ``.pth``, ``.pth.tar``, ``.bin``,
    ``.ckpt``), loaded with ``weights_only=True`` (``argparse.Namespace`` is allowed, as timm's
    training checkpoints store their arguments that way).
    """
    p = Path(path)
    if not p.is_file():
        raise SurgeonError(f"weights file {str(p)!r} does not exist; check the path given to --weights")
    if p.stat().st_size == 0:
        raise SurgeonError(f"weights file {str(p)!r} is empty; re-download or re-save it")
    with open(p, "rb") as f:
        head = f.read(8)
    is_zip_or_pickle = head[:2] == b"PK" or head[:1] == b"\x80"
    try:
        if p.suffix == ".safetensors" or not is_zip_or_pickle:
            from safetensors.torch import load_file

            obj = load_file(str(p), device="cpu")
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every reader failure means the same thing to the user
        raise SurgeonError(
            f"cannot read weights file {str(p)!r}: not a complete safetensors or PyTorch checkpoint "
            f"({first_line(exc, 100)}); re-download it or re-save it with torch.save(model.state_dict())"
        ) from None
    for key in _NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SurgeonError(
            f"weights file {str(p)!r} holds no state_dict (expected name -> tensor, alone or under "
            f"one of {', '.join(_NESTED_KEYS)}); save one with torch.save(model.state_dict(), path)"
        )
    return _strip_prefixes(dict(obj))


def load_weights(model: nn.Module, path: str | os.PathLike, *, what: str = "the model") -> nn.Module:
    """Load the weights in `path` into `model` in place and return it.

    Shapes must agree for every shared name, else a `SurgeonError` names the first offending
    tensors. Missing and unexpected names are reported as a warning; a file that shares no name
    with the model is refused as another architecture.
    """
    sd = read_state_dict(path)
    own = model.state_dict()
    shared = [k for k in sd if k in own]
    if not shared:
        raise SurgeonError(
            f"weights file {str(path)!r} shares no tensor name with {what} (e.g. file has "
            f"{next(iter(sd))!r}, model has {next(iter(own))!r}): it is for another architecture; "
            "pick the matching model name"
        )
    bad = [k for k in shared if sd[k].shape != own[k].shape]
    if bad:
        details = ", ".join(f"{k} (file {list(sd[k].shape)} vs model {list(own[k].shape)})" for k in bad[:3])
        hint = ""
        if any(k.endswith(("fc.weight", "head.weight", "classifier.weight", "head.fc.weight")) for k in bad):
            hint = " or --num-classes to match the file's classifier"
        raise SurgeonError(
            f"weights file {str(path)!r} does not fit {what}: shape mismatch for {details}"
            f"{' and more' if len(bad) > 3 else ''}; pick the matching model{hint}"
        )
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    model.load_state_dict({k: sd[k] for k in shared}, strict=False)
    if missing or unexpected:
        warnings.warn(
            f"weights {Path(path).name}: {len(missing)} missing {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}",
            stacklevel=2,
        )
    return model


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A failure or interruption leaves no partial output file behind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
