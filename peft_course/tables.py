"""Results tables: one row format for every method, written as Markdown and CSV."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from peft_course.files import atomic_write_text, replacing

COLUMNS = ("method", "trainable params", "accuracy", "weighted F1", "seconds")


def result_row(
    label: str, trainable: int, scores: dict[str, float], seconds: float
) -> dict[str, str]:
    """One table row: the method's label, what it trains, its test accuracy and weighted F1.

    Args:
        label: the method's name in the `method` column.
        trainable: the number of trainable parameters (shown with thousands separators).
        scores: test scores with at least `accuracy` and `f1`, as `classification_metrics`
            returns them.
        seconds: the training time in seconds.

    Returns:
        The row's cells as text, keyed by the names in `COLUMNS`.
    """
    return {
        "method": label,
        "trainable params": f"{trainable:,}",
        "accuracy": f"{scores['accuracy']:.4f}",
        "weighted F1": f"{scores['f1']:.4f}",
        "seconds": f"{seconds:.1f}",
    }


def is_number(cell: str) -> bool:
    """`0.812`, `1,536`, `-3e-06`, `0.84 ± 0.02`, `12%`, `-`: what a table shows as a figure.

    Args:
        cell: one cell's text.
    """
    return bool(
        re.fullmatch(
            r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?%?( ± [\d.]+(e[-+]?\d+)?%?)?|-|n/a", cell.strip()
        )
    )


def cell(value: object) -> str:
    """A value as one table cell: a line break shown as ↵ and a `|` escaped,
    so the row stays one row.

    Args:
        value: anything; it is shown as `str(value)`.
    """
    return str(value).replace("|", "\\|").replace("\r\n", "\n").replace("\n", " ↵ ")


def markdown_table(rows: list[dict[str, str]], columns: tuple[str, ...] | None = None) -> str:
    """A GitHub-flavoured Markdown table; a column whose every cell is a number is right-aligned.

    Args:
        rows: the table's rows, each a mapping from column name to cell.
        columns: the columns to show, in order; None shows the first row's keys.
    """
    columns = columns or tuple(rows[0])
    align = ["---:" if all(is_number(str(row[c])) for row in rows) else "---" for c in columns]
    header = "| " + " | ".join(cell(c) for c in columns) + " |"
    lines = [header, "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def repeated_columns(rows: list[dict[str, str]]) -> dict[str, str]:
    """Each column whose cells equal an earlier column's in every row, mapped to that column.

    Args:
        rows: the table's rows, each a mapping from column name to cell.
    """
    columns = list(rows[0])
    repeats: dict[str, str] = {}
    for i, column in enumerate(columns):
        for earlier in columns[:i]:
            if earlier not in repeats and all(row[column] == row[earlier] for row in rows):
                repeats[column] = earlier
                break
    return repeats


def distinct_markdown_table(rows: list[dict[str, str]]) -> str:
    """`markdown_table` without the columns that repeat an earlier one in every row, and a line
    naming them: a column that only repeats another gives a reader nothing to read.

    Args:
        rows: the table's rows, each a mapping from column name to cell.
    """
    repeats = repeated_columns(rows)
    table = markdown_table(rows, tuple(c for c in rows[0] if c not in repeats))
    if not repeats:
        return table
    same = "; ".join(f"*{column}* equals *{earlier}*" for column, earlier in repeats.items())
    them = "them" if len(repeats) > 1 else "it"
    return f"{table}\nIn every row {same}, so the table leaves {them} out.\n"


def confusion_rows(matrix: list[list[int]], names: list[str]) -> list[dict[str, str]]:
    """A confusion matrix as table rows: one row per true label, one column per predicted label.

    Args:
        matrix: the counts, rows by true label and columns by predicted label.
        names: the label names, in label-id order.
    """
    return [
        {"true label": name, **{other: str(n) for other, n in zip(names, row)}}
        for name, row in zip(names, matrix)
    ]


def read_markdown_table(text: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in `text` (the inverse of `markdown_table`).

    Args:
        text: Markdown holding the table (lines that do not start with `|` are skipped).
    """
    lines = [line.strip() for line in text.splitlines() if line.startswith("|")]
    cells = [
        [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line[1:-1])]
        for line in lines
    ]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def write_table(
    rows: list[dict[str, str]],
    directory: str | Path,
    stem: str = "results",
    note: str = "",
    distinct: bool = False,
) -> Path:
    """Save the table as `<stem>.md` and `<stem>.csv` in `directory`; returns the Markdown path.

    Args:
        rows: the table's rows; the first row's keys are the CSV's columns.
        directory: where both files are written; it is created if missing.
        stem: the file name without its extension.
        note: when given, follows the Markdown table as its own paragraph (what produced it).
        distinct: leave the columns that repeat another out of the Markdown
            (`distinct_markdown_table`); the CSV keeps every column.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / f"{stem}.md"
    shown = distinct_markdown_table(rows) if distinct else markdown_table(rows)
    atomic_write_text(markdown, shown + (f"\n{note}\n" if note else ""))
    with (
        replacing(directory / f"{stem}.csv") as temporary,
        open(temporary, "w", newline="") as handle,
    ):
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return markdown
