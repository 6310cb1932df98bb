"""How many hand-written learner mistakes the exercise graders catch.

mutmut (`make mutants`) makes operator swaps; the mistakes in tools/learner_mistakes.toml are
the ones a learner who half-understood a chapter writes (a frozen base run under
`torch.no_grad()`, a name matched with `endswith`, whitespace stripped after the final stop is
removed). Each one is planted alone in a temporary copy of `solutions/` and graded by its
chapter's grader, `pytest exercises/test_<chapter>.py --implementation-dir <copy> -x`, as a
learner's file would be; it is caught when the grader fails. Before the mistakes, every chapter
they touch is graded on an unchanged copy, which must pass.

To spend one Python start-up rather than one per mistake, the heavy libraries and the graders
are imported once here and each grading runs in a forked child (Linux), at most `--jobs` at a
time. Prints each mistake with the check that caught it (and its message) or the reason it
should have been caught, the rate per kind and in all, and exits 1 below the bar (95%).

    python tools/learner_mistakes.py [-k SUBSTRING] [--jobs 2] [--verbose]
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
CATALOGUE = Path(__file__).with_suffix(".toml")
BAR = 0.95
TIMEOUT_S = 300  # one chapter's grader takes 2-15 s here; a hang counts as caught, and is shown

# What makes a mistake easy to let through (issue 33's classes), and the plain misreadings.
KINDS = {
    "fixture": "fixtures too regular to tell two readings apart (repeated shapes, suffix names, "
    "buffers, tied weights)",
    "gradient": "a gradient checked only where it is expected, not everywhere it must flow",
    "format-edge": "the edge of a documented input or output format",
    "combination": "two features tested alone but not together",
    "normalisation": "normalisation steps done in another order",
    "reading": "a plain misreading of the docstring",
}
FIELDS = {"name", "chapter", "function", "kind", "original", "mistaken", "why"}
OPTIONAL = {"batch"}  # 2: held out, written after the graders were strengthened for batch 1


@dataclass(frozen=True)
class Mistake:
    name: str
    chapter: str
    function: str
    kind: str
    original: str
    mistaken: str
    why: str
    batch: int = 1

    def planted(self) -> str:
        """`solutions/<chapter>.py` with this mistake in place of its original lines."""
        text = (SOLUTIONS / f"{self.chapter}.py").read_text()
        return text.replace(self.original, self.mistaken)


def load(path: Path = CATALOGUE) -> list[Mistake]:
    """The mistakes of the catalogue, each checked: known fields and kind, an exercise function
    that exists, original lines that occur exactly once in the reference, and a planted file
    that still parses."""
    mistakes, problems = [], []
    for entry in tomllib.loads(path.read_text())["mistake"]:
        label = entry.get("name", "?")
        if not FIELDS <= set(entry) <= FIELDS | OPTIONAL:
            wrong = sorted((set(entry) ^ FIELDS) - OPTIONAL)
            problems.append(f"{label}: fields {wrong} missing or unknown")
            continue
        mistake = Mistake(**entry)
        solution = SOLUTIONS / f"{mistake.chapter}.py"
        if not solution.is_file():
            problems.append(f"{label}: no solutions/{mistake.chapter}.py")
            continue
        if mistake.kind not in KINDS:
            problems.append(f"{label}: kind {mistake.kind!r} is not one of {sorted(KINDS)}")
        stub = (EXERCISES / f"{mistake.chapter}.py").read_text()
        if f"\ndef {mistake.function}(" not in stub:
            problems.append(f"{label}: exercises/{mistake.chapter}.py has no {mistake.function}")
        found = solution.read_text().count(mistake.original)
        if found != 1:
            problems.append(
                f"{label}: its original lines occur {found} times in {solution.name}, not once "
                "(the reference changed: update the catalogue)"
            )
            continue
        if mistake.original == mistake.mistaken:
            problems.append(f"{label}: the mistaken lines are the original ones")
        try:
            ast.parse(mistake.planted())
        except SyntaxError as error:
            problems.append(f"{label}: the planted file does not parse: {error}")
        mistakes.append(mistake)
    names = [m.name for m in mistakes]
    problems += [
        f"{n}: two mistakes have this name" for n in sorted(set(names)) if names.count(n) > 1
    ]
    if problems:
        raise SystemExit(f"{path.name}:\n  " + "\n  ".join(problems))
    return mistakes


# --- grading ----------------------------------------------------------------------------------


def copy_of_solutions(into: Path, mistake: Mistake | None) -> Path:
    for path in SOLUTIONS.glob("*.py"):
        shutil.copy(path, into / path.name)
    if mistake is not None:
        (into / f"{mistake.chapter}.py").write_text(mistake.planted())
    return into


def grader_arguments(chapter: str, directory: Path) -> list[str]:
    return [
        f"exercises/test_{chapter}.py",
        "--implementation-dir",
        str(directory),
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
    ]


def warm_up(chapters: list[str], directory: Path) -> None:
    """Import what the graders import (torch, transformers, peft, the graders themselves) once,
    here, by collecting their checks: every forked grading starts from that."""
    import pytest

    arguments = [*grader_arguments(chapters[0], directory)[1:], "--collect-only"]
    arguments = [f"exercises/test_{c}.py" for c in chapters] + arguments
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        pytest.main(arguments)


@dataclass
class Grading:
    label: str
    chapter: str
    directory: Path
    log: Path
    pid: int = 0
    started: float = 0.0
    status: int | None = None  # pytest's exit code; -1 timed out

    def start(self) -> None:
        self.started = time.monotonic()
        self.pid = os.fork()
        if self.pid == 0:  # the child: grade, and leave without running the parent's cleanup
            code = 3
            try:
                descriptor = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(descriptor, 1)
                os.dup2(descriptor, 2)
                sys.stdout = os.fdopen(1, "w", buffering=1)
                sys.stderr = sys.stdout
                import pytest

                code = int(pytest.main(grader_arguments(self.chapter, self.directory)))
                sys.stdout.flush()
            finally:
                os._exit(code)

    def poll(self) -> bool:
        """True once the child has ended (killed after TIMEOUT_S)."""
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid:
            self.status = os.waitstatus_to_exitcode(status)
            return True
        if time.monotonic() - self.started > TIMEOUT_S:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.status = -1
            return True
        return False

    def first_failure(self) -> str:
        """`test_name[id]: message`, from pytest's short summary of the first failed check."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        for line in text.splitlines():
            if line.startswith(("FAILED ", "ERROR ")):
                check = line.split(" ", 1)[1]
                check = check.split("::", 1)[-1]
                return re.sub(r"\s+", " ", check)
        return "no failed check in the output (see --verbose)"


def run_all(gradings: list[Grading], jobs: int) -> None:
    waiting, running = list(gradings), []
    while waiting or running:
        while waiting and len(running) < jobs:
            grading = waiting.pop(0)
            grading.start()
            running.append(grading)
        time.sleep(0.05)
        running = [g for g in running if not g.poll()]


# --- the report -------------------------------------------------------------------------------


def shorten(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="select", help="only the mistakes whose name contains this")
    parser.add_argument("--jobs", type=int, default=2, help="gradings at once (default 2)")
    parser.add_argument("--verbose", action="store_true", help="print each grader's output")
    parser.add_argument("--list", action="store_true", help="list the mistakes and stop")
    parser.add_argument("--bar", type=float, default=BAR, help=f"(default {BAR})")
    options = parser.parse_args(argv)

    mistakes = [m for m in load() if not options.select or options.select in m.name]
    if options.list:
        for m in mistakes:
            print(f"{m.chapter:<9} {m.function:<28} {m.kind:<13} {m.name}")
        return 0
    if not mistakes:
        print("no mistake matches")
        return 2
    for name, value in {
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "COLUMNS": "2000",  # pytest's short summary keeps a failed check's whole first line
    }.items():
        os.environ.setdefault(name, value)
    os.chdir(ROOT)
    sys.dont_write_bytecode = True
    chapters = sorted({m.chapter for m in mistakes})
    with tempfile.TemporaryDirectory(prefix="learner-mistakes-") as scratch:
        scratch = Path(scratch)
        (scratch / "reference").mkdir()
        reference = copy_of_solutions(scratch / "reference", None)
        warm_up(chapters, reference)
        baselines = [
            Grading(f"reference {c}", c, reference, scratch / f"reference-{c}.log")
            for c in chapters
        ]
        run_all(baselines, options.jobs)
        broken = [b for b in baselines if b.status != 0]
        if broken:
            for b in broken:
                print(
                    f"the grader fails on the unchanged reference ({b.label}): {b.first_failure()}"
                )
                print(b.log.read_text(errors="replace"))
            return 2
        gradings = []
        for k, mistake in enumerate(mistakes):
            directory = scratch / f"m{k}"
            directory.mkdir()
            copy_of_solutions(directory, mistake)
            gradings.append(
                Grading(mistake.name, mistake.chapter, directory, scratch / f"m{k}.log")
            )
        run_all(gradings, options.jobs)
        return report(mistakes, gradings, options)


def report(mistakes: list[Mistake], gradings: list[Grading], options) -> int:
    caught = []
    by_kind: dict[str, list[int]] = {}
    for mistake, grading in zip(mistakes, gradings):
        if options.verbose:
            print(f"--- {mistake.name} ---\n{grading.log.read_text(errors='replace')}")
        if grading.status not in (0, 1, -1):
            raise SystemExit(
                f"{mistake.name}: pytest exited {grading.status} (not a graded result):\n"
                + grading.log.read_text(errors="replace")
            )
        is_caught = grading.status != 0
        caught.append(is_caught)
        by_kind.setdefault(mistake.kind, [0, 0])
        by_kind[mistake.kind][0] += is_caught
        by_kind[mistake.kind][1] += 1
        where = f"{mistake.chapter}.{mistake.function}"
        if grading.status == -1:
            print(f"caught    {mistake.name} ({where}): the grader ran past {TIMEOUT_S} s")
        elif is_caught:
            print(f"caught    {mistake.name} ({where}): {shorten(grading.first_failure())}")
        else:
            print(f"SURVIVED  {mistake.name} ({where}, {mistake.kind}):")
            print("          " + " ".join(mistake.why.split()))
    print()
    for kind in KINDS:
        if kind in by_kind:
            got, of = by_kind[kind]
            print(f"  {kind:<14} {got:>3} of {of:<3} {KINDS[kind]}")
    for batch in sorted({m.batch for m in mistakes}):
        got = [c for m, c in zip(mistakes, caught) if m.batch == batch]
        what = "held out, written after the graders were strengthened" if batch > 1 else ""
        print(f"  batch {batch}: {sum(got)} of {len(got)} {what}".rstrip())
    total = sum(caught)
    rate = total / len(caught)
    print(f"learner mistakes caught: {total} of {len(caught)} = {rate:.1%} (bar {options.bar:.0%})")
    return 0 if rate >= options.bar else 1


if __name__ == "__main__":
    sys.exit(main())
