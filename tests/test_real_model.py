"""The real-model pages of `python -m peft_course.pages`, run end to end at their smoke size
on tiny-gpt2 and generated files.

The pages in docs/results/real-*.md come from SmolLM2 and the real datasets, which tests never
use; here the same code runs on files in the real datasets' formats, written from the
package's generated data, so every part is checked in seconds: pages written with their
provenance, finished work reused on a rerun, and a missing data directory reported in one line.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from peft_course.data import load_classification_data
from peft_course.dpo import film_preferences
from peft_course.pages.__main__ import main
from peft_course.pages.real_model import PARTS
from peft_course.word_problems import generate_problems


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """rotten_tomatoes/, gsm8k/, hh_rlhf_dpo/, rte/, emotion/, imdb/ and the finance tweets as
    ../shared/data lays them out, from generated data."""
    root = tmp_path_factory.mktemp("data")
    sentiment = load_classification_data("synthetic-sentiment", max_examples=64)
    for split, rows in sentiment.splits.items():
        write_jsonl(
            root / "rotten_tomatoes" / f"{split}.jsonl",
            [{"text": t, "label": y} for t, y in zip(rows["text"], rows["label"])],
        )
    for split, seed in (("train", 1), ("test", 2)):
        write_jsonl(
            root / "gsm8k" / f"{split}.jsonl",
            [
                {"question": p.question, "answer": f"So it is {p.answer}.\n#### {p.answer}"}
                for p in generate_problems(12, seed=seed)
            ],
        )
    pairs = film_preferences(24, 12, seed=0)
    write_jsonl(
        root / "hh_rlhf_dpo" / "train.jsonl",
        list(pairs["train"]) + [{"prompt": "x", "chosen": "y", "rejected": ""}],
    )
    write_jsonl(root / "hh_rlhf_dpo" / "validation.jsonl", list(pairs["test"]))
    entailment = load_classification_data("synthetic-entailment", max_examples=32)
    (root / "rte").mkdir()
    for split, name in (("train", "train.tsv"), ("test", "dev.tsv")):
        rows = entailment.splits[split]
        lines = [
            f"{i}\t{a}\t{b}\t{entailment.label_names[y]}"
            for i, (a, b, y) in enumerate(zip(rows["text"], rows["text_pair"], rows["label"]))
        ]
        (root / "rte" / name).write_text(
            "index\tsentence1\tsentence2\tlabel\n" + "\n".join(lines) + "\n"
        )
    emotion = load_classification_data("synthetic-emotion", max_examples=36)
    for split, rows in emotion.splits.items():
        write_jsonl(
            root / "emotion" / f"{split}.jsonl",
            [{"text": t, "label": y} for t, y in zip(rows["text"], rows["label"])],
        )
    (root / "twitter_financial_news_topic").mkdir()
    for name, n in (("new_data_train.csv", 80), ("new_data_test.csv", 40)):
        lines = [f'"{word} news item number {i}",{i % 20}' for i, word in zip(range(n), WORDS * n)]
        (root / "twitter_financial_news_topic" / name).write_text(
            "text,label\n" + "\n".join(lines) + "\n"
        )
    (root / "imdb").mkdir()
    reviews = load_classification_data("synthetic-sentiment", max_examples=8).splits["test"]
    with gzip.open(root / "imdb" / "test.jsonl.gz", "wt") as file:
        file.writelines(
            json.dumps({"text": t, "label": y}) + "\n"
            for t, y in zip(reviews["text"], reviews["label"])
        )
    return root


WORDS = ["fed", "oil", "gold", "ipo", "bank"]


def run(data_dir: Path, tmp_path: Path, *parts: str) -> int:
    return main(
        [
            "--model",
            "tiny-gpt2",
            "--scale",
            "smoke",
            "--data-dir",
            str(data_dir),
            "--results",
            str(tmp_path / "out"),
            "--work",
            str(tmp_path / "work"),
            "--no-progress",
            *parts,
        ]
    )


def test_every_part_writes_its_page_and_a_rerun_reuses_the_work(data_dir, tmp_path):
    assert run(data_dir, tmp_path, *PARTS) == 0
    pages = sorted(p.name for p in (tmp_path / "out").glob("*.md"))
    assert pages == sorted(f"{name}.md" for name in PARTS)
    for page in (tmp_path / "out").rglob("*.md"):
        assert "*Made by `python -m peft_course.pages real-" in page.read_text(), (
            f"{page} has no provenance"
        )
    assert (tmp_path / "out" / "real-ablation" / "rank-val-loss.png").is_file()
    assert (tmp_path / "out" / "real-dpo" / "rewards.png").is_file()
    assert (tmp_path / "out" / "real-compare" / "pareto.png").is_file()
    assert (tmp_path / "out" / "real-preference" / "histories.png").is_file()
    assert (
        "1 pairs with an empty answer were left out"
        in (tmp_path / "out" / "real-dpo.md").read_text()
    )
    stored = {p.name: p.read_text() for p in (tmp_path / "work" / "tiny-gpt2-smoke").glob("*.json")}
    assert set(stored) == {
        "prompting.json",
        "arithmetic.json",
        "finetune.json",
        "instruct.json",
        "classes.json",
        "topics.json",
        "preference.json",
    }
    first = (tmp_path / "out" / "real-prompting.md").read_text()
    # reused: the same figures
    assert run(data_dir, tmp_path, "real-prompting", "real-finetune") == 0
    assert {
        p.name: p.read_text() for p in (tmp_path / "work" / "tiny-gpt2-smoke").glob("*.json")
    } == stored
    table = lambda text: [line for line in text.splitlines() if line.startswith("|")]  # noqa: E731
    assert table((tmp_path / "out" / "real-prompting.md").read_text()) == table(first)


def test_a_missing_data_directory_is_one_line(tmp_path, capsys):
    assert (
        main(
            [
                "--model",
                "tiny-gpt2",
                "--scale",
                "smoke",
                "--data-dir",
                str(tmp_path / "nowhere"),
                "--results",
                str(tmp_path / "out"),
                "--work",
                str(tmp_path / "work"),
                "real-finetune",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "no Rotten Tomatoes in" in err and "--data-dir" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_set_stands_for_its_pages_and_an_unknown_name_is_refused(capsys):
    from peft_course.pages.__main__ import SETS, build_parser, expand

    parser = build_parser()
    assert expand(["real-model", "real-dpo", "gpt2"], parser) == [*PARTS, "gpt2"]
    assert expand([], parser) == list(SETS["embedded"])
    with pytest.raises(SystemExit) as exited:
        main(["nope"])
    assert exited.value.code == 2 and "unknown page name(s) nope" in capsys.readouterr().err


def test_the_fine_tuning_table_trains_each_recipe_once_and_scores_only_what_it_shows(
    data_dir, tmp_path, monkeypatch
):
    """Four rows of methods and an untrained row: head, LoRA and QLoRA train (merged LoRA is
    LoRA's run, merged), and the test split is scored once untrained and once per method's
    best checkpoint. Before, every method trained and scored untrained, last and best (12)."""
    import peft_course.finetune as finetuning
    import peft_course.pages.real_model as real_model

    trained, scored = [], 0
    train_one, score = real_model.finetune, finetuning.evaluate_classifier

    def counted_finetune(data, method, *args, **kwargs):
        trained.append(method)
        return train_one(data, method, *args, **kwargs)

    def counted_score(*args, **kwargs):
        nonlocal scored
        scored += 1
        return score(*args, **kwargs)

    monkeypatch.setattr(real_model, "finetune", counted_finetune)
    monkeypatch.setattr(finetuning, "evaluate_classifier", counted_score)
    assert run(data_dir, tmp_path, "real-finetune") == 0
    assert trained == ["head", "lora", "qlora"]
    assert scored == 1 + 4
    table = (tmp_path / "out" / "real-finetune.md").read_text()
    assert "| merged LoRA |" in table and "| untrained |" in table
