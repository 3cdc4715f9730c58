"""Creating models by name: timm names, torchvision names (``tv:`` prefix), local weights, the hub.

    model = load_model("resnet50")                                  # timm, random init
    model = load_model("tv:resnet50", weights="resnet50.pth")      # torchvision + local file
    model = load_model("vit_tiny_patch16_224", pretrained=True)    # hub (online or warm cache)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from torch import nn

from .errors import SurgeonError, closest, first_line
from .io import load_weights

__all__ = ["load_model", "InputSize", "resolve_input_size", "input_size_of", "default_input_size", "model_spec"]

TV_PREFIX = "tv:"


@functools.cache
def _tv_names() -> tuple[str, ...]:
    import torchvision.models as tvm

    return tuple(tvm.list_models(module=tvm))


@functools.cache
def _timm_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


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
                "drop --num-classes or load the backbone with --weights and replace the head"
            )
        kwargs.pop("num_classes", None)
        try:
            return tvm.get_model(name, weights=weights, **kwargs)
        except Exception as exc:  # noqa: BLE001 - torch.hub raises URLError, OSError, RuntimeError...
            raise SurgeonError(
                f"cannot fetch pretrained weights for tv:{name} ({first_line(exc, 80)}); offline? "
                "pass a local file with --weights"
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
            "pass a local file with --weights, or set HF_HUB_OFFLINE=1 with a warm cache"
        ) from None


def model_spec(model: nn.Module) -> dict:
    """The arguments `load_model` was called with, stored on the model (empty for foreign models)."""
    return dict(getattr(model, "_surgeon_spec", {}))


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
            ``tv:`` prefix (``tv:resnet50``), or a ``.safetensors`` file written by `surgeon.save`.
        num_classes: classifier size; the architecture's default when None.
        weights: a local weight file (see `surgeon.io.read_state_dict`) loaded after creation;
            with `num_classes` given, a classifier of another size in the file is not loaded
            (fine-tuning: the new head keeps its initialisation, with a warning).
        pretrained: fetch the registry's pretrained weights through the hub, as timm/torchvision do.
        img_size: input resolution for models whose shape depends on it (ViTs); ignored by CNNs.
        model_kwargs: further constructor arguments (e.g. ``layers=(3, 4, 6, 4)`` for a timm
            ResNet-V2), recorded in the recipe of saved models.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SurgeonError("model name is empty: give a timm name like resnet50 or tv:resnet50")
    spec = spec.strip()
    if weights is not None and pretrained:
        raise SurgeonError("give either --weights or --pretrained, not both")
    if spec.endswith(".safetensors") and Path(spec).is_file() and weights is None and not pretrained:
        from .io import load

        return load(spec)  # a model saved by surgeon: rebuilt from its recipe
    if Path(spec).suffix in {".safetensors", ".pt", ".pth", ".tar", ".bin", ".ckpt"}:
        raise SurgeonError(
            f"{spec!r} is a weight file, not a model name: give the architecture and the file, "
            f"e.g. 'resnet50 --weights {spec}'"
        )
    if spec.startswith(TV_PREFIX):
        model = _create_tv(spec[len(TV_PREFIX):], num_classes, pretrained, img_size, model_kwargs)
    else:
        model = _create_timm(spec, num_classes, pretrained, img_size, model_kwargs)
    if weights is not None:
        load_weights(model, weights, what=spec, new_head=num_classes is not None)
    model._surgeon_spec = {"spec": spec, "num_classes": num_classes, "img_size": img_size, **model_kwargs}
    return model.eval()


class InputSize(NamedTuple):
    """The (C, H, W) a model is used at and where that size comes from (`resolve_input_size`)."""

    size: tuple[int, int, int]
    source: str  # "given" | "trained" | "edited" | "img_size" | "architecture"

    #: How each source reads in messages.
    SOURCES = {"given": "given", "trained": "the size it was trained at",
               "edited": "the size it was edited at", "img_size": "the size it was built for",
               "architecture": "the architecture's default"}

    @property
    def recorded(self) -> bool:
        """Whether the size is one the model records (training, surgery), as a saved file keeps it."""
        return self.source in ("trained", "edited")

    def __str__(self) -> str:
        return f"{'x'.join(map(str, self.size))} ({self.SOURCES[self.source]})"


def _size(value: Sequence[int] | None) -> tuple[int, int, int] | None:
    """A recorded (C, H, W), None when absent or malformed."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        size = tuple(int(s) for s in value)
    except (TypeError, ValueError):
        return None
    return size if len(size) == 3 and min(size) >= 1 else None  # type: ignore[return-value]


def resolve_input_size(model: nn.Module | None, input_size: Sequence[int] | None = None) -> InputSize:
    """The input size to use `model` at, the one owner of that decision. In order:

    1. `input_size` when given (range-checked: C, H, W >= 1);
    2. the size the model was trained at (`surgeon.train` records it; a saved file keeps it);
    3. the size of its last surgery pass (passes record the size they were made and checked at);
    4. the ``img_size`` it was built with (`load_model`);
    5. the architecture's default (`default_input_size`: timm's pretrained_cfg, torchvision's
       weight transforms, else 3x224x224).
    """
    if input_size is not None:
        size = _size(input_size)
        if size is None:
            raise SurgeonError(f"input size {input_size!r} is not (C, H, W) with positive integers; e.g. (3, 224, 224)")
        return InputSize(size, "given")
    if model is None:
        return InputSize((3, 224, 224), "architecture")
    trained = getattr(model, "_surgeon_training", None) or {}
    size = _size(trained.get("input_size")) or _size((trained.get("recipe") or {}).get("input_size"))
    if size is not None:
        return InputSize(size, "trained")
    edits = [p for p in getattr(model, "_surgeon_recipe", None) or [] if isinstance(p, dict)]
    size = next((s for s in (_size(p.get("input_size")) for p in reversed(edits)) if s is not None), None)
    if size is not None:
        return InputSize(size, "edited")
    spec = getattr(model, "_surgeon_spec", None) or {}
    if spec.get("img_size"):
        return InputSize(default_input_size(model), "img_size")
    return InputSize(default_input_size(model), "architecture")


def input_size_of(model: nn.Module | None, input_size: Sequence[int] | None = None) -> tuple[int, int, int]:
    """The (C, H, W) to use `model` at: `input_size` when given, else what the model records
    (training, surgery), else its architecture's default; see `resolve_input_size`."""
    return resolve_input_size(model, input_size).size


def default_input_size(model: nn.Module) -> tuple[int, int, int]:
    """The (C, H, W) an architecture was designed for: timm's pretrained_cfg, torchvision's weight
    transforms, else 3x224x224. It ignores what a trained or edited model records: use
    `input_size_of` for the size to use a model at."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size")
    if size and len(size) == 3:
        img = getattr(model, "_surgeon_spec", {}).get("img_size")
        if img is not None:
            return (int(size[0]), int(img), int(img))
        return tuple(int(s) for s in size)  # type: ignore[return-value]
    spec = getattr(model, "_surgeon_spec", {})
    name = spec.get("spec", "")
    if spec.get("img_size"):
        return (3, int(spec["img_size"]), int(spec["img_size"]))
    image_size = getattr(model, "image_size", None)  # torchvision ViT: the size it was built for
    if isinstance(image_size, int):
        return (3, image_size, image_size)
    if name.startswith(TV_PREFIX):
        import torchvision.models as tvm

        try:
            crop = tvm.get_model_weights(name[len(TV_PREFIX):]).DEFAULT.transforms().crop_size
            return (3, int(crop[0]), int(crop[-1]))
        except (ValueError, KeyError, AttributeError):
            pass
    return (3, 224, 224)


