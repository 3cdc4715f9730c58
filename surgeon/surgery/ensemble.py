"""Ensembles of classifiers (the original code's ``models/ensemble.py``).

    ens = surgeon.ensemble([surgeon.load("a.safetensors"), surgeon.load("b.safetensors")])
    surgeon.evaluate(ens, loader)            # usable wherever a model is
    surgeon.save(ens, "ens.safetensors")     # one file; its recipe lists the members
    surgeon.load("ens.safetensors")          # rebuilt without user code

The output is log of the members' mean softmax, in the logsumexp form of the original:
f(x) = logsumexp_m log_softmax(f_m(x)) - log M, so softmax(f(x)) = (1/M) sum_m softmax(f_m(x)).

Inputs: the ensemble takes pixels in [0, 1] (its ``pretrained_cfg`` has mean 0 and std 1, which
`surgeon.data` reads) and normalises them for each member with that member's own mean / std,
x_m = (x - mu_m) / s_m, so every member sees what it was trained on and the member order changes
nothing. The resize and crop are shared: the members' interpolation and crop fraction when they all
agree, else bilinear resizing to the input size without a crop (with a warning), for any order.
Members must share the input size and the class count (else a `SurgeonError`); the size is recorded
in a saved ensemble, so `surgeon.load` uses it at that size.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from surgeon.model import provenance
from surgeon.core.errors import SurgeonError
from surgeon.model.outputs import logits_of
from surgeon.model.sizes import input_size_of
from surgeon.surgery.loading import BUILDERS, load_model
from surgeon.surgery.passes import apply_passes
from surgeon.model.runtime import check_classifier, model_device, restored_modes

__all__ = ["Ensemble", "ensemble", "ENSEMBLE_SPEC", "from_recipe"]

ENSEMBLE_SPEC = "surgeon:ensemble"  # the base spec of a saved ensemble's recipe


def _data_config(model: nn.Module) -> dict[str, Any]:
    from timm.data import resolve_model_data_config

    return resolve_model_data_config(model)


def _shared_preprocessing(configs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The resize and crop every member gets: theirs when they agree, else bilinear without a crop
    (a rule that does not depend on the member order)."""
    shared = {}
    for key, fallback in (("interpolation", "bilinear"), ("crop_pct", 1.0), ("crop_mode", "center")):
        values = {c.get(key, fallback) for c in configs}
        if len(values) > 1:
            warnings.warn(f"the ensemble's members differ in {key} ({', '.join(sorted(map(str, values)))}): "
                          f"all get {key}={fallback!r}", stacklevel=3)
        shared[key] = values.pop() if len(values) == 1 else fallback
    return shared


def _num_outputs(model: nn.Module, size: tuple[int, ...]) -> int:
    """The classifier's output size: one forward on zeros, in eval mode, flags restored."""
    x = torch.zeros(1, *size, device=model_device(model))
    try:
        with restored_modes(model, "eval"), torch.no_grad():
            out = logits_of(model(x))
    except Exception as exc:  # noqa: BLE001 - the member does not run at the ensemble's size
        raise SurgeonError(f"an ensemble member does not run on a {list(size)} input ({str(exc).splitlines()[0][:100]}); "
                           "build every member for the same input size") from None
    if out.dim() != 2:
        raise SurgeonError(f"an ensemble member returns shape {list(out.shape)}, not (batch, classes); "
                           "ensemble classifiers")
    return int(out.shape[1])


class Ensemble(nn.Module):
    """log (1/M) sum_m softmax(f_m(x)) over the members f_1 .. f_M (see the module docstring).

    Attributes ``num_classes`` and ``pretrained_cfg`` (the first member's) let timm / surgeon
    helpers treat the ensemble as one classifier."""

    def __init__(self, members: Sequence[nn.Module], input_size: Sequence[int] | None = None):
        super().__init__()
        members = list(members)
        if len(members) < 1:
            raise SurgeonError("an ensemble needs at least one member; give two or more models")
        for m in members:
            check_classifier(m)  # an encoder's features are no class probabilities
        sizes = [input_size_of(m, input_size) for m in members]
        if len(set(sizes)) > 1:
            raise SurgeonError("the members take different input sizes (" + ", ".join("x".join(map(str, s)) for s in sizes)
                               + "); build them for one size (img_size= / input_size=) before ensembling")
        classes = [_num_outputs(m, sizes[0]) for m in members]
        if len(set(classes)) > 1:
            raise SurgeonError(f"the members have different class counts ({', '.join(map(str, classes))}); "
                               "ensemble models of one task (same num_classes=)")
        self.members = nn.ModuleList(members)
        self.num_classes = classes[0]
        self.input_size = sizes[0]
        configs = [_data_config(m) for m in members]
        channels = sizes[0][0]
        self.pretrained_cfg = {**_shared_preprocessing(configs), "input_size": sizes[0],
                               "mean": (0.0,) * channels, "std": (1.0,) * channels}
        mean = [_per_channel(c["mean"], channels) for c in configs]  # x_m = (x - mu_m) / s_m
        std = [_per_channel(c["std"], channels) for c in configs]
        self.register_buffer("mean", torch.tensor(mean).view(len(members), 1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(len(members), 1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i, m in enumerate(self.members):
            xi = (x - self.mean[i].to(x.dtype)) / self.std[i].to(x.dtype)
            outs.append(logits_of(m(xi)).float().log_softmax(-1))
        return torch.logsumexp(torch.stack(outs), 0) - math.log(len(outs))


def _per_channel(values: Sequence[float], channels: int) -> list[float]:
    """A mean / std for `channels` channels (a one-channel model: the mean of an RGB config's)."""
    values = [float(v) for v in values]
    return values if len(values) == channels else [sum(values) / len(values)] * channels


def _member_recipe(m: nn.Module, source: str | None) -> dict[str, Any] | None:
    """A member's provenance record (base and passes), None when it cannot be rebuilt."""
    cfg = provenance.cfg_of(m)
    if not cfg.buildable or any(p.get("pass") == "opaque" for p in cfg.passes):
        return None
    entry = {"base": cfg.base, "passes": [dict(p) for p in cfg.passes]}
    if source:
        entry["source"] = source
    return entry


def ensemble(members: Sequence[nn.Module | str], *, input_size: Sequence[int] | None = None,
             sources: Sequence[str | None] | None = None) -> Ensemble:
    """An `Ensemble` of `members`: models, or names / surgeon files given to `surgeon.load_model`.
    The members are copied (the inputs are never changed). When every member has a recipe
    (built by `surgeon.load_model`, edited by registered passes), the ensemble can be saved with
    `surgeon.save`: its recipe embeds each member's, with the file it came from (a name given as a
    member, or ``sources[i]``)."""
    if len(members) < 2:
        raise SurgeonError(f"an ensemble needs two or more members, got {len(members)}; a single model is used as it "
                           "is (no ensemble file needed)")
    built, names = [], []
    for m in members:
        if isinstance(m, str):
            built.append(load_model(m))
            names.append(m)
        elif isinstance(m, nn.Module):
            built.append(copy.deepcopy(m))
            names.append(None)
        else:
            raise SurgeonError(f"an ensemble member is a {type(m).__name__}; give models or model names / files")
    ens = Ensemble(built, input_size)
    names = [given or found for given, found in zip(sources or [None] * len(built), names)]
    recipes = [_member_recipe(m, s) for m, s in zip(built, names)]
    if all(r is not None for r in recipes):
        provenance.record_build(ens, ENSEMBLE_SPEC, members=recipes, input_size=list(ens.input_size))
    return ens.eval()


@BUILDERS.register(ENSEMBLE_SPEC)
def from_recipe(base: dict[str, Any]) -> Ensemble:
    """Rebuild the ensemble described by a saved recipe's ``base`` (its members' architectures and
    passes; the weights are loaded by `surgeon.load` afterwards)."""
    members = []
    for r in base.get("members") or []:
        spec = dict(r["base"])
        members.append(apply_passes(load_model(spec.pop("spec"), **spec), r["passes"]))
    ens = Ensemble(members, base.get("input_size"))
    args = {k: v for k, v in base.items() if k != "spec"}
    provenance.record_build(ens, ENSEMBLE_SPEC, **args)
    return ens.eval()
