"""The PEFT family side by side (`peft_course.compare`): budgets, forgetting, the table, resuming.

The comparison itself is measured by `python -m peft_course.pages compare` (the docs' page); here
every piece is checked on tiny sizes: the budget matching lands near its target or says it
cannot, the forgetting figure is the language-model loss transformers computes, the Pareto front
keeps exactly the points nothing beats, and a two-method comparison writes its table and plot
and trains nothing when run again.
"""

from __future__ import annotations

import math

import pytest
import torch

from peft_course import compare as cmp
from peft_course.cli import main
from peft_course.data import load_classification_data
from peft_course.errors import CourseError
from peft_course.models import load_model
from peft_course.settings import COMPARE, COMPARED_METHODS

TOTAL = 186_176  # tiny-gpt2's classifier with 2 labels (tests/test_docs_examples.py prints it)


@pytest.fixture(scope="module")
def small():
    """The generated sentiment set cut to 8 rows a split."""
    return load_classification_data("synthetic-sentiment", max_examples=8)


@pytest.fixture(scope="module")
def counter(small):
    return cmp.Counter("tiny-gpt2", small)


def test_every_compared_method_has_a_family_and_the_table_order():
    assert tuple(cmp.FAMILIES) == COMPARED_METHODS


def test_budget_matching_on_a_known_count():
    """LoRA on c_attn: 512 r + 128 (the head). 1% of 186,176 is 1,862: r=3 (1,664) is nearer on
    a log scale than r=4 (2,176); 0.1% is below r=1's 640 by more than the tolerance."""

    def count(method, r):
        return 512 * r + 128

    low, one, ten = cmp.match_budget("lora", (0.001, 0.01, 0.1), TOTAL, count, width=64)
    assert (low.value, low.reached) == (1, False)
    assert (one.value, one.trainable, one.reached) == (3, 1664, True)
    assert (ten.value, ten.reached) == (36, True)


def test_a_method_without_a_knob_stands_at_its_nearest_budget_only():
    budgets = cmp.match_budget("bitfit", (0.001, 0.01, 0.1), TOTAL, lambda m, v: 1600, width=64)
    assert [b.reached for b in budgets] == [False, True, False]
    full = cmp.match_budget("full", (0.001, 0.01, 0.1), TOTAL, lambda m, v: TOTAL, width=64)
    assert [(b.share, b.reached) for b in full] == [
        (0.001, False),
        (0.01, False),
        (0.1, False),
        (1.0, True),
    ]


@pytest.mark.parametrize(("method", "share"), [("lora", 0.01), ("prompt-tuning", 0.001)])
def test_matched_budgets_land_near_their_target(counter, method, share):
    """On the real model: the count prepared at the chosen size is within the tolerance."""
    (budget,) = cmp.match_budget(method, (share,), counter.total, counter, width=counter.width)
    assert (counter.total, counter.width) == (TOTAL, 64)
    assert budget.reached
    assert abs(math.log(budget.trainable / (share * TOTAL))) <= math.log(COMPARE.tolerance)


def test_methods_counted_as_another_train_as_many(counter):
    """`COUNT_AS` saves PiSSA's SVDs: it must only name methods whose counts are LoRA's."""
    for method, same in cmp.COUNT_AS.items():
        model, _ = counter.load(method)
        prepared = cmp.get_method(method).function("prepare")(model, **cmp.knob_options(method, 2))
        trainable = sum(p.numel() for p in prepared.parameters() if p.requires_grad)
        assert trainable == counter(same, 2), method


def test_lm_loss_through_the_classifier_equals_the_language_model_loss(tiny_classifier):
    """The backbone's hidden states times the tied embedding are GPT2LMHeadModel's logits."""
    classifier, tokenizer = tiny_classifier
    lm, _ = load_model("tiny-gpt2", "causal-lm")
    texts = cmp.general_texts(3)
    ours = cmp.lm_loss(classifier, tokenizer, texts, batch_size=2)  # padded batches
    losses, tokens = 0.0, 0
    for text in texts:  # one row each: no padding
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            losses += lm(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
        tokens += ids.shape[1] - 1
    assert ours == pytest.approx(losses / tokens, abs=1e-5)


def test_the_pareto_front_keeps_what_nothing_beats():
    points = [(100, 0.6), (200, 0.55), (300, 0.8), (300, 0.7), (1000, 0.8), (5000, 0.9)]
    assert cmp.pareto_front(points) == [0, 2, 5]


def test_compare_writes_the_table_and_plot_and_resumes(small, tmp_path):
    """Two methods, one budget, one seed; the head alone leaves the backbone as it was."""
    settings = dict(
        methods=("head", "bitfit"),
        shares=(0.01,),
        seeds=(0,),
        output=tmp_path,
        max_epochs=1,
        rate_factors=(1.0,),
        general=cmp.general_texts(4),
        progress=False,
    )
    result = cmp.compare(small, **settings)
    assert len(result.trained) == 2 and not result.reused
    paths = cmp.write_compare(result, tmp_path)
    rows = cmp.table_rows(result)
    assert [r["method"] for r in rows] == ["untrained", "head only", "BitFit"]
    assert rows[1]["forgetting (nats)"] == "0.0000" and rows[2]["forgetting (nats)"] != "0.0000"
    assert rows[2]["trainable params"] == "1,600"
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in paths} >= {"compare.md", "compare.csv", "budgets.md", "search.md"}
    again = cmp.compare(small, **settings)
    assert not again.trained and len(again.reused) == 2
    assert cmp.table_rows(again) == rows


def test_bad_input_is_one_line(small, tmp_path, capsys):
    with pytest.raises(CourseError, match="cannot compare olora"):
        cmp.compare(small, methods=("olora",), output=tmp_path)
    assert main(["compare", "--budgets", "2", "--output", str(tmp_path / "x")]) == 2
    assert "--budgets" in capsys.readouterr().err


def test_the_spread_table_sets_the_gap_beside_the_seeds_std():
    runs = {
        ("lora", 0.01): [{"accuracy": 0.8}, {"accuracy": 0.7}],
        ("bitfit", 0.01): [{"accuracy": 0.6}, {"accuracy": 0.65}],
        ("head", 0.001): [{"accuracy": 0.6}],  # alone at its budget: no row
    }
    (row,) = cmp.spread_rows(cmp.CompareResult({}, TOTAL, runs=runs))
    assert row["best"] == "LoRA (peft) 0.7500 ± 0.0707" and row["best - second"] == "0.1250"
    assert row["median seed std"] == "0.0530"
