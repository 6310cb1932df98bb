"""The Python examples the site shows, run as written (the pages include them from here).

Two kinds: sections of this file between `--8<--` markers (a page includes the section), and
the whole files of `docs/examples/`, one per chapter, that every chapter page ends with under
"Use it from a script". Either way, what a learner copies from the site is what this file runs.
Each chapter's example loads the embedded tiny-gpt2, runs one thing at a small size (a few
seconds on 2 CPU cores) and prints what it found; the checks below read that output.
"""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

from peft_course.tolerances import LOGITS_ATOL

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
HEADING = "## Use it from a script"
# chapter -> lines its example must print: the figures that are the same on every machine
# (parameter counts, exact fractions, names), not accuracies, which move with the CPU's kernels.
PRINTS = {
    "foundations": ["trainable 128 of 186,176"],
    "prompting": ["read back: 9/2", "Q: ", "log p(' five')"],
    "counting": [
        "before LoRA: 186,176 parameters",
        "trainable 4,224 of 190,272 (2.22%); formula 4,224",
        "NF4 bits per weight: 9/2 2113/512",
    ],
    "lora": [
        "wrapped: ['transformer.h.0.attn.c_attn', 'transformer.h.1.attn.c_attn']",
        "trainable, total: (4224, 190272)",
    ],
    "finetune": ["trainable 4,224 of 190,400", "'a superb , moving film .': "],
    "qlora": [
        "trainable, total: (4224, 190400)",
        "with its scales, 6,340 bytes instead of 49,152 in fp32",
    ],
    "ablation": ["'trainable params': '2,048'", "'trainable params': '4,096'", "'rank.md'"],
    "dpo": ["(ln 2 = 0.6931 when the policy is the reference)", "reward margins: ["],
    "gpt2": ["trainable, total: (6144, 192192)", "greedy: 'the film was", "top-p:  "],
    "instruct": ["### Instruction: ", "labelled -100 (the prompt)"],
    "beyond-dpo": ["held-out reward accuracy: "],
    "peft-family": [
        "lora at 1%: r=3, 1,664 trainable",
        "houlsby at 1%: r=3, 1,932 trainable",
        "prompt-tuning at 1%: virtual_tokens=27, 1,856 trainable",
        "BitFit 1,600 ",
    ],
}
CHAPTERS = list(PRINTS)


def test_load_the_embedded_model():
    # --8<-- [start:load_model]
    from peft_course.models import load_model

    model, tokenizer = load_model("tiny-gpt2", task="classification", num_labels=2)
    # --8<-- [end:load_model]
    assert model.config.num_labels == 2 and tokenizer.pad_token is not None


def test_fine_tune_from_a_script(capsys):
    # --8<-- [start:finetune]
    from peft_course.data import load_classification_data
    from peft_course.finetune import finetune
    from peft_course.training import TrainConfig

    data = load_classification_data("synthetic-sentiment", max_examples=200)
    result = finetune(
        data,
        method="head",
        model_name="tiny-gpt2",
        config=TrainConfig(epochs=2, learning_rate=2e-2),
    )
    print(result.untrained["accuracy"], result.best["accuracy"])
    # --8<-- [end:finetune]
    untrained, best = map(float, capsys.readouterr().out.split()[-2:])
    assert 0 <= untrained <= 1 and 0 <= best <= 1


def test_every_example_belongs_to_a_chapter():
    assert sorted(p.stem for p in EXAMPLES.glob("*.py")) == sorted(CHAPTERS)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_chapter_ends_with_its_example(chapter):
    """The example is the page's last section, and the whole file is included, not a copy."""
    page = (ROOT / "docs" / f"{chapter}.md").read_text()
    headings = [line for line in page.splitlines() if line.startswith("## ")]
    assert headings[-1] == HEADING, f"docs/{chapter}.md should end with '{HEADING}'"
    last = page[page.index(HEADING) :]
    assert f'--8<-- "docs/examples/{chapter}.py"' in last
    assert last.rstrip().endswith("```"), f"docs/{chapter}.md: nothing after the example"


@pytest.mark.parametrize("chapter", sorted(p.stem for p in (EXAMPLES / "output").glob("*.txt")))
def test_the_output_shown_is_what_the_example_prints(chapter):
    """The output a page shows under its example (stored by tools/example_outputs.py) still
    holds the lines the example prints the same on every machine, and the page shows it."""
    stored = (EXAMPLES / "output" / f"{chapter}.txt").read_text()
    for line in PRINTS[chapter]:
        assert line in stored, (
            f"docs/examples/output/{chapter}.txt lacks {line!r}: "
            f"python tools/example_outputs.py {chapter}"
        )
    page = (ROOT / "docs" / f"{chapter}.md").read_text()
    assert f'output="docs/examples/output/{chapter}.txt"' in page


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_example_runs(chapter, capsys):
    if chapter == "qlora":  # as tests/test_qlora.py needs: bitsandbytes' 4-bit layers
        from peft_course.system import bnb_4bit_support

        works, why = bnb_4bit_support()
        if not works:
            pytest.skip(why)
    runpy.run_path(str(EXAMPLES / f"{chapter}.py"), run_name="__main__")
    printed = capsys.readouterr().out
    for line in PRINTS[chapter]:
        assert line in printed, f"docs/examples/{chapter}.py no longer prints {line!r}:\n{printed}"
    if chapter == "beyond-dpo":  # SimPO raises the held-out reward accuracy in 4 steps
        before, after = map(float, printed.split("accuracy: ")[1].split()[0:3:2])
        assert after > before, printed
    if chapter == "lora":  # merging changes the order of the float32 sums, nothing more
        difference = float(re.search(r"after merging: (\S+)", printed)[1])
        assert difference < LOGITS_ATOL
