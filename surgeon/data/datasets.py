"""Data: one spec string names a dataset, the model's own timm data config preprocesses it.

    loader = surgeon.data.loader("samples", model)           # built-in photographs, no labels
    loader = surgeon.data.loader("digits", model, train=True) # scikit-learn's 8x8 digits, labelled
    loader = surgeon.data.loader("~/imagenet/val", model)     # an ImageFolder tree or a flat folder
    loader = surgeon.data.loader("cifar100:~/data", model)    # torchvision's CIFAR files under a root

Batches are ``(images, labels)``; images without a class (the samples, a flat folder) have label
-1. Files that are not readable images are skipped with one warning, never a crash; grayscale,
palette and RGBA images are converted to RGB.

The built-in samples are real photographs shipped by dependencies: scikit-image's data folder
(astronaut, cat, coffee, rocket, motorcycle, Hubble deep field, retina, IHC stain, camera man,
coins, moon, brick, grass, gravel), scikit-learn's two sample images (china, flower) and
matplotlib's Grace Hopper. They make ``surgeon probe fourier resnet50`` run with no arguments and
no download. `digits` is scikit-learn's bundled copy of the UCI handwritten digits (1,797 8x8
grayscale images, 10 classes): the one small labelled real dataset that needs no download, used
for demos and tests; every fifth image is the test split.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from surgeon.core import checks
from surgeon.core.errors import SurgeonError, first_line
from surgeon.model.sizes import input_size_of
from surgeon.core.files import check_input
from surgeon.data.normalisation import _rgb_config, _to_channels
from surgeon.data.sampling import Sampling
from surgeon.parallel.run import Run
from surgeon._compat import options_from


__all__ = ["IMAGE_EXTENSIONS", "NAMED", "sample_images", "check_spec", "dataset", "loader", "eval_transform", "train_transform",
           "mixer", "mixed", "balanced_subset"]


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


NAMED = ("samples", "digits", "cifar10[:ROOT]", "cifar100[:ROOT]")


_SAMPLES = (
    ("skimage", "data", ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                         "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "camera.png", "coins.png",
                         "moon.png", "brick.png", "grass.png", "gravel.png")),
    ("sklearn", "datasets/images", ("china.jpg", "flower.jpg")),
    ("matplotlib", "mpl-data/sample_data", ("grace_hopper.jpg",)),
)


def _package_dir(name: str) -> Path | None:
    """A package's folder without importing it (scikit-image and scikit-learn import slowly)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_images() -> list[Path]:
    """Paths of the built-in photographs (see the module docstring), those installed."""
    found = []
    for package, folder, names in _SAMPLES:
        root = _package_dir(package)
        if root is not None:
            found += [root / folder / n for n in names if (root / folder / n).is_file()]
    if not found:
        raise SurgeonError("no built-in sample images found (they ship with scikit-image, scikit-learn and "
                           "matplotlib); reinstall surgeon or pass data=FOLDER")
    return found


def _rgb(img: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: grayscale and palette expanded, alpha composited on white."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        canvas = Image.new("RGB", img.size, (255, 255, 255))
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        span = a.max() - a.min()
        img = Image.fromarray(((a - a.min()) / (span or 1) * 255).astype(np.uint8))
    return img.convert("RGB")


class ImageFiles(Dataset):
    """Image files with integer labels (-1: none). A file that fails to decode yields None, which
    the loader's collate drops with a warning."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], classes: Sequence[str] = (),
                 transform: Callable | None = None):
        self.files, self.labels, self.classes, self.transform = list(files), list(labels), list(classes), transform

    def __len__(self) -> int:
        return len(self.files)

    def take(self, index: Sequence[int]) -> ImageFiles:
        """The same dataset restricted to the items at `index`."""
        return ImageFiles([self.files[i] for i in index], [self.labels[i] for i in index], self.classes, self.transform)

    def __getitem__(self, i: int) -> tuple[Any, int] | None:
        try:
            with Image.open(self.files[i]) as img:
                img = _rgb(img)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            warnings.warn(f"skipped {self.files[i]}: not a readable image ({first_line(exc)})", stacklevel=2)
            return None
        return (self.transform(img) if self.transform else img), self.labels[i]


class ArrayImages(Dataset):
    """Images held in memory as a uint8 array (N, H, W) or (N, H, W, 3), with labels."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], classes: Sequence[str],
                 transform: Callable | None = None):
        self.images, self.labels, self.classes, self.transform = images, list(labels), list(classes), transform

    def __len__(self) -> int:
        return len(self.images)

    def take(self, index: Sequence[int]) -> ArrayImages:
        """The same dataset restricted to the items at `index`."""
        return ArrayImages(self.images[np.asarray(index, dtype=np.int64)], [self.labels[i] for i in index],
                           self.classes, self.transform)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = _rgb(Image.fromarray(self.images[i]))
        return (self.transform(img) if self.transform else img), self.labels[i]


def _readable(path: Path) -> bool:
    try:
        with Image.open(path):
            return True
    except (OSError, UnidentifiedImageError, ValueError):
        return False


def _folder(root: Path, transform: Callable | None) -> ImageFiles:
    """An ImageFolder tree (one sub-folder per class, any depth below it) or a flat folder."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    groups = [(i, root / c) for i, c in enumerate(classes)] or [(-1, root)]
    files, labels, skipped = [], [], []
    for label, folder in groups:
        pattern = "**/*" if label >= 0 else "*"
        for p in sorted(folder.glob(pattern)):
            if not p.is_file() or p.name.startswith("."):
                continue
            if p.suffix.lower() in IMAGE_EXTENSIONS:  # decoded only when loaded: a bad one is dropped then
                files.append(p)
                labels.append(label)
            else:
                skipped.append(p)
    if skipped:
        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        warnings.warn(f"skipped {skipped[0]}{more}: not image files", stacklevel=3)
    if not files:
        raise SurgeonError(f"no images in {str(root)!r} (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                           "pass a folder of images or an ImageFolder tree (one sub-folder per class)")
    return ImageFiles(files, labels, classes, transform)


def _digits(train: bool, transform: Callable | None) -> ArrayImages:
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = (np.arange(len(d.target)) % 5 != 0) == train
    images = np.clip(d.images[keep] * 16, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    return ArrayImages(images, d.target[keep].tolist(), [str(i) for i in range(10)], transform)


def _cifar(name: str, root: str, train: bool, transform: Callable | None, download: bool) -> ArrayImages:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    path = Path(root).expanduser()
    try:
        ds = cls(str(path), train=train, download=download)
    except RuntimeError as exc:
        raise SurgeonError(f"{name} not found under {str(path)!r} ({first_line(exc)}); point data= at the folder "
                           f"holding {cls.base_folder}/, e.g. data={name}:~/data, or download it first") from None
    return ArrayImages(ds.data, ds.targets, ds.classes, transform)


def balanced_subset(labels: Sequence[int], fraction: float, seed: int = 0) -> list[int]:
    """Indices of a class-balanced random `fraction` of a labelled dataset (the paper's small-data
    runs, e.g. 6% of ImageNet): from each class c with n_c items, max(1, round(fraction * n_c))
    drawn without replacement (seeded), returned in dataset order. Kept rather than scikit-learn's
    `train_test_split(stratify=)`: that picks other indices (a resumed run must see the same data),
    allots the total across classes (counts differ by up to 1 per class) and refuses 1-item classes."""
    checks.args(seed=seed)
    if not 0 < fraction <= 1:
        raise SurgeonError(f"subset fraction {fraction} must be in (0, 1]; e.g. subset=0.06 keeps 6% of each class")
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        keep += rng.choice(members, max(1, round(fraction * len(members))), replace=False).tolist()
    return sorted(keep)


def dataset(spec: str | os.PathLike | None = None, *, train: bool = False, transform: Callable | None = None,
            download: bool = False, subset: float | None = None, seed: int = 0) -> Dataset:
    """The dataset a spec names, restricted to a class-balanced `subset` fraction when given
    (`balanced_subset`, drawn with `seed`); see `_dataset` for the specs."""
    checks.args(subset=subset, seed=seed)
    ds = _dataset(spec, train=train, transform=transform, download=download)
    if subset is None or subset == 1:
        return ds
    return ds.take(balanced_subset(ds.labels, subset, seed))


def _dataset(spec: str | os.PathLike | None, *, train: bool, transform: Callable | None, download: bool) -> Dataset:
    """The dataset a spec names: ``samples`` (default), ``digits``, ``cifar10[:ROOT]``,
    ``cifar100[:ROOT]`` (ROOT defaults to ./data), a folder or ImageFolder tree, or one image file.

    Items are ``(transform(PIL image), label)``; `download` lets torchvision fetch CIFAR when online.
    """
    text = "samples" if spec is None else str(spec)
    name, _, root = text.partition(":")
    if text == "samples":
        paths = sample_images()
        return ImageFiles(paths, [-1] * len(paths), (), transform)
    if text == "digits":
        return _digits(train, transform)
    if name in ("cifar10", "cifar100"):
        return _cifar(name, root or "data", train, transform, download)
    path = Path(text).expanduser()
    if path.is_dir():
        return _folder(path, transform)
    if path.exists():
        check_input(path, "data file")
        if not _readable(path):
            raise SurgeonError(f"{str(path)!r} is not a readable image; pass an image, a folder or one of "
                               f"{', '.join(NAMED)}")
        return ImageFiles([path], [-1], (), transform)
    check_spec(text)  # names nothing: refused there
    raise AssertionError(text)


def check_spec(spec: str | os.PathLike | None, name: str = "data") -> None:
    """Refuse a data spec that names nothing (not a dataset of `NAMED`, no such file or folder),
    before any work; `name` is the argument it came from (``data``, ``val``). What a file or folder
    holds is checked when it is read."""
    text = "samples" if spec is None else str(spec)
    if text in ("samples", "digits") or text.partition(":")[0] in ("cifar10", "cifar100"):
        return
    if not Path(text).expanduser().exists():
        raise SurgeonError(f"{name}={text!r} is neither a file, a folder nor one of {', '.join(NAMED)}; "
                           f"e.g. {name}=samples or {name}=~/imagenet/val")


def eval_transform(model: nn.Module | None = None, *, input_size: Sequence[int] | None = None) -> Callable:
    """The model's own evaluation preprocessing (timm data config: resize, centre crop, mean/std),
    at `input_size` (C, H, W) when given, else at the size the model records
    (`surgeon.models.input_size_of`: the size it was trained or edited at, else its default)."""
    from timm.data import create_transform, resolve_model_data_config

    size = input_size_of(model, input_size)
    cfg = _rgb_config(resolve_model_data_config(model) if model is not None else {}, size)
    return _to_channels(create_transform(**cfg, is_training=False), size[0])


def train_transform(model: nn.Module | None = None, *, input_size: Sequence[int] | None = None,
                    auto_augment: str | None = "rand-m9-n2-mstd1.0", re_prob: float = 0.0, hflip: float = 0.5,
                    padding: int | None = None) -> Callable:
    """The paper's training augmentation (PAPER.md, "Training recipe"), at `input_size` (C, H, W)
    when given, else at the size the model records (`surgeon.models.input_size_of`).

    With `padding` (CIFAR: 4): resize to the input size, random crop of that size from the image
    zero-padded by `padding` pixels, horizontal flip with probability `hflip`, RandAugment
    `auto_augment` (``rand-m9-n2-mstd1.0`` for CIFAR), normalisation, random erasing `re_prob`.
    Without (ImageNet): timm's random resized crop, flip, RandAugment (``mstd0.5``), erasing.
    """
    from timm.data import create_transform, resolve_model_data_config
    from timm.data.auto_augment import rand_augment_transform
    from timm.data.random_erasing import RandomErasing
    from torchvision import transforms as T

    size = input_size_of(model, input_size)
    channels = size[0]
    cfg = _rgb_config(resolve_model_data_config(model) if model is not None else {}, size)
    mean, std = cfg.get("mean", (0.485, 0.456, 0.406)), cfg.get("std", (0.229, 0.224, 0.225))
    if padding is None:
        keep = {k: cfg[k] for k in ("input_size", "interpolation") if k in cfg}
        return _to_channels(create_transform(**keep, mean=mean, std=std, is_training=True, auto_augment=auto_augment,
                                             re_prob=re_prob, hflip=hflip), channels)
    size = tuple(cfg["input_size"][1:])
    steps: list[Callable] = [T.Resize(size), T.RandomCrop(size, padding=padding)]
    if hflip > 0:
        steps.append(T.RandomHorizontalFlip(hflip))
    if auto_augment:
        steps.append(rand_augment_transform(auto_augment, {"translate_const": int(min(size) * 0.45),
                                                           "img_mean": tuple(round(255 * m) for m in mean)}))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if re_prob > 0:
        steps.append(RandomErasing(re_prob, mode="pixel", device="cpu"))
    return _to_channels(T.Compose(steps), channels)


def mixer(num_classes: int, *, mixup: float = 1.0, cutmix: float = 0.8, prob: float = 1.0,
          label_smoothing: float = 0.1) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """timm's Mixup / CutMix with the paper's settings (Mixup alpha 1.0, CutMix alpha 0.8, applied
    with probability 1, one of the two per batch, label smoothing 0.1): ``x, soft = mix(x, labels)``
    on an even-sized batch. Its randomness comes from numpy's global generator."""
    from timm.data import Mixup

    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, label_smoothing=label_smoothing,
                 num_classes=num_classes)


def mixed(batches: Iterable[Any], num_classes: int, **options: float) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`mixer` (Mixup / CutMix, soft targets; `options` as there) applied to each (images, labels) batch."""
    mix = mixer(num_classes, **options)
    for batch in batches:
        if batch is None:
            continue
        x, y = batch[0], batch[1]
        if x.shape[0] % 2:  # timm's Mixup pairs samples: drop the odd one out
            x, y = x[:-1], y[:-1]
        if x.shape[0]:
            yield mix(x, y)


def _collate(items: list) -> Any:
    kept = [it for it in items if it is not None]
    return default_collate(kept) if kept else None


def loader(spec: str | os.PathLike | None = None, model: nn.Module | None = None, *, batch_size: int = 32,
           train: bool = False, input_size: Sequence[int] | None = None, transform: Callable | None = None,
           sampling: Sampling | None = None, run: Run | None = None, **old: Any) -> DataLoader:
    """A DataLoader of ``(images, labels)`` batches for `spec` (see `dataset`; `train`: its
    training split), preprocessed for `model` (`eval_transform`: at `input_size`, else the size
    the model records, else its architecture's default) unless a `transform` is given. Unreadable
    files are dropped from their batch; a batch left empty is skipped by the consumers (it arrives
    as None).

    `sampling` (a `Sampling`): shuffle, a class-balanced ``subset`` fraction (`balanced_subset`),
    their ``seed``. `run` (a `surgeon.parallel.Run`): ``workers`` (default 0 for in-memory data, up
    to 8 processes for image folders) and ``download``. ``shuffle=``, ``subset=``, ``seed=``;
    ``workers=``, ``download=``: deprecated, build the `Sampling`, the `Run`.
    """
    sampling = options_from(Sampling, sampling, old, function="loader", keyword="sampling", strict=False)
    run = options_from(Run, run, old, function="loader", keyword="run").only("loader", "workers", "download")
    (shuffle, subset, seed), workers, download = astuple(sampling), run.workers, run.download
    checks.args(batch_size=batch_size)
    if batch_size < 1:
        raise SurgeonError(f"batch size {batch_size} must be at least 1; e.g. batch_size=32")
    ds = dataset(spec, train=train, transform=transform or eval_transform(model, input_size=input_size),
                 download=download, subset=subset, seed=seed)
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if isinstance(ds, ImageFiles) and len(ds) > 64 else 0
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers, collate_fn=_collate,
                      generator=generator, persistent_workers=False)
