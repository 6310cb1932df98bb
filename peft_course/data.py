"""Datasets by name or from local files, checked, split and tokenized the same way.

Every source ends up as a `datasets.DatasetDict` with `train`, `validation` and `test`
splits and the course's own column names: `text`, an optional `text_pair`, and an integer
`label` in `0..num_labels-1`. The registry below records, for each dataset the course uses,
where it lives on the hub and which of its columns play which role; local CSV/TSV, JSONL and
Parquet files go through the same checks, so a learner's own data behaves like the hub's.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict

from peft_course.errors import (
    CourseError,
    check_int,
    check_positive_int,
    check_string_list,
    describe,
)
from peft_course.synthetic import (
    EMOTION_LABELS,
    ENTAILMENT_LABELS,
    SENTIMENT_LABELS,
    synthetic_emotion,
    synthetic_entailment,
    synthetic_sentiment,
)
from peft_course.settings import DEFAULT_DATASET, TRAINING

SPLITS = ("train", "validation", "test")


class DataError(CourseError):
    """Bad data: unknown dataset, missing column, label out of range, empty split, bad file."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives and which of its columns are the text, the pair and the label.

    Attributes:
        name: the registry name (`--dataset`).
        hub_id: the dataset's repository on the hub; None for data the package generates.
        columns: maps the course's role (`text`, `text_pair`, `label`; or `instruction`,
            `context`, `response` for instruction data) to the source's column name.
        label_names: the class names in label-id order; empty: none recorded.
        hub_config: the hub dataset's configuration (GLUE's `rte`); None: its default.
        hub_splits: maps each course split to the source split; a split missing there is
            carved from `train`.
        task: `classification` or `instruction`.
        description: one line on what the data is.
    """

    name: str
    hub_id: str | None
    columns: dict[str, str]
    label_names: tuple[str, ...] = ()
    hub_config: str | None = None
    hub_splits: dict[str, str] = field(default_factory=lambda: {s: s for s in SPLITS})
    task: str = "classification"
    description: str = ""


TWITTER_TOPICS = (
    "Analyst Update",
    "Fed | Central Banks",
    "Company | Product News",
    "Treasuries | Corporate Debt",
    "Dividend",
    "Earnings",
    "Energy | Oil",
    "Financials",
    "Currencies",
    "General News | Opinion",
    "Gold | Metals | Materials",
    "IPO",
    "Legal | Regulation",
    "M&A | Investments",
    "Macro",
    "Markets",
    "Politics",
    "Personnel Change",
    "Stock Commentary",
    "Stock Movement",
)

GENERATED = {
    "synthetic-sentiment": synthetic_sentiment,
    "synthetic-entailment": synthetic_entailment,
    "synthetic-emotion": synthetic_emotion,
}

REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "imdb",
            "stanfordnlp/imdb",
            {"text": "text", "label": "label"},
            ("negative", "positive"),
            hub_splits={"train": "train", "test": "test"},
            description="50k long movie reviews; validation carved from train",
        ),
        DatasetSpec(
            "rotten_tomatoes",
            "cornell-movie-review-data/rotten_tomatoes",
            {"text": "text", "label": "label"},
            ("negative", "positive"),
            description="10,662 one-sentence movie reviews (Pang & Lee)",
        ),
        DatasetSpec(
            "twitter-financial-news-topic",
            "zeroshot/twitter-financial-news-topic",
            {"text": "text", "label": "label"},
            TWITTER_TOPICS,
            hub_splits={"train": "train", "test": "validation"},
            description="finance tweets in 20 topics; the hub's validation split is the test",
        ),
        DatasetSpec(
            "emotion",
            "dair-ai/emotion",
            {"text": "text", "label": "label"},
            ("sadness", "joy", "love", "anger", "fear", "surprise"),
            description="tweets labelled with six emotions",
        ),
        DatasetSpec(
            "rte",
            "nyu-mll/glue",
            {"text": "sentence1", "text_pair": "sentence2", "label": "label"},
            ("entailment", "not_entailment"),
            hub_config="rte",
            hub_splits={"train": "train", "test": "validation"},
            description=(
                "premise/hypothesis pairs; GLUE's test "
                "labels are hidden, so its dev set is the test"
            ),
        ),
        DatasetSpec(
            "dolly",
            "databricks/databricks-dolly-15k",
            {"instruction": "instruction", "context": "context", "response": "response"},
            hub_splits={"train": "train"},
            task="instruction",
            description="15k human-written instruction/context/response triples",
        ),
        DatasetSpec(
            "synthetic-sentiment",
            None,
            {"text": "text", "label": "label"},
            tuple(SENTIMENT_LABELS),
            description="generated by the package: templates, negation and contrast; no download",
        ),
        DatasetSpec(
            "synthetic-entailment",
            None,
            {"text": "text", "text_pair": "text_pair", "label": "label"},
            tuple(ENTAILMENT_LABELS),
            description=(
                "generated premise/hypothesis pairs: negation, unmentioned subjects, swapped roles"
            ),
        ),
        DatasetSpec(
            "synthetic-emotion",
            None,
            {"text": "text", "label": "label"},
            tuple(EMOTION_LABELS),
            description="generated sentences in the emotion dataset's six labels",
        ),
    ]
}


@dataclass
class ClassificationData:
    """Checked splits with `text` (and `text_pair`) and `label` columns, plus the label names.

    Attributes:
        name: the dataset's name, or the training file's name for local files.
        splits: the `train`, `validation` and `test` splits.
        label_names: the class names in label-id order.
    """

    name: str
    splits: DatasetDict
    label_names: list[str]

    @property
    def num_labels(self) -> int:
        """The number of classes."""
        return len(self.label_names)

    @property
    def is_pair(self) -> bool:
        """Whether each example is a pair of texts (`text` and `text_pair`)."""
        return "text_pair" in self.splits["train"].column_names


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for `name`, or an error listing the known names.

    Args:
        name: a registry name, such as `imdb` or `synthetic-sentiment`.

    Raises:
        DataError: if `name` is not in the registry.
    """
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(REGISTRY))
        raise DataError(
            f"unknown dataset {name!r}. Known datasets: {known}; or pass local files with "
            f"--train-file/--validation-file/--test-file"
        ) from None


# --- reading a local file ---------------------------------------------------------------------
# Every frame this module checks is indexed by where its rows are in the source, counted from 1:
# the line of a CSV/TSV (the header is line 1) or JSON Lines file, the row of a Parquet file or
# of a hub split. Messages quote that number, so a user can open the file at the bad row.

SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".pq")


def row_unit(path: str | Path) -> str:
    """What a row number of this file counts: `line` (CSV, TSV, JSONL),
    `record` (JSON), `row` (Parquet).

    Args:
        path: the file; only its extension is read.
    """
    suffix = Path(path).suffix.lower()
    return {".parquet": "row", ".pq": "row", ".json": "record"}.get(suffix, "line")


def read_table(path: str | Path, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a CSV, TSV, JSON Lines, JSON or Parquet file into a DataFrame, by its extension.

    The index holds each row's place in the file (see `row_unit`), counted from 1. In a CSV/TSV
    only an empty cell is missing (the text "NA" stays text), and `text_columns` are read as
    strings, so a review that is a number ("10") is not turned into one.

    Args:
        path: the file to read.
        text_columns: the columns of a CSV/TSV to read as strings.

    Raises:
        DataError: if `path` is a directory or missing, has an unknown extension, is empty, or
            cannot be read (not UTF-8, not valid JSON, ...).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"cannot read '{path}': it is a directory, not a file")
    if not path.is_file():
        raise DataError(f"cannot read '{path}': no such file")
    if not os.access(path, os.R_OK):
        raise DataError(f"cannot read '{path}': you have no permission to read it")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(
            f"cannot read '{path}': unknown extension '{suffix}' "
            "(use .csv, .tsv, .jsonl, .json or .parquet)"
        )
    if suffix not in (".parquet", ".pq") and _is_blank(path):
        raise DataError(f"cannot read '{path}': the file is empty")
    if suffix == ".jsonl":
        try:
            return _read_jsonl(path)
        except UnicodeDecodeError as error:
            raise DataError(
                f"cannot read '{path}': not UTF-8 text ({error.reason} at byte {error.start})"
            ) from None
    try:
        if suffix in (".csv", ".tsv"):
            return _read_delimited(path, text_columns)
        if suffix == ".json":
            frame = pd.read_json(path)
        else:
            frame = pd.read_parquet(path)
    except Exception as error:  # pandas and pyarrow raise many types; the message says which file
        raise DataError(
            f"cannot read '{path}': {type(error).__name__}: {_first_line(error)}"
        ) from error
    frame.index = range(1, len(frame) + 1)
    return frame


def _is_blank(path: Path, probe: int = 1 << 16) -> bool:
    """True if the file holds nothing but whitespace (only its first `probe` bytes are read)."""
    with open(path, "rb") as handle:
        start = handle.read(probe)
    return len(start) < probe and not start.strip()


def _first_line(error: Exception) -> str:
    """The first line of an exception's message (library messages can run over many lines)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _read_delimited(path: Path, text_columns: tuple[str, ...]) -> pd.DataFrame:
    """A CSV or TSV file, indexed by the line each record starts on
    (quoted fields may span lines)."""
    tsv = path.suffix.lower() == ".tsv"
    # GLUE's TSVs hold bare quotes
    options = {"sep": "\t", "quoting": csv.QUOTE_NONE} if tsv else {}
    with open(path, newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle, delimiter="\t" if tsv else ","), [])
    for i, name in enumerate(header):
        if name in header[:i]:
            raise DataError(
                f"cannot read '{path}': the header names the column {name!r} twice (columns "
                f"{header.index(name) + 1} and {i + 1}); rename one"
            )
    frame = pd.read_csv(
        path, dtype={c: str for c in text_columns}, keep_default_na=False, na_values=[""], **options
    )
    lines = _record_lines(path, "\t" if tsv else ",", csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    frame.index = lines if len(lines) == len(frame) else range(2, len(frame) + 2)
    return frame


def _record_lines(path: Path, delimiter: str, quoting: int) -> list[int]:
    """The line on which each data record of a CSV/TSV starts,
    skipping blank lines as pandas does."""
    lines: list[int] = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
            start = 1
            for record in reader:
                if record and not (len(record) == 1 and not record[0].strip()):
                    lines.append(start)
                start = reader.line_num + 1
    except (csv.Error, UnicodeDecodeError):
        return []
    return lines[1:]  # the first record is the header


def _read_jsonl(path: Path) -> pd.DataFrame:
    """A JSON Lines file read line by line, so that a bad line is named by its number."""
    rows, lines = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{path}, line {number}: not valid JSON ({error.msg} at column {error.colno})"
                ) from None
            if isinstance(row, list):
                raise DataError(
                    f"{path}, line {number}: a JSON array, not an object; a .jsonl file holds one "
                    f"JSON object per line (an array of objects belongs in a .json file)"
                )
            if not isinstance(row, dict):
                raise DataError(
                    f"{path}, line {number}: {describe(row)} is not a JSON object "
                    f"(a .jsonl file holds one object per line)"
                )
            rows.append(row)
            lines.append(number)
    return pd.DataFrame(rows, index=lines)


def _rename_columns(frame: pd.DataFrame, columns: dict[str, str], where: str) -> pd.DataFrame:
    """Keep the role columns only, renamed to the course's names; name any that are missing."""
    missing = [source for source in columns.values() if source not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {missing}; the columns are {list(frame.columns)}. "
            f"Name the right ones with --text-column/--label-column"
        )
    return pd.DataFrame(
        {role: frame[source] for role, source in columns.items()}, index=frame.index
    )


# --- checking every row -----------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    """None, a float NaN (pandas' marker for an empty cell) or `pd.NA` (a nullable column's)."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _show(value: Any) -> str:
    """A cell as a message quotes it: numbers bare (no `np.int64(...)`),
    anything else as `describe` does."""
    if isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, (bool, np.bool_)):
        return str(value)
    return describe(value).removeprefix("the string ")


def check_texts(
    frame: pd.DataFrame, columns: dict[str, str], where: str, unit: str = "row"
) -> None:
    """Every `text` (and `text_pair`) cell must be a non-blank string; else name the first bad row.

    Args:
        frame: rows with the course's column names, indexed by their place in the source.
        columns: maps the course's roles to the source's column names, which the message uses.
        where: the source the message names (a file, or `name [split]`).
        unit: what the index counts: `line`, `record` or `row`.

    Raises:
        DataError: naming the first row whose text is missing, not a string, or blank.
    """
    for role in ("text", "text_pair"):
        if role not in frame.columns:
            continue
        name = columns.get(role, role)
        for index, value in frame[role].items():
            if _is_missing(value):
                problem = f"no {name!r}"
            elif not isinstance(value, str):
                problem = f"{name!r} holds {_show(value)}, not text"
            elif not value.strip():
                problem = f"{name!r} is blank"
            else:
                continue
            raise DataError(f"{where}, {unit} {index}: {problem}")


def whole_number(value: Any) -> int | None:
    """`value` as an int if it is a whole number:
    3, 3.0, "3" (a number stored as text); else None.

    Args:
        value: one cell; a bool is not a number here.
    """
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def label_id(value: Any, label_names: list[str]) -> int:
    """The label id in `0..len(label_names)-1` that a cell stands for,
    or a `DataError` saying why none.

    A string is first looked up among the label names; a whole number (also one stored as
    text, as Parquet and JSON files sometimes do) is the id itself. A fraction such as 0.5 is
    refused rather than truncated, and so is a bool.

    Args:
        value: one label cell.
        label_names: the class names in label-id order.

    Raises:
        DataError: if the cell is empty, out of range, no label name, or not a whole number.
    """
    count = len(label_names)
    if _is_missing(value):
        raise DataError("no label")
    if isinstance(value, str) and value.strip() in label_names:
        return label_names.index(value.strip())
    number = whole_number(value)
    if number is not None:
        if 0 <= number < count:
            return number
        raise DataError(
            f"label {_show(value)} is outside 0..{count - 1} ({count} labels: {label_names})"
        )
    if isinstance(value, str):
        raise DataError(f"label {value!r} is not one of the label names {label_names}")
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        raise DataError(
            f"label {_show(value)} is not a whole number (labels are 0..{count - 1} or the names "
            f"{label_names})"
        )
    raise DataError(f"label {describe(value)} is not a label id or name")


def encode_labels(
    frame: pd.DataFrame, label_names: list[str], where: str, unit: str = "row"
) -> pd.DataFrame:
    """Turn every label into an integer in `0..len(label_names)-1`, or name the first bad row.

    The index of `frame` is the rows' place in the source (`where`), so the message points at
    the file's line. A label outside the range is an error rather than a silent extra class.

    Args:
        frame: rows with a `label` column.
        label_names: the class names in label-id order.
        where: the source the message names.
        unit: what the index counts: `line`, `record` or `row`.

    Returns:
        A copy of `frame` whose `label` column holds the ids (int64).

    Raises:
        DataError: naming the first row whose label is not valid, and why.
    """
    ids = []
    for index, value in frame["label"].items():
        try:
            ids.append(label_id(value, label_names))
        except DataError as error:
            raise DataError(f"{where}, {unit} {index}: {error}") from None
    frame = frame.copy()
    frame["label"] = np.array(ids, dtype="int64")
    return frame


def infer_label_names(
    labels: pd.Series, source: tuple[str, str] = ("the data", "row")
) -> list[str]:
    """Label names for data that names none: "0".."max" for whole numbers, else the sorted
    strings.

    Whole numbers must then cover 0..max: a file of 0s and 1s with one 7 is a typo far more
    often than an eight-class problem with six classes never seen, so it is refused.

    Args:
        labels: the training split's label column, indexed by each row's line or row number.
        source: the file and its row unit ("line" or "row"), for the message.

    Raises:
        DataError: if whole-number labels leave a class of 0..max without an example.
    """
    values = [(i, v) for i, v in labels.items() if not _is_missing(v)]
    numbers_ = [whole_number(v) for _, v in values]
    if values and all(n is not None for n in numbers_):
        top = max(max(numbers_), 0)
        unused = sorted(set(range(top + 1)) - set(numbers_))
        if unused:
            where = next(i for (i, _), n in zip(values, numbers_) if n == top)
            shown = ", ".join(map(str, unused[:5])) + (", ..." if len(unused) > 5 else "")
            raise DataError(
                f"{source[0]}, {source[1]} {where}: label {top} would make the classes 0..{top}, "
                f"but {shown} never occur: fix the label if it is a typo, or name the classes "
                "(--label-names, in label-id order)"
            )
        return [str(i) for i in range(top + 1)]
    return sorted({v.strip() for _, v in values if isinstance(v, str) and whole_number(v) is None})


def check_label_names(label_names: Any, what: str = "label_names") -> list[str]:
    """A list of distinct, non-blank strings (two equal names would make two classes one).

    Args:
        label_names: the names the user gave.
        what: the parameter or option the message names.

    Returns:
        The names, stripped of surrounding whitespace.

    Raises:
        DataError: if a name is blank or repeated.
    """
    names = check_string_list(what, label_names)
    blank = [i for i, name in enumerate(names, start=1) if not name.strip()]
    if blank:
        raise DataError(f"{what}: label name {blank[0]} is blank: {names}")
    stripped = [name.strip() for name in names]
    for i, name in enumerate(stripped):
        if name in stripped[:i]:
            raise DataError(f"{what} repeats {name!r}: {names}; each class needs its own name")
    return stripped


# --- splitting --------------------------------------------------------------------------------


def _check_not_empty(splits: dict[str, pd.DataFrame], source: str) -> None:
    """Refuse a split with no rows."""
    for split, frame in splits.items():
        if len(frame) == 0:
            raise DataError(f"{source}: the {split} split is empty")


def _carve_missing_splits(
    frames: dict[str, pd.DataFrame], fraction: float, seed: int, source: str = "train"
) -> dict[str, pd.DataFrame]:
    """Fill a missing validation or test split with a seeded slice of train (`source` names it)."""
    frames = dict(frames)
    rows = len(frames["train"])
    for split in ("validation", "test"):
        if split not in frames:
            train = frames["train"].sample(frac=1.0, random_state=seed).reset_index(drop=True)
            n = max(1, int(round(len(train) * fraction)))
            if n >= len(train):
                raise DataError(
                    f"{source} has {rows} row(s): too few to carve a {split} split "
                    f"({fraction:.0%}, at least one row) from it and keep "
                    f"rows to train on; add rows or give a {split} file"
                )
            frames[split], frames["train"] = train.iloc[:n], train.iloc[n:]
    return {split: frames[split].reset_index(drop=True) for split in SPLITS}


def _finish(
    name: str,
    frames: dict[str, pd.DataFrame],
    label_names: list[str],
    seed: int,
    max_examples: int | None,
    sources: dict[str, tuple[str, str]],
) -> ClassificationData:
    """Check every row of every given split, then carve, subsample and convert to `datasets`.

    `sources` maps each split to `(where, unit)` for messages: the file and what its row
    numbers count. Rows are checked before the split is carved, so a message names the
    file's own line, not a row of a shuffled slice.
    """
    checked = {}
    for split, frame in frames.items():
        where, unit = sources[split]
        if len(frame) == 0:
            raise DataError(f"{where} holds no rows: the {split} split would be empty")
        checked[split] = encode_labels(frame, label_names, where, unit)
    if len(label_names) < 2:
        raise DataError(
            f"{sources['train'][0]}: the labels name only {len(label_names)} class {label_names}: "
            f"a classifier needs at least two; name every class with --label-names"
        )
    frames = _carve_missing_splits(checked, fraction=0.1, seed=seed, source=sources["train"][0])
    _check_not_empty(frames, name)
    if max_examples is not None:  # a seeded subsample, for quick runs on a CPU
        frames = {
            s: f.sample(n=min(max_examples, len(f)), random_state=seed).reset_index(drop=True)
            for s, f in frames.items()
        }
    splits = DatasetDict(
        {s: Dataset.from_pandas(f, preserve_index=False) for s, f in frames.items()}
    )
    return ClassificationData(name, splits, list(label_names))


def _hub_frames(spec: DatasetSpec) -> dict[str, pd.DataFrame]:
    """Download the spec's splits from the hub (the default for real users)."""
    import datasets

    try:
        remote = datasets.load_dataset(spec.hub_id, spec.hub_config)
    except Exception as error:  # connection, offline mode, missing repo: all mean "not available"
        raise DataError(
            f"could not load '{spec.name}' from the hub ({spec.hub_id}): {type(error).__name__}: "
            f"{_first_line(error)}. Offline, pass local files "
            f"(--train-file/--validation-file/--test-file) or use --dataset synthetic-sentiment"
        ) from error
    return {ours: remote[theirs].to_pandas() for ours, theirs in spec.hub_splits.items()}


def _numbered(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its rows numbered from 1, as messages count them."""
    frame = frame.reset_index(drop=True)
    frame.index = range(1, len(frame) + 1)
    return frame


def load_classification_data(
    name: str | None = None,
    *,
    train_file: str | Path | None = None,
    validation_file: str | Path | None = None,
    test_file: str | Path | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    label_names: list[str] | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> ClassificationData:
    """Load a classification dataset by registry name, or from local files.

    With `train_file`, the files are read instead of the hub; `name` then only supplies the
    default column names and label names (so `name="rte", train_file=...` reads a local RTE
    copy; without `name` the columns are `text` and `label` and the labels are the file's own),
    and the data is named after the training file. A missing validation or test file is
    carved from train (10%, seeded). Every row of every file is checked first: the text must be
    a non-blank string, the label a label name or a whole number in range (a number stored as
    text, "1", counts as the number; 0.5 is refused). Without label names, string labels are
    sorted and whole-number labels are named "0".."max".

    Args:
        name: a registry name (see `REGISTRY`); None: synthetic-sentiment, or with `train_file`
            no registry entry at all.
        train_file: a local CSV, TSV, JSON Lines, JSON or Parquet training file; None loads
            `name` from the hub or generates it.
        validation_file: a local validation file (only with `train_file`); None: carved from train.
        test_file: a local test file (only with `train_file`); None: carved from train.
        text_column: the source's text column; None: the registry's, else `text`.
        text_pair_column: the source's column of the second text of a pair; None: the
            registry's, if any.
        label_column: the source's label column; None: the registry's, else `label`.
        label_names: the class names in label-id order; None: the registry's, else inferred.
        max_examples: keep a seeded subsample of at most this many rows a split, for quick runs
            on a CPU; None keeps every row.
        seed: seeds the generated data, the carving of missing splits and the subsample.

    Raises:
        DataError: if an option has the wrong type, a validation or test file comes without a
            training file, or `name` is not a classification dataset.
    """
    if name is None and train_file is None:
        name = DEFAULT_DATASET
    if name is not None and not isinstance(name, str):
        raise DataError(f"the dataset name must be a string, got {describe(name)}")
    if train_file is None and (validation_file is not None or test_file is not None):
        given = "validation_file" if validation_file is not None else "test_file"
        raise DataError(
            f"{given} is given without train_file: local validation and test files go with a "
            f"local training file (--train-file), and would otherwise be ignored"
        )
    if max_examples is not None:
        check_positive_int("max_examples", max_examples)
    check_int("seed", seed, minimum=0)
    for option, value in (
        ("text_column", text_column),
        ("text_pair_column", text_pair_column),
        ("label_column", label_column),
    ):
        if value is not None and not isinstance(value, str):
            raise DataError(f"{option} must be a column name (a string), got {describe(value)}")
    spec = get_spec(name) if name in REGISTRY or train_file is None else None
    if spec is not None and spec.task != "classification":
        raise DataError(f"'{name}' is a {spec.task} dataset, not a classification one")
    columns = dict(spec.columns) if spec else {"text": "text", "label": "label"}
    if text_column:
        columns["text"] = text_column
    if label_column:
        columns["label"] = label_column
    if text_pair_column:
        columns["text_pair"] = text_pair_column
    names = (
        check_label_names(label_names)
        if label_names is not None
        else list(spec.label_names)
        if spec and spec.label_names
        else None
    )

    if train_file is not None:
        files = {"train": train_file, "validation": validation_file, "test": test_file}
        text_columns = tuple(columns[r] for r in ("text", "text_pair") if r in columns)
        frames, sources = {}, {}
        for split, path in files.items():
            if path is None:
                continue
            frame = _rename_columns(read_table(path, text_columns), columns, str(path))
            check_texts(frame, columns, str(path), row_unit(path))
            frames[split], sources[split] = frame, (str(path), row_unit(path))
        source = Path(train_file).name
    elif spec.hub_id is None:  # generated by the package
        generated = GENERATED[name](seed=seed)
        frames = {
            s: _numbered(pd.DataFrame([e.__dict__ for e in rows])) for s, rows in generated.items()
        }
        sources = {s: (f"{name} [{s}]", "row") for s in frames}
        source = name
    else:
        frames = {
            s: _numbered(_rename_columns(f, columns, f"{name} [{s}]"))
            for s, f in _hub_frames(spec).items()
        }
        sources = {s: (f"{name} [{s}]", "row") for s in frames}
        for split, frame in frames.items():
            check_texts(frame, columns, *sources[split])
        source = name
    classes = frames["train"]["label"].dropna().unique()
    if len(classes) == 1:
        only = classes[0].item() if hasattr(classes[0], "item") else classes[0]
        raise DataError(
            f"{sources['train'][0]}: every training label is {only!r}: a classifier needs "
            "two classes at least"
        )
    if names is None:
        names = infer_label_names(frames["train"]["label"], sources["train"])
    return _finish(source, frames, names, seed, max_examples, sources)


def tokenize(
    data: ClassificationData, tokenizer: Any, max_length: int = TRAINING.max_length
) -> DatasetDict:
    """Tokenize every split (truncated to `max_length`; padding happens later, per batch).

    A pair is joined as `text <sep> text_pair`, where the separator is the tokenizer's own
    (`[SEP]` for BERT) or, for GPT-2, its end-of-text token. The separator is an ordinary
    attended token, not padding; when the pair is too long the first text is cut, so the
    second (the hypothesis, the question) stays whole.

    Args:
        data: the checked splits.
        tokenizer: the model's tokenizer.
        max_length: the tokens a row keeps, at least 2.

    Returns:
        The splits with `input_ids`, `attention_mask` and `labels` columns only.
    """
    check_int("max_length", max_length, minimum=2)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        if "text_pair" not in batch:
            encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
            return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        if tokenizer.sep_token is not None:  # BERT-style: the tokenizer knows how to join pairs
            encoded = tokenizer(
                batch["text"], batch["text_pair"], truncation="only_first", max_length=max_length
            )
            return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        first = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        second = tokenizer(batch["text_pair"], add_special_tokens=False)["input_ids"]
        ids = [join_pair(a, b, tokenizer.eos_token_id, max_length) for a, b in zip(first, second)]
        return {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids]}

    remove = [c for c in data.splits["train"].column_names if c != "label"]
    tokenized = data.splits.map(encode, batched=True, remove_columns=remove, desc="tokenize")
    return tokenized.rename_column("label", "labels")


def join_pair(first: list[int], second: list[int], separator: int, max_length: int) -> list[int]:
    """`first + [separator] + second`, cutting `first` (then `second`) to fit `max_length`.

    Args:
        first: the first text's token ids.
        second: the second text's token ids.
        separator: the token id between them.
        max_length: the most tokens the joined row may hold.
    """
    second = second[: max_length - 1]
    first = first[: max(0, max_length - 1 - len(second))]
    return first + [separator] + second
