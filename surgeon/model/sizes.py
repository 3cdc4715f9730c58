"""Model metadata that every layer may read without building anything: the input size an
architecture was designed for, the size to use a model at, and the torchvision name prefix (a leaf module: it imports no other
surgeon module but the provenance record)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import nn

from surgeon.model import provenance
from surgeon.core.errors import SurgeonError
from surgeon.model.provenance import cfg_of

__all__ = ["TV_PREFIX", "InputSize", "resolve_input_size", "input_size_of", "default_input_size", "input_channels"]

TV_PREFIX = "tv:"


def input_channels(model: nn.Module | None) -> int | None:
    """The channels the model's first convolution (stem or patch embedding) takes: what a timm model
    built with ``in_chans=1`` reads, whatever its pretrained_cfg says; None when no layer says."""
    if model is None:
        return None
    for mod in model.modules():
        channels = getattr(mod, "in_channels", None)
        if isinstance(channels, int) and isinstance(getattr(mod, "weight", None), nn.Parameter):
            return channels
    return None


def _with_channels(size: tuple[int, int, int], model: nn.Module) -> tuple[int, int, int]:
    channels = input_channels(model)
    return (channels, size[1], size[2]) if channels else size


def default_input_size(model: nn.Module) -> tuple[int, int, int]:
    """`_default_input_size` with the channels the model's stem takes (`input_channels`)."""
    return _with_channels(_default_input_size(model), model)


def _default_input_size(model: nn.Module) -> tuple[int, int, int]:
    """The (C, H, W) an architecture was designed for: timm's pretrained_cfg, torchvision's weight
    transforms, else 3x224x224; the ``img_size`` it was built with replaces H and W. It ignores
    what a trained or edited model records: use `surgeon.models.input_size_of` for the size to use
    a model at."""
    rec = cfg_of(model)
    img = rec.model_args.get("img_size")
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size")
    if size and len(size) == 3:
        if img is not None:
            return (int(size[0]), int(img), int(img))
        return tuple(int(s) for s in size)  # type: ignore[return-value]
    if img:
        return (3, int(img), int(img))
    image_size = getattr(model, "image_size", None)  # torchvision ViT: the size it was built for
    if isinstance(image_size, int):
        return (3, image_size, image_size)
    name = rec.spec or ""
    if name.startswith(TV_PREFIX):
        import torchvision.models as tvm

        try:
            crop = tvm.get_model_weights(name[len(TV_PREFIX):]).DEFAULT.transforms().crop_size
            return (3, int(crop[0]), int(crop[-1]))
        except (ValueError, KeyError, AttributeError):
            pass
    return (3, 224, 224)


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
        size = provenance.sizes(input_size)
        if size is None:
            raise SurgeonError(f"input size {input_size!r} is not (C, H, W) with positive integers; e.g. (3, 224, 224)")
        _check_given(model, size)
        return InputSize(size, "given")
    if model is None:
        return InputSize((3, 224, 224), "architecture")
    recorded = provenance.cfg_of(model).input_size  # trained, else edited
    if recorded is not None:
        return InputSize(*recorded)
    if provenance.cfg_of(model).model_args.get("img_size"):
        return InputSize(default_input_size(model), "img_size")
    return InputSize(default_input_size(model), "architecture")


def input_size_of(model: nn.Module | None, input_size: Sequence[int] | None = None) -> tuple[int, int, int]:
    """The (C, H, W) to use `model` at: `input_size` when given, else what the model records
    (training, surgery), else its architecture's default; see `resolve_input_size`."""
    return resolve_input_size(model, input_size).size


def _check_given(model: nn.Module | None, size: tuple[int, int, int]) -> None:
    """Refuse a given (C, H, W) whose channels are not those the model's stem takes (its height and
    width may differ from a recorded size: a convolutional net runs at any size, and the commands
    say which size they use)."""
    channels = input_channels(model)
    if channels is not None and size[0] != channels:
        raise SurgeonError(f"input_size={'x'.join(map(str, size))} has {size[0]} channels but the model takes "
                           f"{channels}; give input_size={channels}x{size[1]}x{size[2]}")
