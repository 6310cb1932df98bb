"""The catalogue of common mistakes (exercises/mistakes.toml) says what the grader really prints.

Each mistake is planted in a copy of `solutions/<chapter>.py` (every `find` of its `plant` must
occur exactly once there, so the catalogue cannot drift from the solutions either), the grader
runs on the copy as a learner would run it (`pytest exercises/test_<chapter>.py
--implementation-dir <copy> -k <checks>`, as tests/test_autograder.py does), and the text the
catalogue shows must be in what it prints. To spend a few Python start-ups rather than one per
mistake, the k-th mistake of every chapter is planted in the same copy and graded in one run
(each grader loads its own chapter's file only, so the mistakes cannot meet). The page that
docs/exercises.md includes, exercises/mistakes.md, must be the one made from the catalogue:
`python tests/test_mistakes.py` writes it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "exercises" / "mistakes.toml"
PAGE = ROOT / "exercises" / "mistakes.md"
MISTAKES = tomllib.loads(CATALOGUE.read_text())["mistake"]
# chapter -> its page and title, in the order of the course (the grader's CHAPTERS)
CHAPTERS = {
    "foundations": ("foundations.md", "Foundations"),
    "prompting": ("prompting.md", "Prompting"),
    "counting": ("counting.md", "Counting parameters"),
    "lora": ("lora.md", "LoRA from scratch"),
    "peft_family": ("counting.md", "The PEFT family"),
    "qlora": ("qlora.md", "QLoRA"),
    "dpo": ("dpo.md", "Preference optimization (DPO)"),
    "preference": ("beyond-dpo.md", "Beyond DPO"),
    "gpt2": ("gpt2.md", "GPT-2 from scratch"),
    "real_model": ("real-model.md", "A real model"),
}
FIELDS = {"chapter", "function", "title", "plant", "checks", "grader", "explanation"}


def name(mistake: dict) -> str:
    """`lora-b-initialised-randomly`: the mistake's test id."""
    return f"{mistake['chapter']}-" + re.sub(r"[^a-z0-9]+", "-", mistake["title"].lower()).strip(
        "-"
    )


def planted(mistake: dict) -> str:
    """The text of `solutions/<chapter>.py` with the mistake made in it."""
    path = ROOT / "solutions" / f"{mistake['chapter']}.py"
    text = path.read_text()
    for step in mistake["plant"]:
        found = text.count(step["find"])
        assert found == 1, (
            f"{name(mistake)}: {step['find']!r} occurs {found} times in {path.name}, not once: "
            "update exercises/mistakes.toml"
        )
        text = text.replace(step["find"], step["put"])
    return text


def rounds() -> list[list[dict]]:
    """Round k holds the k-th mistake of every chapter: one grading run each."""
    by_chapter: dict[str, list[dict]] = {}
    for mistake in MISTAKES:
        by_chapter.setdefault(mistake["chapter"], []).append(mistake)
    count = max(len(mistakes) for mistakes in by_chapter.values())
    return [[ms[k] for ms in by_chapter.values() if k < len(ms)] for k in range(count)]


@pytest.fixture(scope="module")
def printed(tmp_path_factory) -> dict[str, str]:
    """What the grader printed for each mistake (its round's output), the rounds run at once."""
    runs = []
    for k, mistakes in enumerate(rounds()):
        directory = tmp_path_factory.mktemp(f"round{k}")
        for path in (ROOT / "solutions").glob("*.py"):
            shutil.copy(path, directory / path.name)
        for mistake in mistakes:
            (directory / f"{mistake['chapter']}.py").write_text(planted(mistake))
        graders = sorted({f"exercises/test_{m['chapter']}.py" for m in mistakes})
        checks = " or ".join(f"({m['checks']})" for m in mistakes)
        command = [sys.executable, "-m", "pytest", *graders, "--implementation-dir", str(directory)]
        command += ["-p", "no:cacheprovider", "-q", "-k", checks]
        environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
        )
        runs.append((mistakes, process))
    outputs = {}
    for mistakes, process in runs:
        output, _ = process.communicate(timeout=600)
        for mistake in mistakes:
            outputs[name(mistake)] = output
    return outputs


def test_the_catalogue_is_well_formed():
    """At least 12 mistakes, over the chapters, each naming a function of its exercise."""
    assert len(MISTAKES) >= 12
    assert {m["chapter"] for m in MISTAKES} == set(CHAPTERS)
    names = [name(m) for m in MISTAKES]
    assert len(set(names)) == len(names), "two mistakes of one chapter have the same title"
    for mistake in MISTAKES:
        assert set(mistake) == FIELDS, f"{name(mistake)}: fields {sorted(set(mistake) ^ FIELDS)}"
        stub = (ROOT / "exercises" / f"{mistake['chapter']}.py").read_text()
        assert f"\ndef {mistake['function']}(" in stub, f"{name(mistake)}: no such exercise"
        assert "\n" not in mistake["grader"], f"{name(mistake)}: `grader` is one printed line"
        lines = mistake["explanation"].strip().splitlines()
        assert len(lines) == 2, f"{name(mistake)}: the explanation is two lines"


@pytest.mark.parametrize("mistake", MISTAKES, ids=name)
def test_each_plant_applies_and_changes_the_solution(mistake):
    solution = (ROOT / "solutions" / f"{mistake['chapter']}.py").read_text()
    assert planted(mistake) != solution


@pytest.mark.parametrize("mistake", MISTAKES, ids=name)
def test_the_grader_prints_what_the_catalogue_says(printed, mistake):
    output = printed[name(mistake)]
    assert " failed" in output, f"{name(mistake)}: the grader passed the mistake:\n{output}"
    assert mistake["grader"] in output, (
        f"{name(mistake)}: the grader no longer prints {mistake['grader']!r} for it; update "
        f"exercises/mistakes.toml (then `python tests/test_mistakes.py`). It printed:\n{output}"
    )


def render(mistakes: list[dict]) -> str:
    """The Markdown of the catalogue: per chapter, each mistake, what the grader prints, why."""
    lines = [
        "<!-- Made from exercises/mistakes.toml by `python tests/test_mistakes.py`; "
        "tests/test_mistakes.py checks both. -->",
    ]
    for chapter, (page, title) in CHAPTERS.items():
        lines += ["", f"### {title}: `exercises/{chapter}.py` {{#mistakes-{chapter}}}", ""]
        lines.append(f"The chapter: [{title}]({page}#exercises).")
        for mistake in (m for m in mistakes if m["chapter"] == chapter):
            lines += ["", f"**{mistake['title']}** (`{mistake['function']}`). The grader prints:"]
            lines += ["", "```text", mistake["grader"], "```", ""]
            lines += mistake["explanation"].strip().splitlines()
    return "\n".join(lines) + "\n"


def test_the_page_is_made_from_the_catalogue():
    assert PAGE.read_text() == render(MISTAKES), (
        "exercises/mistakes.md is not the catalogue's page: run `python tests/test_mistakes.py`"
    )
    assert '--8<-- "exercises/mistakes.md"' in (ROOT / "docs" / "exercises.md").read_text()


if __name__ == "__main__":
    PAGE.write_text(render(MISTAKES))
    print(f"wrote {PAGE.relative_to(ROOT)}: {len(MISTAKES)} mistakes")
