"""Every figure in the prose of the site's pages comes from a results page or a computed value.

The results pages under docs/results/ are made by `python -m peft_course.pages` and the demo;
the chapters' prose quotes their figures ("LoRA scores 0.907"). When the results are made again,
nothing but this test keeps the prose in step. It reads each page of docs/*.md, leaves out what
is not prose (code blocks and spans, math, the lines that include a file, link targets, HTML
comments), finds every number that reads as a result (a percentage, a decimal such as 0.905, a
count with thousands separators such as 4,224) and requires one of:

- the number is in a results file the page includes or names (`--8<-- "docs/results/demo.md"`,
  a mention of `docs/results/cpu-spread.md`), the files of its folder (docs/results/real-dpo/)
  included; a result rounded in the prose counts (0.905 for 0.9050, 60% for 0.6000);
- it is computed here, from the package (COMPUTED: LoRA's parameter counts on tiny-gpt2, say),
  and the prose shows the computed value at the precision it is written with;
- it is in ALLOWED with the reason it needs no source: a paper's figure, a definition, a
  hyper-parameter, arithmetic written out beside it, a figure measured once and said to be.

A number written in a page without one of these fails the test with the page, the line and
what to do. `test_a_stale_number_is_caught` plants stale numbers and requires the check to fail.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_HALF_UP, Decimal
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))

# A number that reads as a result: a percentage, a decimal, or a count with thousands separators.
# Not inside a word, a version ("3.10" is caught; "v4" is not) or a path.
NUMBER = re.compile(
    r"(?<![\w.,/#=-])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\d+(?=\s?%))(?:\s?%)?(?![\w.]\d|\w)"
)
SOURCE_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:,\d{3})*(?:\.\d+)?(?:e-?\d+)?%?")
RESULTS = re.compile(r"docs/(?:results|images)/[\w./-]+\.(?:md|csv|json)")


# --- what is prose ----------------------------------------------------------------------------


def prose_lines(text: str) -> list[tuple[int, str]]:
    """`(line number, text)` of the page's prose: no code blocks, math, includes or link targets."""
    text = re.sub(r"<!--.*?-->", lambda m: "\n" * m[0].count("\n"), text, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", lambda m: "\n" * m[0].count("\n"), text, flags=re.S)
    text = re.sub(r"\\\[.*?\\\]", lambda m: "\n" * m[0].count("\n"), text, flags=re.S)
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if fenced or line.lstrip().startswith("--8<--"):
            continue
        line = re.sub(r"`[^`]*`", " ", line)  # code spans
        line = re.sub(r"\$[^$]*\$|\\\(.*?\\\)", " ", line)  # inline math
        line = re.sub(r"\]\([^)]*\)", "]", line)  # link targets
        lines.append((number, line))
    return lines


def prose_numbers(text: str) -> list[tuple[int, str]]:
    """`(line number, number as written, spaces dropped)` of every result-like number."""
    return [
        (number, re.sub(r"\s", "", match[0]))
        for number, line in prose_lines(text)
        for match in NUMBER.finditer(line)
    ]


# --- where a number may come from -------------------------------------------------------------


def source_files(text: str) -> list[Path]:
    """The results files a page includes or names, with the files of each one's folder."""
    files = []
    for name in sorted(set(RESULTS.findall(text))):
        path = ROOT / name
        if not path.is_file():  # named as what a command would write, not written yet
            continue
        files.append(path)
        folder = path.with_suffix("")
        if folder.is_dir():
            files += sorted(p for p in folder.iterdir() if p.suffix in (".md", ".csv", ".json"))
    return files


def values(text: str) -> set[str]:
    """Every number written in `text`, as written (commas dropped)."""
    return {match[0].replace(",", "") for match in SOURCE_NUMBER.finditer(text)}


def shown_as(value: float, written: str) -> bool:
    """Whether `value`, rounded half up to the decimals of `written`, is `written`."""
    digits = written.rstrip("%").replace(",", "")
    exponent = Decimal(digits).as_tuple().exponent
    rounded = Decimal(repr(round(value, 9))).quantize(Decimal(1).scaleb(exponent), ROUND_HALF_UP)
    return rounded == Decimal(digits)


def in_sources(written: str, sources: set[str]) -> bool:
    """`written` is one of the source's numbers, rounded or not; a percentage may be a fraction."""
    plain = written.replace(",", "")
    if plain in sources:
        return True
    candidates = [float(s.rstrip("%")) for s in sources if not re.search(r"e", s)]
    percent = written.endswith("%")
    for candidate in candidates:
        if shown_as(candidate, written) or (percent and shown_as(100 * candidate, written)):
            return True
    return False


# --- computed values --------------------------------------------------------------------------


@cache
def lora_counts() -> dict[str, int]:
    """LoRA r=8 on c_attn plus the head, on tiny-gpt2: the course's counts and peft's."""
    import copy

    from peft import get_peft_model

    from peft_course.lora import LoRAConfig, inject_lora, peft_lora_config
    from peft_course.models import count_parameters, load_model

    model, _ = load_model("tiny-gpt2", task="classification", num_labels=2)
    base = count_parameters(model)[1]
    config = LoRAConfig(r=8, alpha=16, targets=["c_attn"], trainable=["score"])
    theirs = get_peft_model(copy.deepcopy(model), peft_lora_config(config, "SEQ_CLS"))
    inject_lora(model, config)
    trainable, total = count_parameters(model)
    peft_trainable, peft_total = theirs.get_nb_trainable_parameters()
    assert peft_trainable == trainable
    return {"base": base, "trainable": trainable, "total": total, "peft total": peft_total}


def table_value(page: str, row: str, column: str) -> float:
    """One cell of a results table, `docs/results/<page>`, as a number (a mean ± std: the mean)."""
    lines = [line for line in (DOCS / "results" / page).read_text().splitlines() if "|" in line]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == row:
            return float(cells[header.index(column)].split()[0].replace(",", ""))
    raise KeyError(f"docs/results/{page}: no row {row!r}")


def lora_share() -> float:
    counts = lora_counts()
    return 100 * counts["trainable"] / counts["total"]


def peft_share() -> float:
    counts = lora_counts()
    return 100 * counts["trainable"] / counts["peft total"]


def points(page: str, row: str, other: str, column: str = "verbalizer, best") -> float:
    """`row` minus `other` in one column of a results table, in points."""
    return 100 * (table_value(page, row, column) - table_value(page, other, column))


def standard_error(accuracy: float, n: int) -> float:
    """The standard error of an accuracy measured on `n` examples."""
    return math.sqrt(accuracy * (1 - accuracy) / n)


def lora_gaps() -> list[float]:
    """peft's LoRA minus the course's, in points, for every seed and kernel set of the spread."""
    peft = "demo / LoRA (peft) / accuracy"
    scratch = "demo / LoRA (from scratch) / accuracy"
    lines = (DOCS / "results" / "cpu-spread.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    runs = [h for h in header if re.fullmatch(r"\w+ s\d", h)]
    return [
        100 * (table_value("cpu-spread.md", peft, run) - table_value("cpu-spread.md", scratch, run))
        for run in runs
    ]


@cache
def gpt2_small_lora() -> int:
    """Trainable parameters of GPT-2 small with LoRA r=8 on c_attn and a trained head copy."""
    from peft_course.counting import architecture, evaluate_architecture, lora_formulas

    arch = architecture("gpt2-small")
    return evaluate_architecture(lora_formulas(arch, ["c_attn"], saves_head=True)[0], arch, 2, 8)


def nf4_bits(double_quant: bool) -> float:
    from peft_course.qlora import nf4_bits_per_parameter

    return float(nf4_bits_per_parameter(double_quant))


def fp16_max() -> float:
    import torch

    return torch.finfo(torch.float16).max


def mean_accuracy(method: str) -> float:
    rows = (DOCS / "results" / "qlora-accuracy.md").read_text().splitlines()[2:]
    scores = [float(r.split("|")[4]) for r in rows if r.startswith("|") and f" {method} " in r]
    return sum(scores) / len(scores)


def qlora_gaps() -> list[float]:
    """QLoRA minus LoRA per seed, in points (docs/results/qlora-accuracy.md)."""
    rows = [r.split("|") for r in (DOCS / "results" / "qlora-accuracy.md").read_text().splitlines()]
    by_seed: dict[str, dict[str, float]] = {}
    for cells in rows[2:]:
        if len(cells) > 4:
            by_seed.setdefault(cells[1].strip(), {})[cells[2].strip()] = float(cells[4])
    return [100 * (s["QLoRA (NF4)"] - s["LoRA (peft)"]) for s in by_seed.values()]


LORA_SHARE = (lora_share, "LoRA's share on tiny-gpt2: 4,224 of 190,272")
LORA_TOTAL = (lambda: lora_counts()["total"], "tiny-gpt2 with the course's LoRA r=8 on c_attn")
GPT2_SMALL_LORA = (gpt2_small_lora, "GPT-2 small, LoRA r=8 on c_attn plus the head (counting)")


def cdpo_zero() -> float:
    """The margin where cDPO's gradient is zero at the figure's beta and eps."""
    from scipy.optimize import brentq

    from peft_course.preference_derivations import margin_function

    return brentq(margin_function("cDPO")[1], 0.1, 20)


# page -> {number as written: (what computes it, what it is)}; the prose must show that value.
COMPUTED: dict[str, dict[str, tuple[Callable[[], float], str]]] = {
    "index.md": {"2.2%": LORA_SHARE},
    "lora.md": {
        "186,176": (lambda: lora_counts()["base"], "the tiny-gpt2 classifier's parameters"),
        "190,272": LORA_TOTAL,
        "4,096": (lambda: lora_counts()["total"] - lora_counts()["base"], "LoRA's A and B"),
        "190,400": (lambda: lora_counts()["peft total"], "peft's total, the head held twice"),
        "2.2%": LORA_SHARE,
        "2.2185%": (peft_share, "what peft's print_trainable_parameters prints"),
        "2.0": (lambda: -min(lora_gaps()), "the course's LoRA ahead by most, cpu-spread.md"),
        "2.5": (lambda: max(lora_gaps()), "peft's LoRA ahead by most, cpu-spread.md"),
        "296,448": GPT2_SMALL_LORA,
        "1.2": (lambda: 4 * gpt2_small_lora() / 1e6, "MB of those in fp32"),
    },
    "finetune.md": {
        "2.2%": LORA_SHARE,
        "190,272": LORA_TOTAL,
        "1.4": (
            lambda: points("real-finetune.md", "LoRA (peft)", "QLoRA (NF4)", "accuracy"),
            "LoRA minus QLoRA on SmolLM2, in points",
        ),
        "0.017": (
            lambda: standard_error(table_value("real-finetune.md", "LoRA (peft)", "accuracy"), 500),
            "standard error of an accuracy of 0.83 on 500 reviews",
        ),
    },
    "ablation.md": {
        "2.75": (lambda: points("ablation-alpha.md", "256", "64"), "alpha 256 against 64, points"),
        "4.8": (
            lambda: points("ablation-seeds-prompt.md", "default", "complex"),
            "the default template's lead over complex, points",
        ),
        "3.3": (
            lambda: points("ablation-seeds-prompt.md", "default", "simple-2"),
            "the default template's lead over simple-2, points",
        ),
        "0.016": (
            lambda: standard_error(
                table_value("real-ablation/rank.md", "16", "verbalizer, best"), 500
            ),
            "standard error of the r=16 cell's 0.840 on 500 test reviews",
        ),
    },
    "beyond-dpo.md": {"4.4": (cdpo_zero, "where cDPO's gradient crosses zero in the figure")},
    "counting.md": {
        "1,022": (
            lambda: sum(__import__("peft_course.counting").counting.MLP_WIDTHS[1:-1]),
            "the hidden units of the example network",
        ),
        "3.83%": (
            lambda: 100 * 4_761_600 / (124_439_808 + 15_360),
            "the same trainable count over the backbone and one head",
        ),
        "1.5": (lambda: 442_368 / 294_912, "separate q, k, v against the fused c_attn"),
    },
    "qlora.md": {
        "4.5": (lambda: nf4_bits(False), "NF4's bits per weight, one fp32 scale per 64"),
        "4.127": (lambda: nf4_bits(True), "NF4's bits per weight with double quantization"),
        "7.75": (lambda: 32 / nf4_bits(True), "fp32 over NF4 with double quantization"),
        "65,504": (fp16_max, "fp16's largest number"),
        "38.6": (lambda: 50_257 * 768 / 1e6, "millions in GPT-2's token embedding"),
        "1.2": (lambda: 4 * gpt2_small_lora() / 1e6, "MB of LoRA matrices and head copy"),
        "2.4": (lambda: 8 * gpt2_small_lora() / 1e6, "MB of AdamW state for them"),
        "0.907": (lambda: mean_accuracy("LoRA (peft)"), "LoRA's mean over the three seeds"),
        "0.908": (lambda: mean_accuracy("QLoRA (NF4)"), "QLoRA's mean over the three seeds"),
        "0.2": (
            lambda: 100 * (mean_accuracy("QLoRA (NF4)") - mean_accuracy("LoRA (peft)")),
            "the means' gap, points",
        ),
        "2.0": (lambda: -min(qlora_gaps()), "QLoRA behind LoRA by most, points"),
        "1.75": (lambda: max(qlora_gaps()), "QLoRA ahead of LoRA by most, points"),
    },
}

SEED = "the seed project's reported figure (GPT-2 small), not re-run"
ONCE = "measured once, and the page says so; nothing re-runs it"
DATA = "the size of a data set or of the sample a run takes: a setting"
VERSION = "a version number"
ARITHMETIC = "arithmetic of the architecture, written out in the sentence"
EXAMPLE = "an example of text the answer extractor reads, not a result"
# page -> {number as written: why it needs no results page}
ALLOWED: dict[str, dict[str, str]] = {
    "ablation.md": {
        **dict.fromkeys(["1,024", "0.505", "0.455", "3,000", "0.975", "0.52", "0.495"], ONCE),
        "8,530": DATA,
    },
    "beyond-dpo.md": {
        "1.16": VERSION,
        "0.04": "a hyper-parameter: the GRPO try's KL weight",
        "0.19": ONCE + " (the GRPO try; the ORPO table's 0.188 is its own source)",
    },
    "counting.md": dict.fromkeys(
        ["124,439,808", "15,360", "1,769,472", "2,304", "84,934,656"], ARITHMETIC
    ),
    "dpo.md": {
        "0.05": "a hyper-parameter: the noise added to the policy",
        "1.16": VERSION,
        "0.19": "arithmetic written out: margin 0.019 / beta 0.1",
        "2,117": DATA,
    },
    "exercises.md": {"95%": "a definition: the mutation score the check requires"},
    "finetune.md": {
        **dict.fromkeys(["83%", "90%", "94%", "89.1%", "95%"], SEED),
        **dict.fromkeys(["25,000", "1,500", "16,990"], DATA),
        **dict.fromkeys(
            ["0.5281", "0.5014", "0.6257", "0.6248", "74,498", "0.7795", "0.7782"], ONCE
        ),
    },
    "foundations.md": {
        "1,536": "arithmetic written out: 768 x 2",
        **dict.fromkeys(["1.5", "7.4"], ONCE + " (start-up times of `peft-course --help`)"),
    },
    "getting-started.md": {"3.10": VERSION, "10%": "a definition: the share carved off"},
    "index.md": {"3.10": VERSION},
    "instruct.md": {"2,000": DATA, "3.4": ONCE},
    "lora.md": {
        **dict.fromkeys(["2,304", "1,769,472"], ARITHMETIC),
        "1,000": "a tolerance: the test's relative bound, peft_course.tolerances",
    },
    "prompting.md": {
        **dict.fromkeys(["0.2", "4.5", "1,234,567", "4.50", "0.75", "3.25", "0.33"], EXAMPLE),
        **dict.fromkeys(
            ["17.9%", "56.9%", "10.4%", "40.7%"],
            "a paper's figure (Wei et al., Kojima et al.), cited",
        ),
        "1,024": "a definition: GPT-2's context length",
    },
    "qlora.md": {
        **dict.fromkeys(
            ["0.304", "0.1519", "0.171", "0.152"],
            "NF4's levels and the tests' measured bound (peft_course.tolerances)",
        ),
        "0.46": VERSION,
        "1.77%": "a reported QLoRA run the page cites as a failure, not one of the course's",
        "50,257": "a definition: GPT-2's vocabulary",
        "0.25": "a definition: one sentence of 400, in points",
    },
    "real-model.md": {
        **dict.fromkeys(["50,257", "49,152"], "a definition: the models' vocabularies"),
        "0.2": "arithmetic: an estimate of the logits a batch would hold",
        **dict.fromkeys(["8,530", "1,000", "16,990"], DATA),
        "89.1%": SEED,
    },
}


# --- the check ---------------------------------------------------------------------------------


def counting_tables_text() -> str:
    """The tables counting.md shows, as the package makes them (tests/test_counting.py compares
    the page with them)."""
    from peft_course.counting import counting_tables

    return "\n".join(counting_tables().values())


EXTRA_SOURCES: dict[str, Callable[[], str]] = {"counting.md": counting_tables_text}


def unsourced(page: str, text: str) -> list[str]:
    """The page's result-like numbers that nothing backs: `page:line: number`."""
    sources = set()
    for path in source_files(text):
        sources |= values(path.read_text())
    if page in EXTRA_SOURCES:
        sources |= values(EXTRA_SOURCES[page]())
    computed, allowed = COMPUTED.get(page, {}), ALLOWED.get(page, {})
    problems = []
    for line, written in prose_numbers(text):
        if written in computed:  # checked whether or not a results file also has the number
            function, what = computed[written]
            value = function()
            if not shown_as(value, written):
                problems.append(f"{page}:{line}: {written} should be {value:g} ({what})")
        elif written not in allowed and not in_sources(written, sources):
            problems.append(f"{page}:{line}: {written}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_number_in_the_prose_has_a_source(page):
    if page.name in EXTRA_SOURCES:
        from peft_course.system import bnb_4bit_support

        works, why = bnb_4bit_support("cpu")  # counting's NF4 table quantizes a weight
        if not works:
            pytest.skip(why)
    problems = unsourced(page.name, page.read_text())
    assert not problems, (
        "numbers in the prose that no results file of the page, computed value or allow-list "
        "entry backs (include or name the results file that has them, add the computation to "
        "COMPUTED, or give the reason in ALLOWED, in tests/test_docs_numbers.py):\n  "
        + "\n  ".join(problems)
    )


# A stale figure of each kind: the old counts, a share, a table's figure, a new claim.
STALE = [
    ("lora.md", "4,224 trainable of 190,272", "4,224 trainable of 176,128", "176,128"),
    ("index.md", "training 2.2% of", "training 2.5% of", "2.5%"),
    ("ablation.md", "r=128 (0.788)", "r=128 (0.799)", "0.799"),
    ("finetune.md", "## Bad input", "LoRA reaches 0.871 here.\n\n## Bad input", "0.871"),
]


@pytest.mark.parametrize("page, current, stale, number", STALE, ids=[s[0] for s in STALE])
def test_a_stale_number_is_caught(page, current, stale, number):
    text = (DOCS / page).read_text()
    assert current in text, f"docs/{page} no longer says {current!r}: pick another stale number"
    assert not unsourced(page, text)
    problems = unsourced(page, text.replace(current, stale))
    assert any(problem.split(": ")[1].startswith(number) for problem in problems), problems


def test_what_is_not_prose_is_left_out():
    text = "\n".join(
        [
            "LoRA scores 0.905, 12.5% of 4,224.",
            "`0.111` and $0.222$ and [a link](page.md#0.333) <!-- 0.444 -->",
            "```python",
            "x = 0.555",
            "```",
            '--8<-- "docs/results/demo.md"',
            "$$",
            "0.666",
            "$$",
            "version 2 of 3 and r=8, but 1.5 times",
        ]
    )
    assert [n for _, n in prose_numbers(text)] == ["0.905", "12.5%", "4,224", "1.5"]
