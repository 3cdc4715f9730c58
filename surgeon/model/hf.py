"""Hugging Face ``transformers`` image classifiers by name: ``load_model("hf:<repo id or directory>")``.

The model is any ``AutoModelForImageClassification`` class, made to return the logits tensor
(`returning_logits`: the ``.logits`` that `surgeon.outputs.logits_of` picks) and to carry a timm-style
``pretrained_cfg`` (input size, mean, std, classes, interpolation, crop) read from the image
processor's config (``preprocessor_config.json``; without one, the processor class's defaults
and the model config's ``image_size``). The recipe records the model config and that data config,
so `surgeon.load(file)` rebuilds the model offline from the ``.safetensors`` file alone.

Weights: a local directory's weights are loaded when it has them; a hub id is random-init
unless ``pretrained=True`` (as for timm names). ``transformers`` is optional (``surgeon[hf]``) and
imported only when an ``hf:`` name is used.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surgeon.core.errors import SurgeonError, first_line

__all__ = ["HF_PREFIX", "HFClassifier", "create", "returning_logits", "data_config", "transformers"]

HF_PREFIX = "hf:"
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL codes used by image processors


def transformers():
    """The `transformers` module, or a one-line error saying how to install it."""
    try:
        import transformers as tf
    except ImportError:
        raise SurgeonError("hf: models need Hugging Face transformers: pip install 'surgeon[hf]'") from None
    return tf


class HFClassifier:
    """Mixin of the logits-returning subclass of a transformers classifier (`returning_logits`)."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return super().forward(pixel_values, return_dict=True).logits  # what logits_of picks, also under FX


@functools.cache
def _subclass(cls: type) -> type:
    return type(cls.__name__, (HFClassifier, cls), {"__module__": __name__, "__qualname__": cls.__name__})


def returning_logits(model: nn.Module, data: dict[str, Any]) -> nn.Module:
    """`model` (a transformers image classifier) made to return its logits tensor, in place: its
    class becomes a subclass whose forward returns ``.logits``, so module paths and state-dict keys
    stay those of transformers (its checkpoints load as they are). ``data`` becomes its timm-style
    ``pretrained_cfg``."""
    model.__class__ = _subclass(type(model))
    model.pretrained_cfg = dict(data)
    return model


def _config(name: str, hf_config: dict | None):
    tf = transformers()
    if hf_config is not None:
        d = dict(hf_config)
        return tf.AutoConfig.for_model(d.pop("model_type"), **d)
    try:
        return tf.AutoConfig.from_pretrained(name)
    except (OSError, ValueError, KeyError) as exc:
        raise SurgeonError(f"cannot read the config of hf:{name} ({first_line(exc, 80)}); give a local directory "
                           "written by save_pretrained, or a hub id (online or warm cache)") from None


def _processor_dict(name: str, model_type: str) -> dict:
    """The image processor's settings: the repo's ``preprocessor_config.json``, else the defaults of
    the processor class transformers maps to `model_type` ({} when neither is found)."""
    tf = transformers()
    try:
        d, _ = tf.ImageProcessingMixin.get_image_processor_dict(name)
        if d:
            return d
    except (OSError, ValueError, EnvironmentError):
        pass
    try:
        return tf.AutoImageProcessor.for_model(model_type).to_dict()
    except Exception:  # noqa: BLE001 - unmapped types, processors needing optional packages
        return {}


def _size_of(p: dict, config) -> tuple[int, int] | None:
    for key in ("crop_size", "size"):
        s = p.get(key)
        if isinstance(s, int):
            return s, s
        if isinstance(s, dict):
            if "height" in s and "width" in s:
                return int(s["height"]), int(s["width"])
            if "shortest_edge" in s and key == "crop_size":
                return int(s["shortest_edge"]), int(s["shortest_edge"])
    size = getattr(config, "image_size", None)
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None


def data_config(name: str, config) -> dict[str, Any]:
    """The timm-style data config: ``input_size`` (C, H, W) from the processor's crop/size (else the
    config's ``image_size``, else 224), ``mean``/``std`` from the processor (else ImageNet's),
    ``interpolation`` from its ``resample``, ``crop_pct`` from its ``crop_pct`` (else 1)."""
    p = _processor_dict(name, config.model_type)
    h, w = _size_of(p, config) or (224, 224)
    channels = int(getattr(config, "num_channels", 3))
    mean, std = p.get("image_mean") or _IMAGENET[0], p.get("image_std") or _IMAGENET[1]
    return {"input_size": [channels, h, w], "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "interpolation": _RESAMPLE.get(p.get("resample"), "bicubic"),
            "crop_pct": float(p.get("crop_pct") or 1.0), "num_classes": int(config.num_labels)}


def create(name: str, num_classes: int | None, pretrained: bool, img_size: int | None,
           extra: dict) -> tuple[nn.Module, dict[str, Any]]:
    """The wrapped model of ``hf:<name>`` and the recipe arguments that rebuild it offline
    (``hf_config``: the model config; ``hf_data``: the data config)."""
    tf = transformers()
    extra = dict(extra)
    hf_config, hf_data = extra.pop("hf_config", None), extra.pop("hf_data", None)
    if extra:
        raise SurgeonError(f"hf: models take no constructor arguments {sorted(extra)}; set them in the config")
    config = _config(name, hf_config)
    if num_classes is not None and num_classes != config.num_labels:
        config.num_labels = num_classes  # also resets id2label / label2id
    if img_size is not None and hasattr(config, "image_size"):
        config.image_size = img_size
    local = Path(name).expanduser().is_dir()
    with_weights = hf_config is None and (pretrained or (local and any(Path(name).expanduser().glob("*.safetensors"))
                                                         or local and any(Path(name).expanduser().glob("*.bin"))))
    try:
        if with_weights:
            model = tf.AutoModelForImageClassification.from_pretrained(
                name, config=config, ignore_mismatched_sizes=num_classes is not None)
        else:
            model = tf.AutoModelForImageClassification.from_config(config)
    except (OSError, ValueError) as exc:
        raise SurgeonError(f"cannot build hf:{name} as an image classifier ({first_line(exc, 80)})") from None
    data = hf_data or data_config(name, config)
    if img_size is not None:
        data = {**data, "input_size": [data["input_size"][0], img_size, img_size]}
    data = {**data, "num_classes": int(config.num_labels)}
    record = {"hf_config": json.loads(config.to_json_string(use_diff=False)), "hf_data": data}
    return returning_logits(model.eval(), data), record
