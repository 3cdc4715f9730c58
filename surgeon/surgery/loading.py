"""Creating models by name: timm names, torchvision names (``tv:`` prefix), local weights, the hub.

    model = load_model("resnet50")                                  # timm, random init
    model = load_model("tv:resnet50", weights="resnet50.pth")      # torchvision + local file
    model = load_model("vit_tiny_patch16_224", pretrained=True)    # hub (online or warm cache)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

from torch import nn

from surgeon.core import checks
from surgeon.model import provenance
from surgeon.core.errors import SurgeonError, closest, first_line
from surgeon.model.weights import load_weights, read_cfg, read_weights
from surgeon.model.sizes import TV_PREFIX
from surgeon.surgery.alternet import ALTERNETS, alternate
from surgeon.surgery.passes import apply_passes
from surgeon.core.registry import Registry

__all__ = ["load_model", "list_models", "model_spec",
           "load", "alter_resnet50"]


@functools.cache
def _tv_names() -> tuple[str, ...]:
    import torchvision.models as tvm

    return tuple(tvm.list_models(module=tvm))


@functools.cache
def _timm_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def list_models(filter: str = "*") -> list[str]:
    """Model names `load_model` builds, matching the glob `filter`: timm's names, then torchvision's
    with the ``tv:`` prefix (``surgeon.list_models("resnet1*")``). ``hf:`` names are any
    transformers image classifier (a hub id or a ``save_pretrained`` folder), so they are not listed."""
    import fnmatch

    names = [*_timm_names(), *(TV_PREFIX + n for n in _tv_names())]
    return [n for n in names if fnmatch.fnmatch(n, filter)]


def _unknown(spec: str) -> SurgeonError:
    pool = [TV_PREFIX + n for n in _tv_names()] + list(_timm_names())
    hints = closest(spec, pool) or closest(spec.removeprefix(TV_PREFIX), pool)
    hint = f"did you mean {', '.join(hints)}?" if hints else "see timm.list_models() or 'tv:' + torchvision names"
    return SurgeonError(f"unknown model {spec!r}: {hint}")


def _create_tv(name: str, num_classes: int | None, pretrained: bool, img_size: int | None, extra: dict) -> nn.Module:
    import torchvision.models as tvm

    if name not in _tv_names():
        raise _unknown(TV_PREFIX + name)
    kwargs: dict = dict(extra)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if img_size is not None and name.startswith("vit_"):  # other torchvision nets take any size
        kwargs["image_size"] = img_size
    if pretrained:
        weights = tvm.get_model_weights(name).DEFAULT
        if num_classes is not None and num_classes != len(weights.meta["categories"]):
            raise SurgeonError(
                f"pretrained tv:{name} has {len(weights.meta['categories'])} classes, not {num_classes}; "
                "drop num_classes= or load the backbone with weights= and replace the head"
            )
        kwargs.pop("num_classes", None)
        try:
            return tvm.get_model(name, weights=weights, **kwargs)
        except Exception as exc:  # noqa: BLE001 - torch.hub raises URLError, OSError, RuntimeError...
            raise SurgeonError(
                f"cannot fetch pretrained weights for tv:{name} ({first_line(exc, 80)}); offline? "
                "pass a local file with weights="
            ) from None
    return tvm.get_model(name, **kwargs)


def _create_timm(name: str, num_classes: int | None, pretrained: bool, img_size: int | None, extra: dict) -> nn.Module:
    import timm

    if not timm.is_model(name) and name.split(".")[0] not in _timm_names():
        raise _unknown(name)
    kwargs: dict = dict(extra)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if img_size is not None:
        kwargs["img_size"] = img_size
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        if "img_size" in str(exc):  # convolutional nets take any input size: ignore the option
            return _create_timm(name, num_classes, pretrained, None, extra)
        raise SurgeonError(f"{name} does not take these arguments ({first_line(exc, 100)})") from None
    except (OSError, RuntimeError, ValueError) as exc:
        if not pretrained:
            raise
        raise SurgeonError(
            f"cannot fetch pretrained weights for {name} from the hub ({first_line(exc, 80)}); offline? "
            "pass a local file with weights=, or set HF_HUB_OFFLINE=1 with a warm cache"
        ) from None


def model_spec(model: nn.Module) -> dict:
    """The arguments `load_model` was called with, stored on the model (empty for foreign models)."""
    return provenance.cfg_of(model).base


def load_model(
    spec: str,
    *,
    num_classes: int | None = None,
    weights: str | os.PathLike | None = None,
    pretrained: bool = False,
    img_size: int | None = None,
    **model_kwargs,
) -> nn.Module:
    """Create a classifier from `spec` in eval mode.

    Args:
        spec: a timm name (``resnet50``, ``vit_tiny_patch16_224``), a torchvision name with the
            ``tv:`` prefix (``tv:resnet50``), a transformers image classifier with the ``hf:``
            prefix (hub id or ``save_pretrained`` directory: `surgeon.hf`), or a ``.safetensors``
            file written by `surgeon.save`.
        num_classes: classifier size; the architecture's default when None.
        weights: a local weight file (see `surgeon.io.read_state_dict`) loaded after creation;
            with `num_classes` given, a classifier of another size in the file is not loaded
            (fine-tuning: the new head keeps its initialisation, with a warning).
        pretrained: fetch the registry's pretrained weights through the hub, as timm/torchvision do.
        img_size: input resolution for models whose shape depends on it (ViTs); ignored by CNNs.
        model_kwargs: further constructor arguments (e.g. ``layers=(3, 4, 6, 4)`` for a timm
            ResNet-V2), recorded in the recipe of saved models.
    """
    checks.args(num_classes=num_classes, img_size=img_size)
    if not isinstance(spec, str) or not spec.strip():
        raise SurgeonError("model name is empty: give a timm name like resnet50 or tv:resnet50")
    spec = spec.strip()
    if weights is not None and pretrained:
        raise SurgeonError("give either weights= or pretrained=True, not both")
    if spec.endswith(".safetensors") and Path(spec).exists() and weights is None and not pretrained:
        _check_against_record(spec, read_cfg(spec), num_classes=num_classes, img_size=img_size, **model_kwargs)
        return load(spec)  # a model saved by surgeon: rebuilt from its recipe, used as saved
    if Path(spec).suffix in {".safetensors", ".pt", ".pth", ".tar", ".bin", ".ckpt"}:
        raise SurgeonError(
            f"{spec!r} is a weight file, not a model name: give the architecture and the file, "
            f"e.g. 'resnet50 weights={spec}'"
        )
    if spec.startswith(TV_PREFIX):
        model = _create_tv(spec[len(TV_PREFIX):], num_classes, pretrained, img_size, model_kwargs)
    elif spec.startswith("hf:"):  # transformers, imported only here (surgeon.hf)
        from surgeon.model import hf

        model, model_kwargs = hf.create(spec[len(hf.HF_PREFIX):], num_classes, pretrained, img_size, model_kwargs)
    else:
        model = _create_timm(spec, num_classes, pretrained, img_size, model_kwargs)
    if weights is not None:
        load_weights(model, weights, what=spec, new_head=num_classes is not None)
    provenance.record_build(model, spec, num_classes=num_classes, img_size=img_size, **model_kwargs)
    if weights is not None:
        _keep_training_record(model, weights)
    return model.eval()


def _check_against_record(path: str, cfg: provenance.SurgeonCfg, **given) -> None:
    """Refuse a `load_model` argument that contradicts what the surgeon file at `path` records (a
    saved model is used as saved: its classes, size and constructor arguments)."""
    base = cfg.base
    for name, value in given.items():
        if value is None or base.get(name, value) == value:
            continue
        recorded = "the architecture's default" if base.get(name) is None else repr(base.get(name))
        raise SurgeonError(f"{Path(path).name} records {name}={recorded}, not {value!r}: drop {name}= "
                           "(a saved model is used as saved) or build the architecture by name with weights=")


def _keep_training_record(model: nn.Module, weights: str | os.PathLike) -> None:
    """A surgeon file given as weights brings what it records about its weights: the training
    record (and so the input size it was trained at), so the model is used as trained."""
    if not str(weights).endswith(".safetensors"):
        return
    try:
        cfg = read_cfg(weights)
    except SurgeonError:
        return  # plain weights: nothing recorded
    if cfg.training:
        provenance.record_training(model, cfg.training)


#: Builders of composite base models (a saved record's ``spec`` "surgeon:NAME", e.g. "surgeon:ensemble"),
#: called with the record's base arguments; a module that builds on this one registers its builder
#: (`surgeon.surgery.ensemble`), and importing `surgeon.surgery` imports it.
BUILDERS: Registry[Callable[[dict], nn.Module]] = Registry("composite model builder")
COMPOSITE_PREFIX = "surgeon:"


def alter_resnet50(**kwargs) -> nn.Module:
    """The paper's Alter-ResNet-50 (``surgeon.passes.ALTERNETS["paper"]``); kwargs go to `load_model`."""
    spec, model_kwargs, stages = ALTERNETS["paper"]
    return alternate(load_model(spec, **model_kwargs, **kwargs), stages)


def load(path: str | os.PathLike, **base_overrides) -> nn.Module:
    """Rebuild a model saved by `surgeon.save`: base model from its record (with `base_overrides`,
    e.g. ``drop_path_rate=0.1`` for training), passes replayed, weights loaded (strictly), the
    training record kept. The result computes exactly what the saved model did."""
    cfg = read_cfg(path)
    base = {**cfg.base, **base_overrides}
    if str(base.get("spec")).startswith(COMPOSITE_PREFIX):  # e.g. an ensemble: members rebuilt from their records
        model = BUILDERS.get(base["spec"])(base)
    else:
        model = load_model(base.pop("spec"), **base)
    model = read_weights(path, apply_passes(model, list(cfg.passes)))
    if cfg.training:
        provenance.record_training(model, cfg.training)
    return model.eval()


