"""The main job: the demo table shows each method's effect, is saved, and matches the docs' copy.

The margins below come from `benchmarks/cpu_spread.py` (`docs/results/cpu-spread.md`): the demo
run under three kernel sets (this CPU's own, AVX2 only, no vector extensions: PyTorch's
`ATEN_CPU_CAPABILITY` with MKL's and oneDNN's matching switches) and training seeds 0, 1 and 2.
A CPU with other kernels sums in another order, and a few epochs on a few hundred examples turn
that rounding into points of accuracy, so a figure is reproduced exactly only on the machine
that printed it. The tests therefore assert what the docs claim, with room for that spread.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peft_course.tables import read_markdown_table
from peft_course.tolerances import (
    ABLATION_BEST_SPREAD,
    DEMO_CPU_SPREAD,
    LORA_SPREAD,
    MERGED_ACCURACY_ATOL,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"

# The spreads (DEMO_CPU_SPREAD, LORA_SPREAD, ABLATION_BEST_SPREAD) were measured by
# benchmarks/cpu_spread.py (docs/results/cpu-spread.md); peft_course.tolerances gives the figures.
# The tests allow twice each, since a fresh run and the docs' may sit at opposite ends of it and a
# CPU not measured may land a little outside. Last-iteration ablation cells move too much between
# kernel sets to compare with a documented figure: only the best-validation ones are compared.


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`peft-course demo` as a learner runs it: a fresh process with torch's own threading (the
    test session pins torch to one thread, which changes float rounding). Its last table, SmolLM2
    prompted on generated reviews, is left out here to keep the suite short; `real_model_rows`
    is tested on its own in tests/test_llama.py.

    Its idle threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE): the other test process
    holds the second core, and spinning for it cost 50 of the demo's 192 CPU seconds when idle.
    The thread count, so the summation order, is unchanged: the same tables to the digit."""
    output = tmp_path_factory.mktemp("demo")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "peft_course",
            "demo",
            "--output",
            str(output),
            "--no-progress",
            "--no-real-model",
            "--no-tuning",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with open(output / "results.csv") as handle:
        return output, {row["method"]: row for row in csv.DictReader(handle)}


def accuracy(rows: dict[str, dict[str, str]], method: str) -> float:
    return float(rows[method]["accuracy"])


def test_each_method_shows_its_effect(demo_run):
    """The ordering the fine-tuning chapter teaches: untrained < head < LoRA, merging changes
    nothing, LoRA-like methods agree within the spread, full fine-tuning is not worse.

    Measured over 3 kernel sets x seeds 0-2: head - untrained 0.150-0.225, LoRA - head 0.183-0.235,
    merged = LoRA exactly, |from scratch - LoRA| <= 0.025, |QLoRA - LoRA| <= 0.020, full - LoRA
    0.025-0.078. The 0.10 gaps and twice the LoRA spread leave room for a CPU not measured."""
    _, rows = demo_run
    untrained, head, lora = (accuracy(rows, m) for m in ("untrained", "head only", "LoRA (peft)"))
    assert head >= untrained + 0.10, "a trained head must beat the untrained model clearly"
    assert lora >= head + 0.10, (
        "LoRA changes the layers below the head: it must beat head-only clearly"
    )
    # merging folds B A into W; logits move by ~1e-6, which can flip at most a near-tie (1 of 400)
    assert abs(accuracy(rows, "merged LoRA") - lora) <= MERGED_ACCURACY_ATOL
    for method in ("LoRA (from scratch)", "QLoRA (NF4)"):
        assert abs(accuracy(rows, method) - lora) <= 2 * LORA_SPREAD, method
    # the from-scratch GPT-2 with LoRA on q, k, v: not measured across kernel sets, so only the
    # chapter's claim, that LoRA inside its attention learns what the head alone cannot
    assert accuracy(rows, "GPT-2 from scratch + LoRA") >= head + 0.10
    assert accuracy(rows, "full fine-tuning") >= lora - 2 * LORA_SPREAD
    assert rows["head only"]["trainable params"] == "128"  # 64 x 2 score weights, no bias


def test_table_is_saved_as_markdown_and_csv(demo_run):
    output, rows = demo_run
    markdown = (output / "results.md").read_text()
    assert markdown.startswith("| method | trainable params | accuracy | weighted F1 | seconds |")
    assert list(rows) == [row["method"] for row in read_markdown_table(markdown)]
    assert "*Made by `peft-course demo`" in markdown, "the table says what produced it"


def test_docs_table_is_reproduced(demo_run):
    """The docs' table comes from this command: a fresh run on any CPU lands within the measured
    cross-CPU spread of it (twice the spread: the two runs may sit at opposite ends)."""
    _, rows = demo_run
    documented = {
        row["method"]: float(row["accuracy"])
        for row in read_markdown_table((RESULTS / "demo.md").read_text())
    }
    assert documented.keys() == rows.keys()
    for method, figure in documented.items():
        assert abs(accuracy(rows, method) - figure) <= 2 * DEMO_CPU_SPREAD, method


ABLATION_COLUMNS = ("verbalizer, last", "verbalizer, best", "strict, last", "strict, best")
REPEATS = {"strict, best": "verbalizer, best"}  # what the docs' table shows when it leaves one out


@pytest.mark.parametrize("sweep", ["rank", "alpha", "prompt"])
def test_docs_ablation_tables_are_reproduced(demo_run, sweep):
    """The ablation tables in the docs come from the demo too: the same cells, the seed project's
    figures beside them, accuracies within the cross-CPU spread, and every cell's loss curve."""
    output, _ = demo_run
    with open(output / "ablation" / f"{sweep}.csv") as handle:
        fresh = list(csv.DictReader(handle))
    documented = read_markdown_table((RESULTS / f"ablation-{sweep}.md").read_text())
    first = next(iter(documented[0]))
    assert [row[first] for row in documented] == [row[first] for row in fresh]
    for old, new in zip(documented, fresh):
        assert (old["seed project, last"], old["seed project, best"]) == (
            new["seed project, last"],
            new["seed project, best"],
        )
        for column in ("verbalizer, best", "strict, best"):
            shown = old.get(column, old[REPEATS.get(column, column)])  # a left-out repeat
            assert abs(float(shown) - float(new[column])) <= 2 * ABLATION_BEST_SPREAD, (
                sweep,
                old[first],
                column,
            )
        assert all(0 <= float(new[column]) <= 1 for column in ABLATION_COLUMNS)
    assert (output / "ablation" / f"{sweep}-val-loss.png").stat().st_size > 0


def test_every_lora_cell_learns_through_the_lm_head(demo_run):
    """The ablation chapter's first claim, on any CPU: from 0.5 untrained to at least 0.65 by both
    scorings at the best validation (measured 0.705-0.86 across kernel sets and seeds 0-2)."""
    output, _ = demo_run
    for sweep in ("rank", "alpha", "prompt"):
        with open(output / "ablation" / f"{sweep}.csv") as handle:
            rows = list(csv.DictReader(handle))
        untrained, cells = (
            rows[0],
            [r for r in rows[1:] if next(iter(r.values())) != "full fine-tuning"],
        )
        assert float(untrained["verbalizer, best"]) <= 0.55
        for row in cells:
            for column in ("verbalizer, best", "strict, best"):
                assert float(row[column]) >= 0.65, (sweep, next(iter(row.values())), column)


def test_readme_quotes_the_docs_tables():
    """One source for each published number: the README's copies are the docs' results pages."""
    readme = (ROOT / "README.md").read_text()
    for page in ("demo.md", "ablation-rank.md", "demo-real-model.md"):
        table = "\n".join(
            line for line in (RESULTS / page).read_text().splitlines() if line.startswith("|")
        )
        assert table in readme, (
            f"README's copy of docs/results/{page} differs: run `make results` and copy it"
        )


def test_every_results_page_says_what_produced_it():
    """A page names the command that made it, or, for figures copied from elsewhere, says
    who published them and where (a commit), since no command here can reproduce them."""
    pages = sorted(RESULTS.glob("*.md")) + sorted((ROOT / "docs" / "images" / "dpo").glob("*.md"))
    assert pages
    for page in pages:
        text = page.read_text()
        made_here = "*Made by `" in text
        published = "*Published by " in text and "commit " in text
        assert made_here or published, (
            f"{page.name} does not say which command produced it (or who published it, where)"
        )
