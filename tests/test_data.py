"""Datasets: registry entries, local files in every format, and an error for each bad input."""

from __future__ import annotations


import pandas as pd
import pytest

from peft_course.data import (
    REGISTRY,
    DataError,
    get_spec,
    join_pair,
    load_classification_data,
    read_table,
    tokenize,
)
from peft_course.synthetic import synthetic_sentiment


def write(frame: pd.DataFrame, path) -> str:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    return str(path)


def reviews(n: int = 40, label=lambda i: i % 2) -> pd.DataFrame:
    return pd.DataFrame(
        {"review": [f"review number {i}" for i in range(n)], "stars": [label(i) for i in range(n)]}
    )


def test_registry_entries():
    assert len(get_spec("twitter-financial-news-topic").label_names) == 20
    assert get_spec("emotion").label_names == (
        "sadness",
        "joy",
        "love",
        "anger",
        "fear",
        "surprise",
    )
    assert get_spec("rte").columns == {
        "text": "sentence1",
        "text_pair": "sentence2",
        "label": "label",
    }
    assert get_spec("dolly").columns == {
        "instruction": "instruction",
        "context": "context",
        "response": "response",
    }
    assert {"imdb", "rotten_tomatoes", "synthetic-sentiment"} <= REGISTRY.keys()


def test_synthetic_sentiment_is_fixed_balanced_disjoint_and_needs_more_than_words():
    splits = synthetic_sentiment(seed=0)
    assert splits == synthetic_sentiment(seed=0)
    assert splits != synthetic_sentiment(seed=1)
    texts = {name: {e.text for e in rows} for name, rows in splits.items()}
    assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["validation"])
    assert sum(e.label for e in splits["train"]) == len(splits["train"]) // 2
    negated = [e for e in splits["train"] if " not " in e.text or " never " in e.text]
    assert len(negated) > 200
    # "good" appears in sentences of both labels: one word does not decide the label
    assert {e.label for e in splits["train"] if " good" in e.text} == {0, 1}


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_local_files_in_every_format(tmp_path, suffix):
    train = write(reviews(40), tmp_path / f"train{suffix}")
    test = write(reviews(10), tmp_path / f"test{suffix}")
    data = load_classification_data(
        train_file=train,
        test_file=test,
        text_column="review",
        label_column="stars",
        label_names=["bad", "good"],
    )
    assert data.label_names == ["bad", "good"]
    assert len(data.splits["test"]) == 10
    # validation carved from train
    assert len(data.splits["train"]) + len(data.splits["validation"]) == 40
    assert data.splits["train"].column_names == ["text", "label"]
    assert set(data.splits["train"]["label"]) == {0, 1}


def test_string_labels_map_through_label_names(tmp_path):
    frame = pd.DataFrame(
        {
            "premise": ["a", "b", "c", "d"] * 5,
            "hypothesis": ["e"] * 20,
            "label": ["entailment", "not_entailment"] * 10,
        }
    )
    data = load_classification_data(
        "rte",
        train_file=write(frame, tmp_path / "t.csv"),
        text_column="premise",
        text_pair_column="hypothesis",
    )
    assert data.label_names == ["entailment", "not_entailment"]
    assert data.splits["train"].to_pandas()["label"].isin([0, 1]).all()


def test_sentence_pairs_join_with_the_end_of_text_token(tmp_path, tiny_tokenizer):
    frame = pd.DataFrame(
        {
            "sentence1": ["the film was good"] * 20,
            "sentence2": ["it was bad"] * 20,
            "label": [0, 1] * 10,
        }
    )
    data = load_classification_data("rte", train_file=write(frame, tmp_path / "rte.tsv"))
    assert data.is_pair
    row = tokenize(data, tiny_tokenizer)["train"][0]
    eos = tiny_tokenizer.eos_token_id
    first = tiny_tokenizer("the film was good")["input_ids"]
    assert row["input_ids"] == first + [eos] + tiny_tokenizer("it was bad")["input_ids"]
    assert row["attention_mask"] == [1] * len(row["input_ids"])  # the separator is attended


def test_join_pair_cuts_the_first_text_first():
    assert join_pair([1, 2, 3, 4], [5, 6], separator=0, max_length=5) == [1, 2, 0, 5, 6]
    assert join_pair([1, 2], [5, 6, 7, 8, 9], separator=0, max_length=4) == [0, 5, 6, 7]


def test_tokenize_truncates(sentiment, tiny_tokenizer):
    tokenized = tokenize(sentiment, tiny_tokenizer, max_length=4)
    assert max(len(ids) for ids in tokenized["train"]["input_ids"]) == 4
    assert tokenized["train"].column_names == ["labels", "input_ids", "attention_mask"]


def test_max_examples_subsamples_every_split(sentiment):
    small = load_classification_data("synthetic-sentiment", max_examples=50)
    assert [len(small.splits[s]) for s in ("train", "validation", "test")] == [50, 50, 50]


# --- every bad input gets an error that names the problem --------------------------------------


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match="unknown dataset 'imbd'.*imdb.*rotten_tomatoes"):
        load_classification_data("imbd")


def test_instruction_dataset_is_not_a_classification_one():
    with pytest.raises(DataError, match="'dolly' is a instruction dataset"):
        load_classification_data("dolly")


def test_missing_column_lists_the_columns(tmp_path):
    train = write(reviews(), tmp_path / "train.csv")
    with pytest.raises(DataError, match=r"missing column\(s\) \['text'\].*\['review', 'stars'\]"):
        load_classification_data(train_file=train, label_column="stars")


def test_label_out_of_range_names_the_row(tmp_path):
    train = write(reviews(40, label=lambda i: 2 if i == 7 else i % 2), tmp_path / "train.csv")
    test = write(reviews(10), tmp_path / "test.csv")
    # line 9 is row 8 of the data
    with pytest.raises(DataError, match=r"train.csv, line 9: label 2 is outside 0..1"):
        load_classification_data(
            train_file=train,
            test_file=test,
            validation_file=test,
            text_column="review",
            label_column="stars",
            label_names=["bad", "good"],
        )


def test_negative_label_is_out_of_range(tmp_path):
    train = write(reviews(20, label=lambda i: -1 if i == 0 else 0), tmp_path / "train.jsonl")
    with pytest.raises(DataError, match="label -1"):
        load_classification_data(
            train_file=train, text_column="review", label_column="stars", label_names=["a", "b"]
        )


def test_unknown_string_label(tmp_path):
    frame = pd.DataFrame({"text": ["x"] * 20, "label": ["pos"] * 19 + ["meh"]})
    with pytest.raises(
        DataError,
        match=r"t.csv, line 21: label 'meh' is not one of the label names \['neg', 'pos'\]",
    ):
        load_classification_data(
            train_file=write(frame, tmp_path / "t.csv"), label_names=["neg", "pos"]
        )


def test_empty_split(tmp_path):
    train = write(reviews(40), tmp_path / "train.csv")
    empty = tmp_path / "test.csv"
    empty.write_text("review,stars\n")
    with pytest.raises(DataError, match="test.csv holds no rows: the test split would be empty"):
        load_classification_data(
            train_file=train, test_file=str(empty), text_column="review", label_column="stars"
        )


def test_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="unknown extension '.txt'"):
        read_table(tmp_path / "notes.txt")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read .*broken.parquet"):
        read_table(tmp_path / "broken.parquet")
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": 0}\n{oops\n')
    with pytest.raises(DataError, match="broken.jsonl, line 2: not valid JSON"):
        read_table(tmp_path / "broken.jsonl")


def test_hub_dataset_offline_says_what_to_do_instead(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(
        DataError,
        match="could not load 'rotten_tomatoes' from the hub.*--train-file.*synthetic-sentiment",
    ):
        load_classification_data("rotten_tomatoes")
