"""Options and helpers shared by the `surgeon` commands: one option, one meaning, everywhere.

Conventions (a new command reuses these definitions rather than making its own):

- model options: `ModelArg` / `ModelsArg`, `WeightsOpt` / `WeightsListOpt`, `PretrainedOpt`,
  `NumClassesOpt`, `ImgSizeOpt`, `InputSizeOpt`, `SeedOpt` (seeds the model's random initialisation
  too: pass it to `load`), `DeviceOpt` (`load` moves the model there), `BlocksOpt` (``--blocks/-b``);
- outputs: `FigureOpt` (``--out/-o``), `JsonOpt` (``--json PATH``; ``-``: stdout), `CsvOpt`
  (``--csv PATH``; ``-``: stdout), `ForceOpt`. Call `check_outputs(...)` before any work: an existing
  file is refused without ``--force``; write with `write_json` / `write_csv` (tidy rows of
  ``result.tidy()``). With ``--json -`` or ``--csv -`` the tables go to stderr, the data to stdout.

This module must not import torch (``surgeon --help`` stays fast): reach the library through the
lazy ``surgeon`` package inside functions (``surgeon.viz.save_figure``...).
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console, ConsoleDimensions

import surgeon
from surgeon.core.errors import SurgeonError
from surgeon.core.jsonio import dumps
from surgeon.core.text import plural  # noqa: F401  (re-exported for the commands)

#: the width of output written to a file or pipe: wide enough that no table cell is cut
FILE_WIDTH = 10_000


class _Console(Console):
    """A console that, when not writing to a terminal, never narrows tables to 80 columns (which
    cuts numbers short in a log file), and flushes each print (a piped log shows each line at once).

    `note` holds a line about how the command runs (the input size it chose) until the command
    prints its first result: a command refused for bad input prints nothing on stdout, only its
    one-line error (`drop_notes`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._notes: list[str] = []

    def note(self, text: str) -> None:
        self._notes.append(text)

    def drop_notes(self) -> None:
        self._notes.clear()

    def flush_notes(self) -> None:
        """Print the held lines (a command that ends without printing a result)."""
        notes, self._notes = self._notes, []
        for text in notes:
            super().print(text, highlight=False)

    @property
    def size(self) -> ConsoleDimensions:
        dims = Console.size.fget(self)
        return dims if self.is_terminal else ConsoleDimensions(FILE_WIDTH, dims.height)  # COLUMNS too is ignored

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)

    def print(self, *args: Any, **kwargs: Any) -> None:
        self.flush_notes()
        super().print(*args, **kwargs)
        self.file.flush()


out = _Console()
err = _Console(stderr=True)

ModelArg = Annotated[str, typer.Argument(help="timm name (resnet50), torchvision name (tv:resnet50) or a surgeon file",
                                         show_default=False)]
ModelsArg = Annotated[list[str], typer.Argument(help="one or more models: timm names, tv:NAME, surgeon files",
                                                show_default=False)]
WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", "-w", help="local weights: .safetensors, .pt, .pth, .pth.tar")]
WeightsListOpt = Annotated[Optional[list[Path]], typer.Option("--weights", "-w", help="local weights, once per model in order")]
PretrainedOpt = Annotated[bool, typer.Option("--pretrained", help="fetch the registry's pretrained weights (online or warm hub cache)")]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", help="classifier size (default: the architecture's)")]
ImgSizeOpt = Annotated[Optional[int], typer.Option("--img-size", help="build the model for this resolution (ViTs); CNNs ignore it")]
InputSizeOpt = Annotated[Optional[str], typer.Option("--input-size", help="C,H,W of one input (default: the model's own)")]
SeedOpt = Annotated[int, typer.Option("--seed", help="seed of the model's random initialisation and of every random "
                                                     "draw (data order, augmentation, noise, start vectors)")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1, mps (default: cuda when present, else cpu)")]
BlocksOpt = Annotated[str, typer.Option("--blocks", "-b", help="block selection: '*', 'c*', 'c2.b-1', 'kind:msa', "
                                                               "module paths; comma-separated")]
ForceOpt = Annotated[bool, typer.Option("--force", help="overwrite existing output files")]
FigureOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="figure file (.png, .svg, .pdf)")]
JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="write the results as JSON to this file (-: stdout)")]
CsvOpt = Annotated[Optional[Path], typer.Option("--csv", help="write the results as a tidy CSV table to this file "
                                                              "(-: stdout)")]
#: one default for the L2 term of every command with --wd (hessian, landscape): the training objective's
L2Opt = Annotated[str, typer.Option("--l2", help="L2 term with --wd: standard: wd/2 ||theta||^2 | "
                                                 "paper: wd sum_p ||theta_p|| (the paper's plots)")]
L2_DEFAULT = "standard"
STDOUT = Path("-")
BackendOpt = Annotated[str, typer.Option("--backend", help="where the tasks run: local (processes here) | ray (a Ray cluster: pip install 'surgeon\\[ray]')")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local one)")]
JobCpusOpt = Annotated[Optional[float], typer.Option("--job-cpus", help="CPUs per Ray task (default 1)")]
JobGpusOpt = Annotated[float, typer.Option("--job-gpus", help="GPUs per Ray task (a search's training: > 1 runs it under torchrun)")]
RetriesOpt = Annotated[int, typer.Option("--retries", help="runs again of a task whose worker died, before it is recorded as failed")]


def executor_from(backend: str, address: str | None = None, job_cpus: float | None = None, job_gpus: float = 0,
                  retries: int = 0, workers: int = 1) -> "surgeon.parallel.executors.Executor":
    """The executor the shared options --backend, --address, --job-cpus, --job-gpus, --retries name."""
    from surgeon.parallel.executors import executor

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
    """The (C, H, W) a command runs `model` at (`surgeon.model.sizes.resolve_input_size`: --input-size,
    else the size the model records, else its architecture's), said in one line."""
    res = surgeon.model.sizes.resolve_input_size(model, given)
    source = "--input-size" if res.source == "given" else res.SOURCES[res.source]
    where = f", recorded in {name}" if res.recorded and str(name).endswith(".safetensors") else ""
    out.note(f"input {'x'.join(map(str, res.size))} ({source}{where})")
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


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and random: the model's random initialisation and any draw
    a command makes after it."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load(model: str, weights: Path | None, pretrained: bool, num_classes: int | None, img_size: int | None,
         *, seed: int | None = None, device: str | None = "cpu", **model_kwargs):
    """`surgeon.load_model`, with weight-loading warnings printed as one line each. `seed` seeds the
    random initialisation (the same command gives the same random-init model); `device` moves the model
    there (None: CUDA when present, else the CPU)."""
    if seed is not None:
        seed_everything(seed)
    with printed_warnings("weights"):
        m = surgeon.load_model(model, weights=weights, pretrained=pretrained, num_classes=num_classes,
                               img_size=img_size, **model_kwargs)
    return m.to(resolve_device(device))


def check_weights(models: Sequence[str], weights: Sequence[Path] | None) -> None:
    """One ``--weights`` per model, in order, or none at all."""
    if weights and len(weights) != len(models):
        raise SurgeonError(f"{len(weights)} --weights for {len(models)} models; give one --weights per model, in order")


def resolve_device(device: str | None):
    """The torch device of --device (None: CUDA when present, else the CPU), refused in one line if unusable."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise SurgeonError(f"--device {device!r} is not a device; e.g. --device cpu or --device cuda:0") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SurgeonError(f"--device {device}: CUDA is not available here; use --device cpu")
    return dev


def check_outputs(figure: Path | None = None, json_out: Path | None = None, csv_out: Path | None = None, *,
                  force: bool = False, files: Sequence[tuple[Path | None, Sequence[str]]] = ()) -> None:
    """Refuse bad output paths before any work: a wrong suffix, a missing folder, or an existing file
    without --force (`files`: more (path, suffixes) pairs). ``-`` for --json / --csv is stdout: the
    tables then go to stderr, so stdout holds the data alone."""
    wanted = [(figure, surgeon.viz.figure_formats()) if figure is not None else (None, ()),
              (json_out, (".json",)), (csv_out, (".csv",)), *files]
    if json_out == STDOUT and csv_out == STDOUT:
        raise SurgeonError("--json - and --csv - both ask for stdout; write one of them to a file")
    for path, suffixes in wanted:
        if path is not None and path != STDOUT:
            surgeon.core.files.check_output(path, overwrite=force, suffixes=tuple(suffixes))  # overwrite=True: --force
    if STDOUT in (json_out, csv_out):
        out.file = sys.stderr


def write_json(path: Path | None, payload: Any) -> None:
    """Write `payload` as JSON (`surgeon.jsonio`: NaN as null) through a temp file and a rename, or to
    stdout for ``-`` (nothing when `path` is None, or on a rank other than 0 under torchrun)."""
    if path is None or not surgeon.parallel.distributed.is_main():
        return
    if path == STDOUT:
        sys.stdout.write(dumps(payload, indent=1) + "\n")
        sys.stdout.flush()
        return
    with surgeon.core.files.atomic_path(path) as tmp:
        tmp.write_text(dumps(payload, indent=1) + "\n")
    out.print(f"wrote {path}", highlight=False)


def write_csv(path: Path | None, rows: list[dict[str, Any]]) -> None:
    """Write tidy rows (``result.tidy()``) as CSV (`surgeon.core.tables.csv_text`) to a file, or to stdout
    for ``-`` (nothing when `path` is None, or on a rank other than 0 under torchrun)."""
    if path is None or not surgeon.parallel.distributed.is_main():
        return
    if path == STDOUT:
        sys.stdout.write(surgeon.core.tables.csv_text(rows))
        sys.stdout.flush()
        return
    surgeon.core.tables.write_csv(path, rows)
    out.print(f"wrote {path}", highlight=False)


def write_outputs(results: Sequence[Any], json_out: Path | None, csv_out: Path | None, out_fig: Path | None = None,
                  figure: Any = None) -> None:
    """The files a command over several models writes, in one way: its figure (``figure(results)``,
    a matplotlib Figure or an object with ``.figure``) at `out_fig`, the results as JSON and as tidy
    CSV rows; then exit 130 when the last run was interrupted (what was done is written)."""
    if out_fig is not None and figure is not None:
        fig = figure(results)
        out.print(f"wrote {surgeon.viz.save_figure(getattr(fig, 'figure', fig), out_fig, overwrite=True)}", highlight=False)
    write_json(json_out, [r.to_dict() for r in results])
    write_csv(csv_out, tidy_rows(results))
    if results and getattr(results[-1], "interrupted", False):
        sys.exit(130)


def tidy_rows(results: Sequence[Any], **ids: Any) -> list[dict[str, Any]]:
    """The tidy rows of several results, each prefixed with `ids` (e.g. the model name)."""
    return [{**ids, **row} for r in results for row in r.tidy()]


#: library argument names whose option is spelled otherwise (every other name_with_underscores is --name-with-dashes)
ARG_FLAGS = {"overwrite": "--force", "k": "--top-k", "out": "--out", "json_out": "--json", "csv_out": "--csv"}
_ARG = re.compile(r"(?<![\w.\-'\"])([a-z][a-z0-9_]*)=(True\b|(?=[\w{'\"~(\[.<>-]))?")


def with_flags(message: str, options: Sequence[str]) -> str:
    """A library message with its argument names as a command's options: ``num_classes=10`` ->
    ``--num-classes 10``, ``overwrite=True`` -> ``--force``. `options`: the command's long options;
    names that are not among them stay as written."""
    known = set(options)

    def flag(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        opt = ARG_FLAGS.get(name, "--" + name.replace("_", "-"))
        if opt not in known:
            return m.group(0)
        return opt if value == "True" or value is None else opt + " "

    return _ARG.sub(flag, message)


def reset_console() -> None:
    """Human output back on stdout (a command with --json - moved it to stderr), no held notes."""
    out.file = None  # type: ignore[assignment]
    out.drop_notes()


def select_blocks(g, blocks: str, name: str) -> list:
    """The blocks `blocks` selects in the graph `g` of model `name`; a selection that matches
    nothing (``kind:msa`` on a ResNet) is refused in one line before any work."""
    chosen = g.select(blocks)
    if not chosen:
        kinds = ", ".join(dict.fromkeys(b.kind for b in g.blocks))
        raise SurgeonError(f"no block matches {blocks} in {label(name)} (its kinds: {kinds}); "
                           f"valid: {g.valid_addresses()}")
    return chosen


def check_blocks(model, blocks: str, name: str, input_size: tuple[int, int, int] | None = None) -> None:
    """`select_blocks` for commands that hand the selection to the library (probe, hessian)."""
    if blocks.strip() not in ("*", "all"):
        select_blocks(surgeon.graph(model, input_size=input_size), blocks, name)


def label(name: str) -> str:
    """A model's name in tables and figures: a surgeon file by its stem."""
    return Path(name).stem if name.endswith(".safetensors") else name


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"
