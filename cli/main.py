"""The `surgeon` command: model surgery and instrumentation for vision networks.

Every user mistake (an unknown model, a bad address, an unreadable weights file) ends with one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from surgeon.errors import SurgeonError

from . import curvature
from . import evaluate as evaluate_cmd
from . import inspect as inspect_cmd
from . import probe as probe_cmd
from . import robustness as robustness_cmd
from . import surgery
from . import train as train_cmd
from .common import err

app = typer.Typer(
    name="surgeon",
    help="Model surgery and instrumentation for any timm or torchvision classifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("inspect")(inspect_cmd.inspect)
app.command("alternate")(surgery.alternate)
app.command("lesion")(surgery.lesion)
app.command("insert")(surgery.insert)
app.command("replace")(surgery.replace)
app.command("info")(surgery.info)
app.command("eval")(evaluate_cmd.evaluate)
app.command("lesion-study")(evaluate_cmd.lesion_study)
app.command("probe")(probe_cmd.probe)
app.command("hessian")(curvature.hessian)
app.command("landscape")(curvature.landscape)
app.command("robustness")(robustness_cmd.robustness)
app.command("frequency-noise")(robustness_cmd.frequency_noise)
app.command("train")(train_cmd.train)

from . import search as search_cmd

app.command("search")(search_cmd.search)
app.command("report")(search_cmd.report)

from . import toolbox

app.command("attack")(toolbox.attack)


@app.callback()
def _root() -> None:
    """Model surgery and instrumentation for any timm or torchvision classifier."""


def main() -> None:
    """Console entry point: run the app, turning `SurgeonError` into one line and exit code 2."""
    try:
        app()
    except SurgeonError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
