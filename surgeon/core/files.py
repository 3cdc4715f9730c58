"""Files: checking the paths a user gives, and writing outputs atomically.

Every reader of a user-given file or folder checks it here first (`check_input`, `check_folder`:
a one-line error saying what the path is instead); every writer checks its target before long
work (`check_output`: suffix, folder, overwrite policy) and writes through `atomic_path` (a temp
file beside the target, renamed only when the write succeeds), so a failure or Ctrl-C never
leaves a partial output. `write_json` and `write_text` are the atomic writes of whole files.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from surgeon.core.errors import SurgeonError
from surgeon.core.jsonio import dumps

__all__ = ["check_input", "check_folder", "check_output", "atomic_path", "write_text", "write_json"]

_NOT_FILES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
              (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_input(path: str | os.PathLike, what: str = "file", hint: str = "check the path") -> Path:
    """`path` as a Path when it names a readable regular file; else a `SurgeonError` saying what it
    is instead: missing (with `hint`), a directory, a FIFO, a socket or a device, or unreadable.
    Every reader of a user-given file (weights, recipes, data files, surgeon files) checks here."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise SurgeonError(f"{what} {str(p)!r} does not exist; {hint}") from None
    except OSError as exc:
        raise SurgeonError(f"{what} {str(p)!r} cannot be read ({exc.strerror}); {hint}") from None
    for test, name in _NOT_FILES:
        if test(mode):
            raise SurgeonError(f"{what} {str(p)!r} is {name}, not a file; give a file")
    if not os.access(p, os.R_OK):
        raise SurgeonError(f"{what} {str(p)!r} is not readable (permission denied); fix its permissions")
    return p


def check_folder(path: str | os.PathLike, what: str = "folder", hint: str = "check the path") -> Path:
    """`path` as a Path when it names a folder; else a `SurgeonError` saying what it is instead:
    missing (with `hint`) or a file. Every reader of a user-given folder checks here."""
    p = Path(path).expanduser()
    if not p.exists():
        raise SurgeonError(f"{what} {str(p)!r} does not exist; {hint}")
    if not p.is_dir():
        raise SurgeonError(f"{what} {str(p)!r} is a file, not a folder; {hint}")
    return p


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A failure or interruption leaves no partial output file behind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp (and some writers) make it private: a normal file's mode
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_output(path: str | os.PathLike, *, overwrite: bool = False,
                 suffixes: Sequence[str] = (".safetensors",)) -> Path:
    """Refuse an output path that cannot or must not be written: a suffix not in `suffixes`, a
    missing or read-only directory, an existing file without `overwrite`. Callers check before
    long work."""
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise SurgeonError(f"output {str(target)!r} must end in {' or '.join(suffixes)}")
    if not target.parent.exists():
        raise SurgeonError(f"output directory {str(target.parent)!r} does not exist; create it first")
    if not os.access(target.parent, os.W_OK):
        raise SurgeonError(f"output directory {str(target.parent)!r} is not writable; choose another out=")
    if target.exists() and not overwrite:
        raise SurgeonError(f"{str(target)!r} exists; pass overwrite=True to replace it")
    return target


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically (temp file + rename); the one atomic write of a text file."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return target


def write_json(path: str | os.PathLike, obj, *, indent: int | None = 2) -> Path:
    """Write `obj` as strict JSON (`surgeon.core.jsonio.dumps`: NaN -> null, numpy / torch scalars
    -> numbers) to `path` atomically."""
    return write_text(path, dumps(obj, indent=indent) + "\n")
