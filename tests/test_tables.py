"""The results tables: a column that only repeats another is left out of what a reader sees."""

import csv

from peft_course.tables import (
    distinct_markdown_table,
    markdown_table,
    read_markdown_table,
    repeated_columns,
    write_table,
)

ROWS = [
    {"cell": "untrained", "verbalizer": "0.5000", "strict": "0.5000", "seconds": "0.5000"},
    {"cell": "r=16", "verbalizer": "0.7500", "strict": "0.7500", "seconds": "4.8"},
]


def test_a_column_equal_to_an_earlier_one_in_every_row_is_a_repeat():
    """`seconds` equals `verbalizer` in the first row only, so it is not a repeat."""
    assert repeated_columns(ROWS) == {"strict": "verbalizer"}


def test_the_markdown_leaves_a_repeat_out_and_says_so_the_csv_keeps_it(tmp_path):
    markdown = write_table(ROWS, tmp_path, "sweep", distinct=True)
    text = markdown.read_text()
    assert list(read_markdown_table(text)[0]) == ["cell", "verbalizer", "seconds"]
    assert "*strict* equals *verbalizer*" in text
    with open(tmp_path / "sweep.csv") as handle:
        assert list(next(csv.DictReader(handle))) == list(ROWS[0])


def test_a_table_without_repeats_is_unchanged():
    rows = [{**row, "strict": "0.4360"} if i == 0 else row for i, row in enumerate(ROWS)]
    assert distinct_markdown_table(rows) == markdown_table(rows)
