"""A run's history as TensorBoard event files, so `tensorboard --logdir runs` shows every run.

Each run keeps its history as a list of entries (`history.json`: one dict per validation or
log step, with a `step`); `write_events` writes every number of every entry as a scalar under
its own name (`train_loss`, `val_accuracy`, `rewards/margins`, ...), the step on the x-axis.
`LiveEvents` writes each entry as the run trains, `read_events` reads them back through
TensorBoard's own reader, as TensorBoard would.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EVENTS_PREFIX = "events.out.tfevents."  # the name TensorBoard looks for


def event_files(log_dir: str | Path) -> list[Path]:
    """The TensorBoard event files directly inside `log_dir` (none if it does not exist)."""
    log_dir = Path(log_dir)
    return sorted(log_dir.glob(f"{EVENTS_PREFIX}*")) if log_dir.is_dir() else []


def scalars_of(entry: dict[str, Any], step_key: str = "step") -> dict[str, float]:
    """The entry's numbers other than its step: what TensorBoard plots (no booleans, no NaN)."""
    return {
        key: float(value)
        for key, value in entry.items()
        if key != step_key
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    }


def write_events(
    history: Sequence[dict[str, Any]], log_dir: str | Path, step_key: str = "step"
) -> Path:
    """Write `history` as one TensorBoard event file in `log_dir`, replacing earlier ones there.

    The file is written in a temporary directory and moved in whole, and event files an
    earlier run left in `log_dir` are removed, so that a rerun (`--overwrite`) shows as one
    curve, not two laid over each other.

    Args:
        history: the entries, each with `step_key` and numbers (`train_loss`, `val_loss`, ...).
        log_dir: the directory TensorBoard is pointed at (a run directory); created if missing.
        step_key: the key holding each entry's step.

    Returns:
        The event file written.
    """
    from torch.utils.tensorboard import SummaryWriter  # loads tensorboard: only when writing

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    old = event_files(log_dir)
    scratch = Path(tempfile.mkdtemp(dir=log_dir, prefix=".events-"))
    try:
        with SummaryWriter(log_dir=str(scratch)) as writer:
            for position, entry in enumerate(history):
                step = int(entry.get(step_key, position))
                for tag, value in scalars_of(entry, step_key).items():
                    writer.add_scalar(tag, value, step)
        (written,) = event_files(scratch)
        target = log_dir / written.name
        os.replace(written, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for path in old:
        if path != target:
            path.unlink(missing_ok=True)
    return target


class LiveEvents:
    """Each validation's numbers appended to an event file while the run trains.

    TensorBoard then shows a run as it trains; `write_events` replaces the file with the whole
    history when the run finishes (a resumed run's earlier steps included). Event files an
    earlier run left in `log_dir` are removed at the first entry, so that an `--overwrite`
    does not show the old curve under the new one.

    Args:
        log_dir: the directory TensorBoard is pointed at (a run directory).
    """

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self.writer: Any = None

    def __call__(self, entry: dict[str, Any]) -> None:
        """Write `entry`'s numbers at its step, and flush, so TensorBoard sees them now."""
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            for path in event_files(self.log_dir):
                path.unlink(missing_ok=True)
            self.writer = SummaryWriter(log_dir=str(self.log_dir))
        for tag, value in scalars_of(entry).items():
            self.writer.add_scalar(tag, value, int(entry["step"]))
        self.writer.flush()

    def close(self) -> None:
        """Close the file (nothing to do if no entry came)."""
        if self.writer is not None:
            self.writer.close()


def read_events(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in `log_dir`'s event files, as TensorBoard reads them: tag -> (step, value).

    Args:
        log_dir: a directory `write_events` wrote into.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }
