"""The provenance record of a model: how to rebuild it and what was done to it.

In the spirit of timm's ``pretrained_cfg``, every model surgeon creates or edits carries one
`SurgeonCfg` as ``model.surgeon_cfg``:

- ``spec`` and ``model_args``: the `surgeon.load_model` call that builds the base model (a timm or
  ``tv:`` name; ``num_classes``, ``img_size`` and constructor arguments);
- ``passes``: the surgery passes applied since, in order, each ``{"pass": name, **arguments}``
  (replayed by `surgeon.passes.apply_passes`; the arguments include the ``input_size`` the pass
  was made and checked at);
- ``training``: how the weights were trained (`surgeon.train`: its recipe, data, seed, epochs).

This module is the one place that reads and writes the record, on the model and in a file's
safetensors metadata (key ``"surgeon"``, JSON ``{"version", "base", "passes", "training"}``, the
layout of surgeon 0.1, so files of every version load).

    cfg = surgeon.provenance.cfg_of(model)     # an empty record for a foreign model
    cfg.spec, [p["pass"] for p in cfg.passes], cfg.input_size
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from surgeon.core.errors import SurgeonError
from surgeon.core.version import __version__

__all__ = ["SurgeonCfg", "META_KEY", "cfg_of", "has_cfg", "set_cfg", "record_build", "record_pass",
           "record_training", "to_metadata", "from_metadata"]

#: The safetensors metadata key of the record.
META_KEY = "surgeon"
ATTR = "surgeon_cfg"


def _size(value: Any) -> tuple[int, int, int] | None:
    """A recorded (C, H, W), None when absent or malformed."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        size = tuple(int(s) for s in value)
    except (TypeError, ValueError):
        return None
    return size if len(size) == 3 and min(size) >= 1 else None  # type: ignore[return-value]


@dataclass(frozen=True)
class SurgeonCfg:
    """How a model was built, edited and trained (see the module docstring). Immutable: a pass
    gives the new model a new record (`with_pass`)."""

    spec: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    passes: tuple[dict[str, Any], ...] = ()
    training: dict[str, Any] | None = None
    version: str = __version__  # the surgeon version that wrote the record (a file's, once read)

    @property
    def buildable(self) -> bool:
        """Whether `surgeon.load_model` can rebuild the base model (it was created by name)."""
        return bool(self.spec)

    @property
    def base(self) -> dict[str, Any]:
        """The `load_model` arguments: ``{"spec": ..., "num_classes": ..., ...}`` (empty if foreign)."""
        return {"spec": self.spec, **self.model_args} if self.spec else {}

    @property
    def input_size(self) -> tuple[tuple[int, int, int], str] | None:
        """The recorded (C, H, W) to use the model at, and where it comes from: ``"trained"`` (the
        size `surgeon.train` used), else ``"edited"`` (the size of the last pass); None if neither."""
        trained = self.training or {}
        size = _size(trained.get("input_size")) or _size((trained.get("recipe") or {}).get("input_size"))
        if size is not None:
            return size, "trained"
        for p in reversed(self.passes):
            size = _size(p.get("input_size")) if isinstance(p, Mapping) else None
            if size is not None:
                return size, "edited"
        size = _size(self.model_args.get("input_size"))  # a composite (an ensemble) built at a size
        return (size, "edited") if size is not None else None

    def with_pass(self, entry: Mapping[str, Any]) -> SurgeonCfg:
        """This record with one more pass (an ``{"pass": "opaque"}`` entry marks an edit made with a
        module object, which no file can rebuild)."""
        return replace(self, passes=(*self.passes, copy.deepcopy(dict(entry))))

    def with_training(self, training: Mapping[str, Any]) -> SurgeonCfg:
        return replace(self, training=copy.deepcopy(dict(training)))

    def to_dict(self) -> dict[str, Any]:
        """The metadata layout (surgeon 0.1's): version, base, passes and, if trained, training."""
        out: dict[str, Any] = {"version": __version__, "base": self.base, "passes": [dict(p) for p in self.passes]}
        if self.training:
            out["training"] = dict(self.training)
        return out

    def stored(self) -> dict[str, Any]:
        """`to_dict` with the version that wrote the record (a file's own, once read)."""
        return {**self.to_dict(), "version": self.version}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SurgeonCfg:
        base = dict(d["base"])
        spec = base.pop("spec")
        passes = d["passes"]
        if not isinstance(spec, str) or not isinstance(passes, list) or not all(isinstance(p, dict) for p in passes):
            raise TypeError("malformed record")
        return cls(spec, base, tuple(passes), d.get("training") or None, str(d.get("version", "0.1.0")))


def cfg_of(model: nn.Module) -> SurgeonCfg:
    """The model's record; an empty one (nothing buildable) for a model surgeon did not create."""
    cfg = getattr(model, ATTR, None)
    return cfg if isinstance(cfg, SurgeonCfg) else SurgeonCfg()


def has_cfg(model: nn.Module) -> bool:
    """Whether `model` can be rebuilt by name (it was created by `surgeon.load_model`)."""
    return cfg_of(model).buildable


def set_cfg(model: nn.Module, cfg: SurgeonCfg) -> nn.Module:
    object.__setattr__(model, ATTR, cfg)  # a plain attribute: not a submodule, parameter or buffer
    return model


def record_build(model: nn.Module, spec: str, **model_args: Any) -> nn.Module:
    """Record that `model` is ``load_model(spec, **model_args)``."""
    return set_cfg(model, SurgeonCfg(spec, dict(model_args)))


def record_pass(original: nn.Module, new: nn.Module, entry: Mapping[str, Any] | None) -> nn.Module:
    """Give `new` (the result of a pass on `original`) the original's record plus `entry`
    (None: an edit no record can rebuild)."""
    return set_cfg(new, cfg_of(original).with_pass(entry if entry is not None else {"pass": "opaque"}))


def record_training(model: nn.Module, training: Mapping[str, Any]) -> nn.Module:
    """Record how `model`'s weights were trained (`surgeon.train`)."""
    return set_cfg(model, cfg_of(model).with_training(training))


def to_metadata(model: nn.Module) -> dict[str, str]:
    """The safetensors metadata that lets `surgeon.load` rebuild `model`; refuses a model that
    cannot be rebuilt (not created by name, or edited with a module object)."""
    cfg = cfg_of(model)
    if not cfg.buildable:
        raise SurgeonError("this model has no recipe: create it with surgeon.load_model(...) so it can be rebuilt")
    if any(p.get("pass") == "opaque" for p in cfg.passes):
        raise SurgeonError("the model was edited with a module object or factory, which a recipe cannot rebuild; "
                           "use a registered block name (surgeon.layers.registered())")
    try:
        text = json.dumps(cfg.to_dict(), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SurgeonError(f"the model's record cannot be written as JSON ({exc}); give passes plain arguments "
                           "(numbers, strings, lists, dicts)") from None
    return {META_KEY: text}


def from_metadata(meta: Mapping[str, str] | None, where: str) -> SurgeonCfg:
    """The record in a file's safetensors metadata (`where` names the file in messages)."""
    if not meta or META_KEY not in meta:
        raise SurgeonError(f"{where} was not saved by surgeon (no recipe in its metadata): it holds weights only; "
                           "load it as the weights of the model it was trained as (`surgeon inspect NAME --weights "
                           "FILE`, or load_model(NAME) with these weights)")
    try:
        return SurgeonCfg.from_dict(json.loads(meta[META_KEY]))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SurgeonError(f"{where} has a damaged surgeon recipe; re-create the file") from None


def model_args_of(model: nn.Module) -> dict[str, Any]:
    """The `load_model` arguments of `model` (``{"spec": ..., ...}``; empty for foreign models)."""
    return cfg_of(model).base


def sizes(value: Sequence[int] | None) -> tuple[int, int, int] | None:
    """A (C, H, W) read from a record (None when absent or malformed)."""
    return _size(value)
