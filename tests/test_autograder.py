"""The autograder itself: it fails on stubs (with the hint), fails on wrong answers (saying what
was expected), passes on the solutions, never silently grades the wrong directory, and ends with
its summary per chapter, the library noise silenced."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def start(*options: str, tests: str = "exercises/test_warmup.py") -> subprocess.Popen:
    """`pytest exercises/test_warmup.py` with `options`, started in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", tests, "-p", "no:cacheprovider", *options],
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
        "hint 2": start("--hint", "2"),
        "hint 0": start("--hint", "0"),
        "one chapter": start("-k", "qlora", tests="exercises"),  # imports bitsandbytes
    }
    results = {}
    for name, process in runs.items():
        stdout, stderr = process.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(
            process.args, process.returncode, stdout, stderr
        )
    return results, wrong, empty


def last_lines(run: subprocess.CompletedProcess, n: int) -> list[str]:
    return [" ".join(line.split()) for line in run.stdout.splitlines()[-n:]]


def test_stubs_are_reported_as_not_done_with_their_hint(graded):
    run = graded[0]["stubs"]
    assert run.returncode == 1  # not done is not passed
    assert "10 not done" in run.stdout  # pytest's own count, in a category of its own
    assert "next: warmup.count_trainable_parameters in exercises/warmup.py, not done yet" in (
        run.stdout
    )
    assert "hint 1 of 3: What trains is what receives gradients" in run.stdout
    assert "more: pytest exercises/test_warmup.py --hint 2" in run.stdout
    assert "NotImplementedError" not in run.stdout and "FAILED" not in run.stdout  # no wall
    assert last_lines(run, 3) == [
        "chapter done wrong not done checks passed",
        "warmup 0 0 1 0 of 10",
        "total 0 0 1 0 of 10",
    ]


def test_a_higher_hint_level_on_request(graded):
    run, refused = graded[0]["hint 2"], graded[0]["hint 0"]
    assert "hint 2 of 3: Visit every distinct parameter tensor" in run.stdout
    assert "hint 1 of 3" not in run.stdout and "--hint 3" in run.stdout
    assert refused.returncode == 4 and "--hint takes a level from 1" in refused.stderr


def test_solutions_pass(graded):
    run = graded[0]["solutions"]
    assert run.returncode == 0, run.stdout
    assert "every graded exercise is done (1 of 1)" in run.stdout
    assert last_lines(run, 1) == ["total 1 0 0 10 of 10"]


def test_wrong_answer_fails_with_what_was_expected(graded):
    results, wrong, _ = graded
    run = results["wrong"]
    assert run.returncode == 1
    assert f"grading: {wrong}" in run.stdout  # the header names the graded directory
    assert "first layer frozen: expected 42 trainable parameters, got 262" in run.stdout
    assert f"next: warmup.count_trainable_parameters in {wrong / 'warmup.py'}, wrong: 3 of 10" in (
        run.stdout
    )
    assert last_lines(run, 1) == ["total 0 1 0 7 of 10"]


def test_missing_file_is_an_error_not_a_fallback(graded):
    run = graded[0]["missing"]
    assert run.returncode == 1
    assert "the autograder looked for" in run.stdout and "passed" not in run.stdout.splitlines()[-1]


def test_the_summary_per_chapter_is_the_last_thing_printed(graded):
    """`pytest exercises -k qlora` on the stubs: the summary comes after pytest's own last line
    ("... 39 not done in 9s"), and none of the libraries' noise is printed (bitsandbytes'
    missing-kernel line, FutureWarnings, progress bars)."""
    run = graded[0]["one chapter"]
    assert run.returncode == 1
    assert "39 not done in" in run.stdout
    assert last_lines(run, 3) == [
        "chapter done wrong not done checks passed",
        "qlora 0 0 4 0 of 39",
        "total 0 0 4 0 of 39",
    ]
    for noise in ("kernels-community", "FutureWarning", "Loading weights"):
        assert noise not in run.stdout + run.stderr, noise


def test_the_learner_mistakes_still_apply_to_the_solutions():
    """tools/learner_mistakes.toml (graded by `make learner-mistakes`): every mistake's original
    lines occur exactly once in its solutions/ file and the planted file parses, so the list
    cannot drift from the reference answers; it covers every chapter."""
    spec = importlib.util.spec_from_file_location(
        "learner_mistakes", ROOT / "tools" / "learner_mistakes.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    mistakes = module.load()  # raises SystemExit naming each mistake that no longer applies
    assert len(mistakes) >= 40
    chapters = {p.stem for p in (ROOT / "solutions").glob("*.py")}
    assert {m.chapter for m in mistakes} == chapters
