"""Writing results without ever leaving half a file: output checks and atomic replacement.

A command that fails or is interrupted must not cost the user what they already had. So an
output directory is checked before any work starts (`check_output_directory`), and every
result file is written to a temporary file beside its target and then moved over it with
`os.replace`, which is atomic on one file system: a reader sees the old file or the new one,
never an empty or truncated one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from peft_course.errors import CourseError


def check_output_directory(path: str | Path, option: str = "--output") -> Path:
    """`path` if it is, or can be made, a writable directory; else a `CourseError` naming `option`.

    Nothing is created: the first existing ancestor of a directory that does not exist yet
    must be a writable directory, so that creating it later cannot fail.

    Args:
        path: the output directory asked for.
        option: the option the message names (`--output` unless given).

    Raises:
        CourseError: if `path` is a file, an unwritable directory, or cannot be created under
            its first existing ancestor.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise CourseError(f"{option} '{path}' is a file, not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise CourseError(f"{option} '{path}' is a directory you cannot write to")
        return path
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CourseError(
            f"cannot create {option} '{path}': '{ancestor}' is a file, not a directory"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CourseError(
            f"cannot create {option} '{path}': '{ancestor}' is a directory you cannot write to"
        )
    return path


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success it replaces `path` atomically.

    On an error (or Ctrl-C) the temporary file is removed and `path` keeps its old content. The
    temporary name ends with `path`'s suffix, so writers that choose a format by the file name
    (matplotlib's `savefig`) still work.

    Args:
        path: the file to replace; its directory is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
    )
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` (UTF-8) through a temporary file, so `path` is never half-written.

    Args:
        path: the file to write; its directory is created if missing.
        text: the file's new content.

    Returns:
        `path`, as a `Path`.
    """
    with replacing(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def build_directory_once(
    target: str | Path, build: Callable[[Path], object], ready: str = "config.json"
) -> Path:
    """`target`, built by `build(scratch)` unless `target/ready` already exists.

    The directory is built in a temporary sibling and renamed into place, so a crash or a
    concurrent build never leaves a half-written model behind; when two processes build at
    once, the first rename wins and the other keeps its copy.

    Args:
        target: the directory to build.
        build: writes the directory's content into the empty temporary directory it is given.
        ready: the file whose presence in `target` means that it is built already.

    Returns:
        `target`, as a `Path`.
    """
    target = Path(target)
    if (target / ready).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        build(scratch)
        try:
            scratch.rename(target)
        except OSError:  # another process finished first: keep its copy
            if not (target / ready).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
