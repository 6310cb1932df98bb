"""Instruction tuning (`peft_course.instruct`), entailment pairs and six classes through
`finetune`."""

from __future__ import annotations

import json

import pytest

from peft_course import instruct
from peft_course.cli import main
from peft_course.data import DataError, load_classification_data
from peft_course.finetune import finetune
from peft_course.models import load_tokenizer
from peft_course.training import TrainConfig


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-gpt2")


def test_the_three_headers_and_no_empty_context():
    with_context = instruct.full_text(instruct.Example("Add them.", "2 and 3", "5"))
    assert with_context == "### Instruction: Add them.\n\n### Context: 2 and 3\n\n### Response: 5"
    assert (
        instruct.full_text(instruct.Example("Say hi.", "  ", "hi"))
        == "### Instruction: Say hi.\n\n### Response: hi"
    )


@pytest.mark.parametrize("seed", range(3))
def test_encoded_ids_are_the_whole_text_and_labels_the_response(tokenizer, seed):
    for example in instruct.generated_instructions(10, 5, 5, seed=seed)["train"]:
        encoded = instruct.encode(example, tokenizer, 256)
        whole = tokenizer(instruct.full_text(example), add_special_tokens=False)["input_ids"] + [
            tokenizer.eos_token_id
        ]
        assert encoded["input_ids"] == whole
        prompt = tokenizer(
            instruct.prompt_text(example.instruction, example.context), add_special_tokens=False
        )["input_ids"]
        assert encoded["labels"] == [-100] * len(prompt) + whole[len(prompt) :]


def test_truncation_cuts_the_context_and_keeps_the_response(tokenizer):
    example = instruct.Example("Which word?", " ".join(["cat"] * 100), "the last one")
    encoded = instruct.encode(example, tokenizer, 48)
    answer = tokenizer(" the last one", add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]
    assert len(encoded["input_ids"]) == 48 and encoded["input_ids"][-len(answer) :] == answer
    assert tokenizer.decode(encoded["input_ids"]).startswith(
        "### Instruction: Which word?\n\n### Context: cat"
    )
    with pytest.raises(instruct.InstructError, match="do not fit max_length 12"):
        instruct.encode(instruct.Example("Say it.", "", " ".join(["word"] * 30)), tokenizer, 12)


def test_generated_splits_are_disjoint_and_cover_every_task():
    splits = instruct.generated_instructions(100, 20, 50)
    keys = {name: {(e.instruction, e.context) for e in rows} for name, rows in splits.items()}
    assert not keys["train"] & keys["test"] and not keys["validation"] & keys["test"]
    assert {e.task for e in splits["test"]} == set(instruct.TASKS)
    for example in splits["test"]:  # every answer is right by construction
        if example.task == "sort":
            assert example.response.split() == sorted(example.context.split(), key=int)
        if example.task == "add":
            a, b = example.context.split(" and ")
            assert int(example.response) == int(a) + int(b)


def test_exact_match_ignores_case_spacing_and_a_final_stop():
    assert instruct.exact_match(" Positive. ", "positive") and instruct.exact_match(
        "1  2 5", "1 2 5"
    )
    assert not instruct.exact_match("1 25", "1 2 5") and not instruct.exact_match(
        "positive review", "positive"
    )


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_a_local_file_with_other_column_names(tmp_path):
    rows = [
        {"q": f"Repeat {i}.", "ctx": "" if i % 2 else f"number {i}", "a": str(i)} for i in range(30)
    ]
    splits = instruct.load_instructions(
        write_jsonl(tmp_path / "mine.jsonl", rows),
        columns={"instruction": "q", "context": "ctx", "response": "a"},
    )
    assert sorted(len(v) for v in splits.values()) == [3, 3, 24]
    assert all(isinstance(e.response, str) and e.response for v in splits.values() for e in v)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"instruction": "Say.", "response": "  "}] * 10, "row 1: the response is empty"),
        ([{"prompt": "Say.", "response": "x"}] * 10, r"no column\(s\) \['instruction'\]"),
    ],
)
def test_bad_instruction_files_name_the_problem(tmp_path, rows, message):
    with pytest.raises(DataError, match=message):
        instruct.load_instructions(write_jsonl(tmp_path / "bad.jsonl", rows))


def test_full_fine_tuning_raises_exact_match_well_above_the_untrained_model():
    """tiny-gpt2, full fine-tuning, 600 generated examples, 10 epochs (about 18 s; the chapter's
    table trains 2,000 for 15 and reaches 0.675). Measured here: exact match 0.05 untrained, 0.20
    after (sentiment 0.7, nth word 0.2, add 0.1), response loss 13.1 -> under 1.5; the bar of 0.1
    above leaves room for another CPU's rounding."""
    splits = instruct.generated_instructions(600, 50, 100)
    result = instruct.instruct_tune(
        splits, "full", config=TrainConfig(epochs=10, learning_rate=3e-3, progress=False)
    )
    assert result.best["loss"] < result.untrained["loss"] / 4
    assert result.best["accuracy"] >= result.untrained["accuracy"] + 0.1
    assert len(result.rows()) == 5 and {row["task"] for row in result.rows()} == set(instruct.TASKS)


def test_lora_trains_only_adapters_unless_the_embedding_is_asked_for():
    from peft_course.models import load_model

    model, _ = load_model("tiny-gpt2", task="causal-lm")
    lora = instruct.prepare(model, "lora", r=4, alpha=8.0)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    model, _ = load_model("tiny-gpt2", task="causal-lm")
    with_embedding = instruct.prepare(model, "lora", r=4, alpha=8.0, train_embeddings=True)
    assert with_embedding.get_input_embeddings().weight.requires_grad
    assert (
        with_embedding.get_output_embeddings().weight
        is with_embedding.get_input_embeddings().weight
    )


def test_cli_instruct_runs_and_refuses_a_bad_file(tmp_path, capsys):
    assert (
        main(
            [
                "instruct",
                "--max-examples",
                "20",
                "--epochs",
                "1",
                "--no-progress",
                "--output",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    assert "exact match" in (tmp_path / "out" / "results.md").read_text()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "x", "response": ""}] * 10)
    assert main(["instruct", "--data", bad, "--output", str(tmp_path / "out2")]) == 2
    assert "the response is empty" in capsys.readouterr().err


# --- entailment and six classes through finetune -----------------------------------------


def test_entailment_pairs_learn_and_keep_their_separator(tokenizer):
    data = load_classification_data("synthetic-entailment", max_examples=400)
    assert data.is_pair and data.label_names == ["entailment", "not_entailment"]
    result = finetune(
        data, "full", config=TrainConfig(epochs=3, learning_rate=1e-3, progress=False)
    )
    assert result.best["accuracy"] >= result.untrained["accuracy"] + 0.15


def test_six_classes_learn_with_weighted_scores(tmp_path):
    """Full fine-tuning, 1,200 generated sentences, 4 epochs (4 s): measured 0.13 untrained, 0.98
    after."""
    data = load_classification_data("synthetic-emotion")
    assert data.num_labels == 6 and data.label_names[0] == "sadness"
    result = finetune(
        data, "full", config=TrainConfig(epochs=4, learning_rate=3e-3, progress=False)
    )
    assert result.best["accuracy"] >= 0.8 > 0.3 > result.untrained["accuracy"]
    assert {"precision", "recall", "f1"} <= set(result.best)  # weighted over the six classes
