"""The shared loop: loss falls, accuracy beats chance, same seed gives the same numbers."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from peft_course.data import load_classification_data, tokenize
from peft_course.finetune import finetune, prepare
from peft_course.methods import head_parameter_names, prepare_head_only
from peft_course.training import (
    TrainConfig,
    evaluate_classifier,
    load_trainable_state,
    train,
    trainable_state,
)


@pytest.fixture(scope="module")
def small_sentiment():
    return load_classification_data("synthetic-sentiment", max_examples=400)


def test_head_only_trains_only_the_head(tiny_classifier):
    model, _ = tiny_classifier
    prepare_head_only(model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["score.weight"] == head_parameter_names(model)


def test_full_fine_tuning_loss_falls_and_beats_the_untrained_model(small_sentiment):
    result = finetune(
        small_sentiment, "full", config=TrainConfig(epochs=3, learning_rate=1e-3, progress=False)
    )
    history = result.training.history
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert result.best["accuracy"] > result.untrained["accuracy"] + 0.15
    assert result.trainable == result.total


def test_same_seed_gives_identical_metrics(small_sentiment):
    config = TrainConfig(epochs=1, learning_rate=2e-2, progress=False)
    first = finetune(small_sentiment, "head", config=config)
    second = finetune(small_sentiment, "head", config=config)
    assert first.best == second.best and first.training.history == second.training.history


def test_best_state_restores_the_best_validation_weights(tiny_classifier, small_sentiment):
    model, tokenizer = tiny_classifier
    tokenized = tokenize(small_sentiment, tokenizer)
    prepare_head_only(model)
    result = train(
        model, tokenized, tokenizer, TrainConfig(epochs=2, learning_rate=2e-2, progress=False)
    )
    assert result.best_val_accuracy == max(h["val_accuracy"] for h in result.history)
    load_trainable_state(model, result.best_state)
    assert (
        evaluate_classifier(model, tokenized["validation"], tokenizer)["accuracy"]
        == result.best_val_accuracy
    )
    assert set(trainable_state(model)) == {"score.weight"}


def test_eval_every_records_more_evaluations(tiny_classifier, small_sentiment):
    model, tokenizer = tiny_classifier
    prepare_head_only(model)
    result = train(
        model,
        tokenize(small_sentiment, tokenizer),
        tokenizer,
        TrainConfig(epochs=1, batch_size=50, eval_every=4, progress=False),
    )
    assert [h["step"] for h in result.history] == [4, 8]


def test_bad_configurations(tiny_classifier, small_sentiment):
    model, tokenizer = tiny_classifier
    for p in model.parameters():
        p.requires_grad = False
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(model, tokenize(small_sentiment, tokenizer), tokenizer, TrainConfig(progress=False))
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="learning_rate"):
        TrainConfig(learning_rate=0)
    with pytest.raises(ValueError, match="unknown method 'lora-typo'"):
        prepare(model, "lora-typo")


def test_predict_works_on_rows_without_labels(tiny_classifier):
    """The loader picks its collator from the labels; a split with none must still batch."""
    from datasets import Dataset

    from peft_course.training import predict

    model, tokenizer = tiny_classifier
    rows = Dataset.from_dict(dict(tokenizer(["the film was good", "I hated it"])))
    logits, loss = predict(model, rows, tokenizer)
    assert logits.shape == (2, 2) and loss != loss  # nan: nothing to compare with


def test_predict_runs_rows_by_length_and_returns_them_in_order(tiny_classifier, monkeypatch):
    """Each row's logits are its own, whatever batch it ran in (LOGITS_ATOL: the same row in a
    batch of another shape sums in another order), in the dataset's order; the sorted batches
    pad far less than the dataset's order would."""
    from peft_course import training
    from peft_course.tolerances import LOGITS_ATOL
    from peft_course.training import predict

    model, tokenizer = tiny_classifier
    texts = [("the film was good " * (1 + 5 * (i % 4))).strip() for i in range(16)]
    rows = Dataset.from_dict(dict(tokenizer(texts)))
    padded = []
    loader = training.make_loader

    def counting(dataset, *args, **kwargs):
        for batch in loader(dataset, *args, **kwargs):
            padded.append(batch["input_ids"].numel())
            yield batch

    monkeypatch.setattr(training, "make_loader", counting)
    logits, _ = predict(model, rows, tokenizer, batch_size=4)
    model.eval()
    with torch.no_grad():
        alone = torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in texts])
    torch.testing.assert_close(logits, alone, atol=LOGITS_ATOL, rtol=0)
    real = sum(len(ids) for ids in rows["input_ids"])
    longest = max(len(ids) for ids in rows["input_ids"])
    assert sum(padded) == real  # four lengths, four rows each: no padding at all
    assert real < 0.6 * 16 * longest  # in the dataset's order every batch holds the longest row


def test_devices_are_checked_up_front():
    from peft_course.errors import CourseError
    from peft_course.system import check_device

    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(CourseError, match="unknown device 'gpu'"):
        check_device("gpu")
    with pytest.raises(CourseError, match="'cuda:99'"):
        check_device("cuda:99")
    with pytest.raises(CourseError, match="must be a name"):
        check_device(0)


def test_a_truncated_checkpoint_is_named_before_anything_loads(
    tmp_path, tiny_classifier, small_sentiment
):
    from peft_course.errors import CourseError
    from peft_course.training import check_checkpoint

    model, tokenizer = tiny_classifier
    prepare_head_only(model)
    train(
        model,
        tokenize(small_sentiment, tokenizer),
        tokenizer,
        TrainConfig(epochs=1, progress=False),
        tmp_path,
    )
    check_checkpoint(tmp_path)
    # no temporary file left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    weights = tmp_path / "best.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CourseError, match="best.safetensors is damaged or truncated"):
        check_checkpoint(tmp_path)
    with pytest.raises(CourseError, match="best.safetensors is damaged or truncated"):
        train(
            model,
            tokenize(small_sentiment, tokenizer),
            tokenizer,
            TrainConfig(epochs=2, progress=False),
            tmp_path,
            resume=True,
        )


def test_length_grouped_batches_pad_less_and_visit_every_row_once():
    """`group_by_length`: each epoch still takes every row exactly once, in an order fixed by the
    seed and the epoch, with far fewer padding tokens than random batches."""
    from peft_course.models import load_tokenizer, make_loader

    tokenizer = load_tokenizer("tiny-gpt2")
    rows = [
        " ".join(["word"] * n)
        for n in torch.randint(1, 60, (200,), generator=torch.Generator().manual_seed(0))
    ]
    dataset = Dataset.from_dict({"text": rows}).map(
        lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"]
    )
    dataset = dataset.add_column("labels", [0] * len(dataset))

    def padding(group: bool, seed: int = 0) -> tuple[int, list[list[int]]]:
        loader = make_loader(
            dataset, tokenizer, 16, True, seed, torch.device("cpu"), group_by_length=group
        )
        batches = [batch["attention_mask"] for batch in loader]
        return sum(int((m == 0).sum()) for m in batches), [m.sum(1).tolist() for m in batches]

    grouped, lengths = padding(True)
    plain, _ = padding(False)
    assert grouped < plain / 4, (grouped, plain)
    assert sorted(n for batch in lengths for n in batch) == sorted(
        len(ids) for ids in dataset["input_ids"]
    )
    assert padding(True)[1] == lengths and padding(True, seed=1)[1] != lengths


def test_group_by_length_trains_as_well(small_sentiment):
    config = TrainConfig(epochs=2, learning_rate=1e-3, progress=False, group_by_length=True)
    result = finetune(small_sentiment, "full", config=config)
    assert result.best["accuracy"] > result.untrained["accuracy"] + 0.1
    with pytest.raises(Exception, match="group_by_length must be True or False"):
        TrainConfig(group_by_length="yes")
