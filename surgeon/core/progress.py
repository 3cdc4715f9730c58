"""A rich progress bar for long loops, or nothing: ``with progress(show, total, "probing") as advance``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["progress"]


@contextmanager
def progress(show: bool, total: int | None, label: str, done: int = 0) -> Iterator[Callable[[], None]]:
    """Yield `advance`, to call once per finished step (`done` steps finished before, e.g. of a
    resumed run); the bar disappears when done. It is drawn on stderr: stdout holds a command's
    data alone (``--json -``, ``--csv -``)."""
    if not show:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda: bar.advance(task)
