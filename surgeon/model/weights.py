"""Weight files: reading the checkpoints researchers have, and surgeon's own files.

`read_state_dict` understands the checkpoint layouts researchers actually have on disk:
safetensors files, bare PyTorch state_dicts, and training checkpoints that keep the weights under
``state_dict`` / ``model`` (timm, torchvision references, Lightning-style), with the ``module.``
prefix of (Distributed)DataParallel and the ``_orig_mod.`` prefix of ``torch.compile`` stripped.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from surgeon.model import provenance
from surgeon.core.errors import SurgeonError, first_line
from surgeon.core.files import atomic_path, check_input, check_output

__all__ = ["read_state_dict", "load_weights", "save", "read_cfg", "read_weights"]

_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module")
_PREFIXES = ("module.", "_orig_mod.")


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Without the wrappers' prefixes, by torch's DDP helper (timm's `clean_state_dict` strips only
    ``module.``, not ``torch.compile``'s ``_orig_mod.``)."""
    for prefix in _PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            consume_prefix_in_state_dict_if_present(sd, prefix)
    return sd


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the weights in `path` as a flat ``{name: tensor}`` dict on the CPU.

    Accepts ``.safetensors`` and PyTorch pickles (``.pt``, ``.pth``, ``.pth.tar``, ``.bin``,
    ``.ckpt``), loaded with ``weights_only=True`` (``argparse.Namespace`` is allowed, as timm's
    training checkpoints store their arguments that way).
    """
    p = check_input(path, "weights file", "check the path given to weights=")
    if p.stat().st_size == 0:
        raise SurgeonError(f"weights file {str(p)!r} is empty; re-download or re-save it")
    with open(p, "rb") as f:
        head = f.read(8)
    is_zip_or_pickle = head[:2] == b"PK" or head[:1] == b"\x80"
    try:
        if p.suffix == ".safetensors" or not is_zip_or_pickle:
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


def _classifier_path(model: nn.Module) -> str | None:
    """The module path of the classifier: timm's ``pretrained_cfg["classifier"]``, else the last
    nn.Linear registered (torchvision's ``fc``, ``heads.head``, ``classifier.1`` ...)."""
    name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if isinstance(name, str):
        return name
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linear[-1] if linear else None


def load_weights(model: nn.Module, path: str | os.PathLike, *, what: str = "the model",
                 new_head: bool = False) -> nn.Module:
    """Load the weights in `path` into `model` in place and return it.

    Shapes must agree for every shared name, else a `SurgeonError` names the first offending
    tensors. With `new_head` (the model was built with its own class count, for fine-tuning), a
    mismatch confined to the classifier is allowed: the classifier keeps its fresh initialisation,
    with a warning, as timm does for pretrained weights. Missing and unexpected names are reported
    as a warning; a file that shares no name with the model is refused as another architecture.
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
    head = _classifier_path(model) if new_head else None
    fresh: list[str] = []  # classifier tensors left at their initialisation
    if bad and head is not None and all(k.startswith(head + ".") for k in bad):
        warnings.warn(f"weights {Path(path).name}: classifier {head} not loaded (file {list(sd[bad[0]].shape)} vs "
                      f"model {list(own[bad[0]].shape)}): a new head, freshly initialised", stacklevel=2)
        fresh, bad = bad, []
    if bad:
        details = ", ".join(f"{k} (file {list(sd[k].shape)} vs model {list(own[k].shape)})" for k in bad[:3])
        hint = ""
        if any(k.endswith(("fc.weight", "head.weight", "classifier.weight", "head.fc.weight")) for k in bad):
            hint = " or num_classes= to match the file's classifier"
        raise SurgeonError(
            f"weights file {str(path)!r} does not fit {what}: shape mismatch for {details}"
            f"{' and more' if len(bad) > 3 else ''}; pick the matching model{hint}"
        )
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    model.load_state_dict({k: sd[k] for k in shared if k not in fresh}, strict=False)
    if missing or unexpected:
        warnings.warn(
            f"weights {Path(path).name}: {len(missing)} missing {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}",
            stacklevel=2,
        )
    return model


# ----------------------------------------------------------------------------------------------
# Edited models: one .safetensors file holding the weights and the recipe that rebuilds them

def save(model: nn.Module, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `model` to one ``.safetensors`` file whose metadata holds its provenance record (the
    base model spec and constructor arguments, the ordered passes with their arguments, the
    training recipe: `surgeon.provenance`) and the surgeon version. `surgeon.load` rebuilds it
    without user code. The write is atomic (temp file + rename).
    """
    target = check_output(path, overwrite=overwrite)
    metadata = provenance.to_metadata(model)
    seen: dict[int, str] = {}
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        key = t.untyped_storage().data_ptr() if t.numel() else id(t)
        tensors[name] = t.clone() if key in seen else t  # safetensors refuses shared storage
        seen.setdefault(key, name)
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return target


def read_cfg(path: str | os.PathLike) -> provenance.SurgeonCfg:
    """The provenance record stored in a file written by `save`."""
    p = check_input(path, "model file")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any reader failure: not a usable file
        raise SurgeonError(f"{str(p)!r} is not a readable .safetensors file ({first_line(exc, 80)}); "
                           "re-create it with surgeon alternate / surgeon.save") from None
    return provenance.from_metadata(meta, repr(str(p)))


def read_weights(path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load the tensors of a file written by `save` into its rebuilt `model`, strictly."""
    try:
        model.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    except Exception as exc:  # noqa: BLE001 - a truncated file, or a recipe that no longer matches
        raise SurgeonError(f"cannot load the weights of {str(path)!r} into its rebuilt model ({first_line(exc, 100)}); "
                           "the file is damaged or from another surgeon version") from None
    return model


def _read_recipe(path: str | os.PathLike) -> dict:
    """surgeon 0.1's dict form of `read_cfg` (deprecated: "recipe" now means a training recipe)."""
    return read_cfg(path).stored()

