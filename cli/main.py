"""The `surgeon` command: model surgery and instrumentation for vision networks.

Every user mistake (an unknown model, a bad address, an unreadable weights file) ends with one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import copy
import functools
import gc
import os
import signal
import sys

import typer
import typer.main
from rich.markup import escape
from typer import TyperException
from typer.core import TyperArgument, TyperOption

from surgeon.core.errors import SurgeonError

from surgeon.cli import curvature
from surgeon.cli import evaluate as evaluate_cmd
from surgeon.cli import inspect as inspect_cmd
from surgeon.cli import probe as probe_cmd
from surgeon.cli import robustness as robustness_cmd
from surgeon.cli import surgery
from surgeon.cli import train as train_cmd
from surgeon.cli.common import err, out, reset_console, with_flags
from surgeon.cli.ranges import check_commands, set_ranges


def _flag_type(self: TyperOption, ctx) -> str | None:
    """No value type after a plain flag (--force, not --force <bool>)."""
    return None if self.is_flag and self.metavar is None else _option_type(self, ctx)


def _usage_name(self: TyperArgument) -> str:
    """Arguments in usage lines as click writes them: MODEL, MODELS..., [FOLDER]."""
    name = (self.metavar or self.name or "").upper()
    return (name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")


_option_type = TyperOption.display_type_rich
if hasattr(TyperArgument, "_usage_display_name"):
    TyperOption.display_type_rich = _flag_type
    TyperArgument._usage_display_name = _usage_name

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

from surgeon.cli import search as search_cmd

app.command("search")(search_cmd.search)
app.command("report")(search_cmd.report)

from surgeon.cli import toolbox

app.command("attack")(toolbox.attack)
app.command("ensemble")(toolbox.ensemble)
app.command("latency")(toolbox.latency)
app.command("localize")(toolbox.localize)
app.command("trajectory")(toolbox.trajectory)
app.command("stability")(toolbox.stability)
check_commands(app)  # every option checked before its command runs (cli.ranges), however the app is invoked

from surgeon.cli import compare as compare_cmd

app.command("compare")(compare_cmd.compare)


@app.callback()
def _root() -> None:
    """Model surgery and instrumentation for any timm or torchvision classifier."""
    reset_console()


def main() -> None:
    """Console entry point: run the app, turning `SurgeonError` and click's usage errors into one
    line and exit code 2; numeric options are range-checked first (`cli.ranges`)."""
    named = _named_command(sys.argv[1:])
    if named is not None and not {"--help", "-h"} & set(sys.argv[1:]):
        _import_base()  # a run, not its help
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: one process group; rank 0 prints and writes
        from surgeon.parallel import distributed

        if distributed.init() and not distributed.is_main():
            out.quiet = err.quiet = True
    signal.signal(signal.SIGTERM, _terminated)  # SIGTERM unwinds like Ctrl-C: temp files removed, work kept
    try:
        code = command(named).main(standalone_mode=False)
        if code == 130:  # typer's answer to a KeyboardInterrupt no command caught (commands that keep work say so and exit)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        _fail(INTERRUPTED, 130)
    except SurgeonError as exc:  # the library names its arguments (num_classes=10); say the options (--num-classes 10)
        _fail(with_flags(str(exc), _options(sys.argv[1:])))
    except typer.Abort:
        _fail("aborted", 1)
    except TyperException as exc:  # click's usage errors: one line, not click's usage block and box
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `surgeon`: typer has printed the help
            sys.exit(2)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        _fail(" ".join(exc.format_message().split()) + hint, getattr(exc, "exit_code", 2))
    out.flush_notes()
    sys.exit(code if isinstance(code, int) else 0)


def _import_base() -> None:
    """Import torch and timm, which every command runs on, with Python's cyclic garbage collector
    off, then freeze what they built and turn the collector back on. Left on, the collector walks
    their millions of long-lived objects again and again while they load: some 0.7 s of a 4.5 s
    `surgeon alternate` (bench/RESULTS.md, "the headline job"). Frozen, later collections walk
    only what the command itself makes; cycles it makes are collected as before. A process that
    has torch already (in-process callers, the tests) is left as it is."""
    if "torch" in sys.modules:
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _named_command(argv: list[str]) -> str | None:
    """The command `argv` runs, when its first word names one (else None: help, a typo)."""
    names = {c.name for c in app.registered_commands}
    return argv[0] if argv and argv[0] in names else None


@functools.cache
def command(only: str | None = None):
    """The click group of `app` with range-checked commands, built once (typer builds it anew on
    every call; in-process tests call `main` many times). With `only`, the group holds that one
    command: typer builds a command's parameters from its signature (some 3 ms each, and its
    first one imports pydantic), so a run builds the command it runs, not all 24; help, a typo
    and a bare `surgeon` get the whole group (its list and its suggestions)."""
    check_commands(app)
    source = app
    if only is not None:
        source = copy.copy(app)
        source.registered_commands = [c for c in app.registered_commands if c.name == only]
    group = typer.main.get_command(source)
    set_ranges(group)  # the ranges of checks.ARGS, shown by --help
    return group


def _options(argv: list[str]) -> list[str]:
    """The long options of the command `argv` runs (every command's when it names none)."""
    group = command()
    chosen = [group.commands[a] for a in argv[:1] if a in group.commands] or list(group.commands.values())
    return [o for c in chosen for p in c.params for o in getattr(p, "opts", []) if o.startswith("--")]


#: What an interrupted command says (Ctrl-C or SIGTERM), whatever it was doing: files are written whole
#: through a temporary file or not at all, and the long runs keep what they finished.
INTERRUPTED = ("interrupted: no file was left half-written (outputs are written whole or not at all); "
               "runs with a run folder or a save file (train, search, landscape, compare) resume where they stopped")


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _fail(message: str, code: int = 2) -> None:
    out.drop_notes()  # nothing on stdout for a refused command
    err.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
