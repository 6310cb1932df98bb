"""The autograder itself: it fails on stubs (with the hint), fails on wrong answers (saying what
was expected), passes on the solutions, and never silently grades the wrong directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def grade(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "exercises/test_warmup.py", "-p", "no:cacheprovider", *options],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def test_stubs_are_reported_as_not_done_with_their_hint():
    run = grade()
    assert run.returncode == 1
    assert "NOT DONE YET" in run.stdout and "hint: loop over module.parameters()" in run.stdout
    assert "raise NotImplementedError" not in run.stdout  # no traceback wall
    assert "0 checks passed, 0 wrong, 8 not done yet" in run.stdout


def test_solutions_pass():
    run = grade("--solutions")
    assert run.returncode == 0, run.stdout
    assert "8 checks passed, 0 wrong, 0 not done yet" in run.stdout


def test_wrong_answer_fails_with_what_was_expected(tmp_path):
    shutil.copy(ROOT / "solutions" / "warmup.py", tmp_path / "warmup.py")
    wrong = (tmp_path / "warmup.py").read_text().replace("if p.requires_grad", "")
    (tmp_path / "warmup.py").write_text(wrong)  # counts frozen parameters too
    run = grade("--implementation-dir", str(tmp_path))
    assert run.returncode == 1
    assert f"grading: {tmp_path}" in run.stdout  # the header names the graded directory
    assert "first layer frozen: expected 42 trainable parameters, got 262" in run.stdout


def test_missing_file_is_an_error_not_a_fallback(tmp_path):
    run = grade("--implementation-dir", str(tmp_path))
    assert run.returncode == 1
    assert "the autograder looked for" in run.stdout and "passed" not in run.stdout.splitlines()[-1]
