"""The main job: the demo table shows learning, is saved, and matches the docs' copy."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest


DOCS_TABLE = Path(__file__).resolve().parents[1] / "docs" / "results" / "demo.md"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`peft-course demo` exactly as a learner runs it: a fresh process with torch's own threading
    (the test session pins torch to one thread, which changes float rounding)."""
    output = tmp_path_factory.mktemp("demo")
    run = subprocess.run([sys.executable, "-m", "peft_course", "demo", "--output", str(output), "--no-progress"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    with open(output / "results.csv") as handle:
        return output, {row["method"]: row for row in csv.DictReader(handle)}


def test_head_only_beats_the_untrained_model(demo_run):
    _, rows = demo_run
    assert float(rows["head only"]["accuracy"]) > float(rows["untrained"]["accuracy"]) + 0.1
    assert rows["head only"]["trainable params"] == "128"  # 64 x 2 score weights, no bias


def test_table_is_saved_as_markdown_and_csv(demo_run):
    output, rows = demo_run
    markdown = (output / "results.md").read_text()
    assert markdown.startswith("| method | trainable params | accuracy | weighted F1 | seconds |")
    assert list(rows) == [line.split("|")[1].strip() for line in markdown.splitlines()[2:]]


def test_docs_table_is_reproduced(demo_run):
    """The table in the docs comes from this command: a fresh run must give the same accuracies.

    Seconds differ between runs; accuracies are compared to 0.01 to allow for floating-point
    differences between CPUs (the same machine reproduces them exactly).
    """
    _, rows = demo_run
    documented = {}
    for line in DOCS_TABLE.read_text().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        documented[cells[0]] = float(cells[2])
    assert documented.keys() == rows.keys()
    for method, accuracy in documented.items():
        assert abs(float(rows[method]["accuracy"]) - accuracy) <= 0.01, method
