"""Options and helpers shared by the `surgeon` commands."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

import surgeon
from surgeon.errors import SurgeonError

out = Console()
err = Console(stderr=True)

ModelArg = Annotated[str, typer.Argument(help="timm name (resnet50), torchvision name (tv:resnet50)", show_default=False)]
WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", "-w", help="local weights: .safetensors, .pt, .pth, .pth.tar")]
PretrainedOpt = Annotated[bool, typer.Option("--pretrained", help="fetch the registry's pretrained weights (online or warm hub cache)")]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", help="classifier size (default: the architecture's)")]
ImgSizeOpt = Annotated[Optional[int], typer.Option("--img-size", help="build the model for this resolution (ViTs); CNNs ignore it")]
InputSizeOpt = Annotated[Optional[str], typer.Option("--input-size", help="C,H,W of one input (default: the model's own)")]
BackendOpt = Annotated[str, typer.Option("--backend", help="where the tasks run: local (processes here) | ray (a Ray cluster: pip install 'surgeon[ray]')")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local one)")]
JobCpusOpt = Annotated[Optional[float], typer.Option("--job-cpus", help="CPUs per Ray task (default 1)")]
JobGpusOpt = Annotated[float, typer.Option("--job-gpus", help="GPUs per Ray task (a search's training: > 1 runs it under torchrun)")]
RetriesOpt = Annotated[int, typer.Option("--retries", help="runs again of a task whose worker died, before it is recorded as failed")]


def executor_from(backend: str, address: str | None = None, job_cpus: float | None = None, job_gpus: float = 0,
                  retries: int = 0, workers: int = 1) -> "surgeon.executors.Executor":
    """The executor the shared options --backend, --address, --job-cpus, --job-gpus, --retries name."""
    from surgeon.executors import executor

    return executor(backend, workers=workers, address=address, job_cpus=job_cpus, job_gpus=job_gpus, retries=retries)


def parse_input_size(text: str | None) -> tuple[int, int, int] | None:
    """'3,224,224' (or 3x224x224) -> (3, 224, 224)."""
    if text is None:
        return None
    parts = text.replace("x", ",").split(",")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise SurgeonError(f"--input-size {text!r} is not C,H,W with positive integers; e.g. --input-size 3,224,224")
    return size  # type: ignore[return-value]


def input_size_used(model, given: tuple[int, int, int] | None, name: str) -> tuple[int, int, int]:
    """The (C, H, W) a command runs `model` at (`surgeon.models.resolve_input_size`: --input-size,
    else the size the model records, else its architecture's), said in one line."""
    res = surgeon.models.resolve_input_size(model, given)
    source = "--input-size" if res.source == "given" else res.SOURCES[res.source]
    where = f", recorded in {name}" if res.recorded and str(name).endswith(".safetensors") else ""
    out.print(f"input {'x'.join(map(str, res.size))} ({source}{where})", highlight=False)
    return res.size


@contextmanager
def printed_warnings(about: str = "") -> Iterator[None]:
    """Print the UserWarnings raised inside (those mentioning `about`) as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, UserWarning) and about in str(w.message):
                    err.print(f"[yellow]warning:[/] {w.message}", highlight=False)


def load(model: str, weights: Path | None, pretrained: bool, num_classes: int | None, img_size: int | None,
         **model_kwargs):
    """`surgeon.load_model`, with weight-loading warnings printed as one line each."""
    with printed_warnings("weights"):
        return surgeon.load_model(model, weights=weights, pretrained=pretrained, num_classes=num_classes,
                                  img_size=img_size, **model_kwargs)


def check_outputs(figure: Path | None, json_out: Path | None) -> None:
    """Refuse a bad figure or JSON output path before any work."""
    from surgeon.plots import figure_formats

    if figure is not None:
        surgeon.io.check_output(figure, overwrite=True, suffixes=figure_formats())
    if json_out is not None:
        surgeon.io.check_output(json_out, overwrite=True, suffixes=(".json",))


def write_json(path: Path | None, payload: Any) -> None:
    """Write `payload` as JSON through a temp file and a rename (nothing when `path` is None)."""
    if path is not None:
        with surgeon.io.atomic_path(path) as tmp:
            tmp.write_text(json.dumps(payload, indent=1))
        out.print(f"wrote {path}", highlight=False)


def label(name: str) -> str:
    """A model's name in tables and figures: a surgeon file by its stem."""
    return Path(name).stem if name.endswith(".safetensors") else name


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"
