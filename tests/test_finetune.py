"""Fine-tuning chapter: every method learns, merged == unmerged, reload == in-memory, bad input."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
import torch

from peft_course.cli import main
from peft_course.data import load_classification_data, tokenize
from peft_course.errors import CourseError
from peft_course.finetune import finetune, finish_as, prepare
from peft_course.models import ModelLoadError, load_model
from peft_course.synthetic import NEGATIVE_ADJECTIVES, POSITIVE_ADJECTIVES, SUBJECTS
from peft_course.runs import (
    RunError,
    RunSpec,
    check_run_directory,
    load_run,
    predict_texts,
    save_run,
)
from peft_course.training import TrainConfig, train
from peft_course.tolerances import LOGITS_ATOL, ROUNDING_ATOL

QUICK = {  # method -> (epochs, learning rate, options): a few seconds each on a 2-core CPU
    "head": (4, 2e-2, {}),
    "lora": (3, 5e-3, {"r": 8, "alpha": 16}),
    "full": (2, 1e-3, {}),
}


@pytest.fixture(scope="module")
def small():
    return load_classification_data("synthetic-sentiment", max_examples=400)


@pytest.fixture(scope="module")
def lora_run(small):
    epochs, lr, options = QUICK["lora"]
    return finetune(
        small,
        "lora",
        config=TrainConfig(epochs=epochs, learning_rate=lr, progress=False),
        **options,
    )


@pytest.mark.parametrize("method", ["head", "full"])
def test_method_learns(small, method):
    epochs, lr, options = QUICK[method]
    result = finetune(
        small,
        method,
        config=TrainConfig(epochs=epochs, learning_rate=lr, progress=False),
        **options,
    )
    history = result.training.history
    assert (
        history[-1]["val_loss"] < history[0]["val_loss"]
        or history[-1]["train_loss"] < history[0]["train_loss"]
    )
    assert result.best["accuracy"] > result.untrained["accuracy"] + 0.1


def test_peft_lora_learns_and_trains_adapters_plus_head(lora_run):
    history = lora_run.training.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert lora_run.best["accuracy"] > lora_run.untrained["accuracy"] + 0.1
    # r * (d_in + d_out) for c_attn (64 -> 192) in 2 blocks, plus the 64 x 2 score copy
    assert lora_run.trainable == 8 * (64 + 192) * 2 + 64 * 2


def test_merged_predicts_what_unmerged_predicts(small, lora_run):
    epochs, lr, options = QUICK["lora"]
    merged = finetune(
        small,
        "merged",
        config=TrainConfig(epochs=epochs, learning_rate=lr, progress=False),
        **options,
    )
    # no LoRA code left
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    assert merged.predictions == lora_run.predictions
    assert merged.best["accuracy"] == lora_run.best["accuracy"]


def test_merging_a_lora_run_is_the_merged_method_without_training_twice(small, lora_run):
    """`finish_as(lora run, "merged")` is the `merged` method: the same training, then the
    merge; the scores left out (`score_untrained`, `score_last`) change no weight."""
    epochs, lr, options = QUICK["lora"]
    config = TrainConfig(epochs=epochs, learning_rate=lr, progress=False)
    again = finetune(
        small, "lora", config=config, score_untrained=False, score_last=False, **options
    )
    assert again.untrained is None and again.last is None
    assert again.best == lora_run.best
    merged = finish_as(again, "merged", small)
    assert merged.method == "merged"
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    assert merged.predictions == lora_run.predictions
    assert merged.best["accuracy"] == lora_run.best["accuracy"]


@pytest.mark.parametrize("method", ["head", "qlora", "lora"])
def test_finishing_as_a_method_that_trains_otherwise_is_refused(lora_run, method):
    with pytest.raises(CourseError, match="is not 'lora' and then a finishing step"):
        finish_as(lora_run, method, None)


def test_reloaded_run_predicts_what_the_in_memory_model_predicts(tmp_path, small, lora_run):
    epochs, lr, options = QUICK["lora"]
    spec = RunSpec("tiny-gpt2", "lora", small.label_names, small.name, options)
    save_run(tmp_path, lora_run, spec, small)
    model, tokenizer, loaded_spec = load_run(tmp_path)
    assert loaded_spec == spec
    texts = small.splits["test"]["text"][:16]
    lora_run.model.eval()
    expected = predict_texts(lora_run.model, lora_run.tokenizer, texts)
    got = predict_texts(model, tokenizer, texts)
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    for a, b in zip(got, expected):  # same weights, same code path: equal up to float rounding
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=ROUNDING_ATOL)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["best_validation"]["accuracy"] == lora_run.best["accuracy"]
    assert (tmp_path / "history.png").stat().st_size > 0 and (tmp_path / "results.md").is_file()


def topic_file(path, n: int = 400, num_labels: int = 20) -> str:
    """A learnable 20-topic set: each topic ends with its own keyword (one token for tiny-gpt2)."""
    rng = random.Random(0)
    keywords = POSITIVE_ADJECTIVES[:10] + NEGATIVE_ADJECTIVES[:10]
    rows = []
    for i in range(n):
        label = i % num_labels
        rows.append({"text": " ".join(rng.sample(SUBJECTS, 2) + [keywords[label]]), "label": label})
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_twenty_class_path_end_to_end(tmp_path):
    data = load_classification_data(
        "twitter-financial-news-topic", train_file=topic_file(tmp_path / "topics.csv")
    )
    assert data.num_labels == 20
    result = finetune(
        data,
        "lora",
        config=TrainConfig(epochs=4, learning_rate=1e-2, progress=False),
        r=8,
        alpha=16,
    )
    assert result.best["accuracy"] > 0.3  # chance is 0.05
    save_run(
        tmp_path / "run", result, RunSpec("tiny-gpt2", "full", data.label_names, data.name), data
    )
    assert (tmp_path / "run" / "confusion.png").stat().st_size > 0


def test_sentence_pair_path_end_to_end(tmp_path):
    rng = random.Random(0)
    rows = []
    for i in range(200):  # entailed when the hypothesis repeats the premise's colour
        colour, other = rng.sample(["red", "blue", "green", "black"], 2)
        entailed = i % 2 == 0
        rows.append(
            {
                "sentence1": f"the car is {colour}",
                "sentence2": f"it is {colour if entailed else other}",
                "label": "entailment" if entailed else "not_entailment",
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "rte.tsv", sep="\t", index=False)
    data = load_classification_data("rte", train_file=str(tmp_path / "rte.tsv"))
    result = finetune(
        data, "head", config=TrainConfig(epochs=1, learning_rate=1e-2, progress=False)
    )
    assert 0.0 <= result.best["accuracy"] <= 1.0 and result.trainable == 128


def test_head_with_the_wrong_label_count_is_refused(tmp_path):
    model, tokenizer = load_model("tiny-gpt2", num_labels=3)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="head for 3 labels, but the data has 2"):
        load_model(str(tmp_path), num_labels=2)


def test_finished_run_is_not_overwritten(tmp_path):
    # what marks a finished run: its metrics; what marks it as a run, its spec
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(RunError, match="already holds a finished run; pass --overwrite"):
        check_run_directory(tmp_path)
    assert check_run_directory(tmp_path, overwrite=True) == tmp_path


def test_interrupted_run_resumes_to_the_same_result(tmp_path, small):
    config = TrainConfig(epochs=3, learning_rate=2e-2, progress=False)

    def run(checkpoint=None, resume=False, stop_after=None):
        model, tokenizer = load_model("tiny-gpt2")
        prepare(model, "head")

        def interrupt(epoch, _):
            if epoch == stop_after:
                raise KeyboardInterrupt

        try:
            return train(
                model, tokenize(small, tokenizer), tokenizer, config, checkpoint, resume, interrupt
            )
        except KeyboardInterrupt:
            return None

    uninterrupted = run()
    assert run(tmp_path, stop_after=1) is None
    assert json.loads((tmp_path / "state.json").read_text())["epochs_done"] == 1
    resumed = run(tmp_path, resume=True)
    assert resumed.history == uninterrupted.history
    assert torch.equal(resumed.best_state["score.weight"], uninterrupted.best_state["score.weight"])


def test_cli_finetune_then_predict(tmp_path, capsys):
    output = tmp_path / "run"
    args = [
        "finetune",
        "--method",
        "head",
        "--epochs",
        "1",
        "--max-examples",
        "100",
        "--output",
        str(output),
        "--no-progress",
    ]
    assert main(args) == 0
    assert main(args) == 2  # a finished run is refused
    assert "already holds a finished run" in capsys.readouterr().err
    assert main(["predict", "--run", str(output), "the film was superb", "I hated the plot"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in ("negative", "positive")


def test_cli_bad_lora_rank(tmp_path, capsys):
    assert (
        main(
            [
                "finetune",
                "--method",
                "lora",
                "--r",
                "0",
                "--output",
                str(tmp_path / "x"),
                "--no-progress",
                "--max-examples",
                "50",
            ]
        )
        == 2
    )
    assert "--r must be a positive integer, got 0" in capsys.readouterr().err


def test_qlora_run_reloads_quantized_and_predicts_the_same(tmp_path):
    data = load_classification_data("synthetic-sentiment", max_examples=64)
    result = finetune(
        data,
        "qlora",
        config=TrainConfig(epochs=1, batch_size=16, learning_rate=5e-3, progress=False),
    )
    save_run(
        tmp_path,
        result,
        RunSpec("tiny-gpt2", "qlora", data.label_names, data.name, {"r": 8, "alpha": 16}),
        data,
    )
    model, tokenizer, _ = load_run(tmp_path)
    assert (
        type(
            model.get_submodule("base_model.model.transformer.h.0.attn.c_attn").base_layer
        ).__name__
        == "Linear4bit"
    )
    texts = data.splits["test"]["text"][:8]
    result.model.eval()
    expected = predict_texts(result.model, result.tokenizer, texts)
    got = predict_texts(model, tokenizer, texts)
    for a, b in zip(got, expected):  # re-quantizing the same weights gives the same codes
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=LOGITS_ATOL)
