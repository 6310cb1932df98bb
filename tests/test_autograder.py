"""The autograder itself: it fails on stubs (with the hint), fails on wrong answers (saying what
was expected), passes on the solutions, and never silently grades the wrong directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def start(*options: str) -> subprocess.Popen:
    """`pytest exercises/test_warmup.py` with `options`, started in the background."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "exercises/test_warmup.py",
            "-p",
            "no:cacheprovider",
            *options,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The four gradings these tests read, run at once (each is mostly Python starting up)."""
    wrong, empty = tmp_path_factory.mktemp("wrong"), tmp_path_factory.mktemp("empty")
    shutil.copy(ROOT / "solutions" / "warmup.py", wrong / "warmup.py")
    text = (wrong / "warmup.py").read_text().replace("if p.requires_grad", "")
    (wrong / "warmup.py").write_text(text)  # counts frozen parameters too
    runs = {
        "stubs": start(),
        "solutions": start("--solutions"),
        "wrong": start("--implementation-dir", str(wrong)),
        "missing": start("--implementation-dir", str(empty)),
    }
    results = {}
    for name, process in runs.items():
        stdout, stderr = process.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(
            process.args, process.returncode, stdout, stderr
        )
    return results, wrong, empty


def test_stubs_are_reported_as_not_done_with_their_hint(graded):
    run = graded[0]["stubs"]
    assert run.returncode == 1
    assert "NOT DONE YET" in run.stdout and "hint: loop over module.parameters()" in run.stdout
    assert "raise NotImplementedError" not in run.stdout  # no traceback wall
    assert "0 checks passed, 0 wrong, 8 not done yet" in run.stdout


def test_solutions_pass(graded):
    run = graded[0]["solutions"]
    assert run.returncode == 0, run.stdout
    assert "8 checks passed, 0 wrong, 0 not done yet" in run.stdout


def test_wrong_answer_fails_with_what_was_expected(graded):
    results, wrong, _ = graded
    run = results["wrong"]
    assert run.returncode == 1
    assert f"grading: {wrong}" in run.stdout  # the header names the graded directory
    assert "first layer frozen: expected 42 trainable parameters, got 262" in run.stdout


def test_missing_file_is_an_error_not_a_fallback(graded):
    run = graded[0]["missing"]
    assert run.returncode == 1
    assert "the autograder looked for" in run.stdout and "passed" not in run.stdout.splitlines()[-1]
