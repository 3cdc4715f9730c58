"""Run folders that a failed start leaves as they were.

A command that writes a folder of work (a search's ``runs/NAME/``, a training's ``NAME.run/``)
creates it before the work starts. When the attempt fails before the run really started (nothing
worth resuming was written: no checkpoint, no finished result), what this attempt created is
removed again, so the same command can simply be run again; whatever existed before the attempt
(an earlier run's files, a parent folder) is never touched.

    undo = undo_on_failure(run_dir, started=lambda d: (d / "checkpoint.pt").is_file())
    try:
        ...  # creates run_dir and works in it
    except BaseException:
        undo()
        raise

It also guards the one start that always fails in a spawned worker process: a script that calls
a multi-process command at its top level without ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import ast
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from surgeon.core.errors import SurgeonError

__all__ = ["check_spawn_safe", "run_dir_for", "undo_on_failure"]


def run_dir_for(out: str | os.PathLike) -> Path:
    """The folder beside an output file that keeps its checkpoint and logs: ``name.run/``."""
    p = Path(out)
    return p.with_name(p.name.split(".")[0] + ".run")


def undo_on_failure(folder: str | Path, started: Callable[[Path], bool]) -> Callable[[], None]:
    """A function that removes what was created under (and including) `folder` since this call,
    unless ``started(folder)`` holds by then (the run has something worth resuming). The entries
    that existed at this call, and the existing parents of `folder`, are kept."""
    folder = Path(folder)
    top = folder  # the outermost folder this attempt may create (mkdir parents=True)
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    existed = folder.exists()
    before = set(folder.iterdir()) if existed and folder.is_dir() else set()

    def undo() -> None:
        if started(folder):
            return
        if not existed:
            shutil.rmtree(top if top.exists() else folder, ignore_errors=True)
            return
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry not in before:
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    return undo


def _guarded_lines(tree: ast.Module) -> set[int]:
    """The lines inside top-level ``if __name__ == "__main__":`` blocks of a module."""
    lines: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def check_spawn_safe(what: str) -> None:
    """Refuse, before any work, to start spawned worker processes from the top level of a script
    without the ``if __name__ == "__main__":`` guard: each worker re-imports the script and would
    run `what` again (and fail). In a worker that is importing the script, refuse as well."""
    fix = f'put the call under if __name__ == "__main__": (spawned workers re-import the script)'
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SurgeonError(f"{what} was called while a worker process imported the main script; {fix}")
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path or not Path(path).is_file():
        return  # an interactive session, python -c, a notebook: nothing is re-imported
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:
        return  # not reached from the script's top level (a thread, a callback): not run again on import
    try:
        tree = ast.parse(Path(path).read_text(), path)
    except (SyntaxError, UnicodeDecodeError, OSError):
        return
    if frame.f_lineno not in _guarded_lines(tree):
        raise SurgeonError(f"{what} is called at the top level of {path} (line {frame.f_lineno}); {fix}")
