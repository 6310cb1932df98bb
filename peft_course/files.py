"""Writing results without ever leaving half a file: output checks and atomic replacement.

A command that fails or is interrupted must not cost the user what they already had. So an
output directory is checked before any work starts (`check_output_directory`), and every
result file is written to a temporary file beside its target and then moved over it with
`os.replace`, which is atomic on one file system: a reader sees the old file or the new one,
never an empty or truncated one.
"""

from __future__ import annotations

import json
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


MARKER = ".peft-course"  # names the command whose output a directory holds
LOCK = ".peft-course.lock"  # held by the command writing the directory now


def check_output_kind(path: str | Path, kind: str, option: str = "--output") -> Path:
    """`check_output_directory`, and refuse a directory that holds anything but `kind`'s output.

    A command writes only into a new or empty directory, or one an earlier run of the same
    command made (it holds the marker `MARKER` naming it): `peft-course dpo --output` into a
    fine-tuning run, or `finetune --output .` in a folder of the user's own files, would
    otherwise overwrite files of the same names.

    Args:
        path: the output directory asked for.
        kind: the command that will write it (`dpo`, `prompt`, ...).
        option: the option the message names.

    Raises:
        CourseError: if `path` holds another command's output or files no command made.
    """
    path = check_output_directory(path, option)
    if not path.is_dir():
        return path
    marker = path / MARKER
    if marker.is_file():
        made_by = marker.read_text(encoding="utf-8").strip()
        if made_by != kind:
            raise CourseError(
                f"{option} '{path}' holds the output of `peft-course {made_by}`; `peft-course "
                f"{kind}` would overwrite its files: choose another directory"
            )
        return path
    entries = sorted(p.name for p in path.iterdir() if p.name != LOCK)
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise CourseError(
            f"{option} '{path}' is not empty ({shown}) and was not made by `peft-course {kind}`: "
            "choose a new or empty directory, so that nothing in it is overwritten"
        )
    return path


def claim_output_directory(path: str | Path, kind: str) -> Path:
    """Create `path` (if needed) and mark it as `kind`'s output (see `check_output_kind`)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if not (path / MARKER).is_file():
        atomic_write_text(path / MARKER, f"{kind}\n")
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
        # mkstemp makes the file private (0600): give it the mode any new file would have
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


def write_metrics_and_plot(
    output: str | Path, record: dict, plot: Callable[[Path], object]
) -> tuple[Path, Path]:
    """`metrics.json` (`record`, as JSON) and `rewards.png` (drawn by `plot(path)`) in `output`,
    each written whole or not at all: what every alignment run leaves.

    Args:
        output: the run's directory.
        record: the run's JSON-friendly record.
        plot: draws the figure into the path it is given.

    Returns:
        `(metrics.json, rewards.png)` paths.
    """
    output = Path(output)
    metrics = atomic_write_text(output / "metrics.json", json.dumps(record, indent=1))
    with replacing(output / "rewards.png") as temporary:
        plot(temporary)
    return metrics, output / "rewards.png"


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


@contextmanager
def writing_alone(directory: str | Path, option: str = "--output") -> Iterator[None]:
    """Hold `directory` for one command: a second command writing there meanwhile is refused.

    Two runs into one folder would each print `saved:` while one overwrote the other. The lock
    is a file holding this process's id, created exclusively; one left by a process that no
    longer runs (killed, or the machine restarted) is taken over.

    Args:
        directory: the output directory (created if missing).
        option: the option the message names.

    Raises:
        CourseError: if another running process holds `directory`.
    """
    lock = Path(directory) / LOCK
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = lock.read_text(encoding="utf-8").strip() or "0"
            if holder.isdigit() and int(holder) != os.getpid() and process_runs(int(holder)):
                raise CourseError(
                    f"another peft-course command (process {holder}) is writing to {option} "
                    f"'{directory}': wait for it to finish, or choose another directory"
                ) from None
            lock.unlink(missing_ok=True)  # left by a process that is gone
    else:
        raise CourseError(f"could not lock {option} '{directory}' (remove {lock} if it stays)")
    try:
        os.write(handle, str(os.getpid()).encode())
        os.close(handle)
        yield
    finally:
        lock.unlink(missing_ok=True)


@contextmanager
def owning_output(directory: str | Path, kind: str, claim: bool = True) -> Iterator[None]:
    """While a command runs, `directory` is marked as its kind's and held by it alone.

    A directory the command created and left without results (it failed before writing) is
    removed again.

    Args:
        directory: the output directory.
        kind: the command whose output it holds (`claim_output_directory`).
        claim: mark it now; False where the run marks it itself (a fine-tuning run).
    """
    created = not Path(directory).exists()
    if claim:
        claim_output_directory(directory, kind)
    try:
        with writing_alone(directory):
            yield
    finally:
        if created and {p.name for p in Path(directory).iterdir()} <= {MARKER}:
            shutil.rmtree(directory, ignore_errors=True)


def process_runs(pid: int) -> bool:
    """Whether a process with id `pid` is running on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True
