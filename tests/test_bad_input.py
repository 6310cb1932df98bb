"""Bad input, as a careless user gives it: one line naming the problem, exit code 2, nothing lost.

Each case is a command (or a call) a user can get wrong. The command must end with exactly one
line on stderr, `peft-course <command>: error: ...`, that names the problem and what was given,
and return 2 without a traceback; a failing command must leave a finished run, its weights and
its logs exactly as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from peft_course.cli import main
from peft_course.errors import CourseError

FAST = ["--max-examples", "40", "--epochs", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def in_a_scratch_directory(tmp_path, monkeypatch):
    """Commands without --output write under ./runs: keep that out of the checkout."""
    monkeypatch.chdir(tmp_path)


def fails(capsys, argv: list[str], *needles: str) -> str:
    """Run the command; check it fails with one line holding every needle; return that line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"peft-course {argv[0]}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def reviews_csv(
    path: Path, n: int = 40, label=lambda i: i % 2, text=lambda i: f"review number {i}"
) -> Path:
    pd.DataFrame(
        {"text": [text(i) for i in range(n)], "label": [label(i) for i in range(n)]}
    ).to_csv(path, index=False)
    return path


def snapshot(directory: Path) -> dict[str, str]:
    """Every file under `directory` and a hash of its bytes: what a failing command must not
    change."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished head-only run (a few seconds on tiny-gpt2)."""
    output = tmp_path_factory.mktemp("runs") / "head"
    assert main(["finetune", "--method", "head", "--output", str(output), *FAST]) == 0
    return output


# --- the user's own data files: every row checked, the file and its line named ----------------


def test_bad_label_names_the_file_and_its_line_not_the_split(tmp_path, capsys):
    """The issue's case: row 31 of a 31-row file has label 7 (the file's line 32, after the
    header)."""
    bad = reviews_csv(tmp_path / "bad.csv", 31, label=lambda i: 7 if i == 30 else i % 2)
    line = fails(
        capsys,
        ["demo", "--train-file", bad, "--no-progress", "--output", tmp_path / "demo"],
        f"{bad}, line 32: label 7 would make the classes 0..7, but 2, 3, 4, 5, 6 never occur",
    )
    assert "synthetic-sentiment" not in line  # a local file is never called by a registry name
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", bad, "--output", tmp_path / "run", *FAST],
        f"{bad}, line 32: label 7",
    )


def test_a_two_row_file_reports_the_bad_label_before_its_size(tmp_path, capsys):
    bad = reviews_csv(tmp_path / "two.csv", 2, label=lambda i: 7 if i == 1 else 0)
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", bad, *FAST],
        "two.csv, line 3: label 7 would make the classes 0..7",
    )
    small = reviews_csv(tmp_path / "small.csv", 2)
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", small, *FAST],
        "small.csv has 2 row(s): too few",
    )


@pytest.mark.parametrize(
    "labels,needle",
    [
        ([0, 1, 0.5, 1], "line 4: label 0.5 is not a whole number"),
        ([0, 1, "", 1], "line 4: no label"),
        ([0, 1, "maybe", 1], "line 4: label 'maybe' is not one of the label names"),
        ([0, 1, -1, 1], "line 4: label -1 is outside 0..1"),
    ],
)
def test_bad_labels_are_refused_not_truncated(tmp_path, capsys, labels, needle):
    path = tmp_path / "labels.csv"
    pd.DataFrame({"text": [f"text {i}" for i in range(40)], "label": (labels * 10)}).to_csv(
        path, index=False
    )
    fails(
        capsys,
        [
            "finetune",
            "--method",
            "head",
            "--train-file",
            path,
            "--label-names",
            "neg",
            "pos",
            *FAST,
        ],
        needle,
    )


@pytest.mark.parametrize(
    "cell,needle", [("", "line 5: no 'review'"), ("   ", "line 5: 'review' is blank")]
)
def test_missing_or_blank_text_names_the_column_and_line(tmp_path, capsys, cell, needle):
    path = tmp_path / "texts.csv"
    texts = [f"text {i}" for i in range(40)]
    texts[3] = cell
    pd.DataFrame({"review": texts, "label": [i % 2 for i in range(40)]}).to_csv(path, index=False)
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", path, "--text-column", "review", *FAST],
        needle,
    )


def test_csv_lines_count_quoted_newlines_and_blank_lines(tmp_path):
    """A review may span lines inside quotes; the message still names the line its record
    starts on."""
    from peft_course.data import DataError, load_classification_data

    path = tmp_path / "multi.csv"
    path.write_text(
        'text,label\n"first line\nsecond line",0\n\n"ok",1\n'
        + "".join(f"t{i},{i % 2}\n" for i in range(20))
        + "bad,5\n"
    )
    # line 26: 1 header + 2 + 1 blank + 1 + 20 lines
    with pytest.raises(DataError, match=r"multi.csv, line 26: label 5"):
        load_classification_data(train_file=path, label_names=["a", "b"])


def test_parquet_with_numbers_stored_as_text(tmp_path, capsys):
    """Whole numbers stored as text ("0", "1") are read as those numbers; other text must be a
    label name."""
    from peft_course.data import DataError, load_classification_data

    frame = pd.DataFrame(
        {"text": [f"text {i}" for i in range(40)], "label": [str(i % 2) for i in range(40)]}
    )
    frame.to_parquet(tmp_path / "text-labels.parquet", index=False)
    data = load_classification_data(train_file=tmp_path / "text-labels.parquet")
    assert data.name == "text-labels.parquet" and set(data.splits["train"]["label"]) == {0, 1}
    frame.loc[6, "label"] = "1.5"
    frame.to_parquet(tmp_path / "bad.parquet", index=False)
    with pytest.raises(
        DataError, match=r"bad.parquet, row 7: label '1.5' is not one of the label names"
    ):
        load_classification_data(train_file=tmp_path / "bad.parquet", label_names=["neg", "pos"])
    numbers = pd.DataFrame({"text": list(range(40)), "label": [i % 2 for i in range(40)]})
    numbers.to_parquet(tmp_path / "numbers.parquet", index=False)
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", tmp_path / "numbers.parquet", *FAST],
        "numbers.parquet, row 1: 'text' holds 0, not text",
    )


def test_a_directory_or_an_empty_file_as_train_file(tmp_path, capsys):
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", tmp_path, *FAST],
        "it is a directory, not a file",
    )
    (tmp_path / "empty.csv").write_text("")
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", tmp_path / "empty.csv", *FAST],
        "the file is empty",
    )
    (tmp_path / "header.csv").write_text("text,label\n")
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", tmp_path / "header.csv", *FAST],
        "holds no rows",
    )


def test_jsonl_is_read_line_by_line(tmp_path, capsys):
    good = "".join(json.dumps({"text": f"t {i}", "label": i % 2}) + "\n" for i in range(30))
    (tmp_path / "broken.jsonl").write_text(good + '{"text": "a", label: 1}\n')
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", tmp_path / "broken.jsonl", *FAST],
        "broken.jsonl, line 31: not valid JSON",
    )
    (tmp_path / "array.jsonl").write_text(json.dumps([{"text": "a", "label": 0}] * 30))
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", tmp_path / "array.jsonl", *FAST],
        "array.jsonl, line 1: a JSON array, not an object",
    )
    (tmp_path / "missing.jsonl").write_text(good + json.dumps({"text": "no label here"}) + "\n")
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", tmp_path / "missing.jsonl", *FAST],
        "missing.jsonl, line 31: no label",
    )


def test_test_or_validation_file_without_train_file_is_refused(tmp_path, capsys):
    test = reviews_csv(tmp_path / "test.csv", 10)
    fails(
        capsys,
        ["finetune", "--method", "head", "--test-file", test, *FAST],
        "--test-file needs --train-file",
    )
    fails(
        capsys,
        ["demo", "--validation-file", test, "--no-progress"],
        "--validation-file needs --train-file",
    )
    from peft_course.data import load_classification_data

    with pytest.raises(CourseError, match="test_file is given without train_file"):
        load_classification_data(test_file=test)


# --- options out of range ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "option,value,needle",
    [
        ("--max-examples", "0", "--max-examples must be a positive integer, got 0"),
        ("--max-examples", "-5", "--max-examples must be a positive integer, got -5"),
        ("--learning-rate", "0", "--learning-rate must be positive, got 0"),
        ("--learning-rate", "-0.01", "--learning-rate must be positive, got -0.01"),
        ("--epochs", "0", "--epochs must be a positive integer, got 0"),
        ("--batch-size", "0", "--batch-size must be a positive integer, got 0"),
        ("--weight-decay", "-1", "--weight-decay must be in [0, inf), got -1"),
        ("--dropout", "1", "--dropout must be in [0, 1), got 1"),
        ("--r", "0", "--r must be a positive integer, got 0"),
        (
            "--max-length",
            "1000",
            "--max-length 1000 is longer than the model 'tiny-gpt2' can read: it has 512 positions",
        ),
        ("--max-length", "1", "--max-length must be an integer of at least 2, got 1"),
        ("--device", "gpu", "unknown device 'gpu': use cpu, cuda or cuda:N"),
    ],
)
def test_out_of_range_options_fail_before_any_work(tmp_path, capsys, option, value, needle):
    output = tmp_path / "run"
    fails(
        capsys, ["finetune", "--method", "lora", "--output", output, *FAST, option, value], needle
    )
    assert not output.exists()  # checked before anything was written


def test_label_names_that_repeat(capsys):
    fails(
        capsys,
        ["finetune", "--method", "head", "--label-names", "pos", "pos", *FAST],
        "--label-names repeats 'pos'",
    )


def test_devices_this_machine_does_not_have(capsys):
    fails(capsys, ["finetune", "--method", "head", "--device", "cuda:99", *FAST], "'cuda:99'")
    if not torch.cuda.is_available():
        fails(
            capsys,
            ["finetune", "--method", "head", "--device", "cuda", *FAST],
            "device 'cuda' asked for, but CUDA is not available here",
        )


def test_the_learning_rate_given_is_the_one_used(tmp_path):
    """`--learning-rate` is taken as given (it was `args.learning_rate or default`, so 0 became
    0.02)."""
    output = tmp_path / "run"
    assert (
        main(
            [
                "finetune",
                "--method",
                "head",
                "--learning-rate",
                "0.003",
                "--output",
                str(output),
                *FAST,
            ]
        )
        == 0
    )
    assert json.loads((output / "run.json").read_text())["train_config"]["learning_rate"] == 0.003


@pytest.mark.parametrize(
    "command",
    [
        ["finetune", "--method", "head", *FAST],
        ["prompt", "--n-problems", "1"],
        ["dpo", "--n-train", "4"],
        ["demo", "--no-progress"],
        ["ablate", "rank", "--values", "2", "--no-progress"],
        ["lora", "--no-progress"],
    ],
)
def test_output_that_is_a_file_or_cannot_be_written(tmp_path, capsys, monkeypatch, command):
    (tmp_path / "taken").write_text("my notes")
    fails(capsys, [*command, "--output", tmp_path / "taken"], "is a file, not a directory")
    assert (tmp_path / "taken").read_text() == "my notes"
    fails(
        capsys, [*command, "--output", tmp_path / "taken" / "below"], "is a file, not a directory"
    )
    locked = tmp_path / "locked"
    locked.mkdir()
    import os

    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode)
    )
    fails(capsys, [*command, "--output", locked], "is a directory you cannot write to")
    fails(capsys, [*command, "--output", locked / "new"], "cannot create --output")


def test_ablate_values_that_are_one_cell(tmp_path, capsys):
    fails(
        capsys,
        ["ablate", "alpha", "--values", "64", "64.0", "--output", tmp_path],
        "--values gives the same value twice ('64' and '64.0')",
    )
    fails(
        capsys,
        ["ablate", "targets", "--values", "c_attn,c_fc", "c_fc,c_attn", "--output", tmp_path],
        "same value",
    )
    fails(
        capsys,
        ["ablate", "rank", "--values", "8", "eight", "--output", tmp_path],
        "--values must be whole numbers, got 8 eight",
    )
    assert not (tmp_path / "cells").exists()


# --- reloading a run: predict, --resume ----------------------------------------------------------


def test_predict_refuses_empty_text_and_missing_runs(tmp_path, capsys, finished_run):
    fails(capsys, ["predict", "--run", finished_run, ""], "text 1 of 1 is empty")
    fails(capsys, ["predict", "--run", finished_run, "good", "   "], "text 2 of 2 is blank")
    fails(capsys, ["predict", "--run", tmp_path / "nowhere", "good"], "no such directory")
    (tmp_path / "file").write_text("x")
    fails(
        capsys, ["predict", "--run", tmp_path / "file", "good"], "it is a file, not a run directory"
    )


@pytest.mark.parametrize(
    "name,needle",
    [
        ("run.json", "is damaged (not valid JSON"),
        ("weights.safetensors", "is damaged or truncated"),
    ],
)
def test_predict_with_a_truncated_file(tmp_path, capsys, finished_run, name, needle):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    data = (copy / name).read_bytes()
    (copy / name).write_bytes(data[: len(data) // 2])
    fails(capsys, ["predict", "--run", copy, "the film was good"], name, needle)


def test_interrupted_finetune_says_how_to_resume_and_checks_what_it_resumes(
    tmp_path, capsys, monkeypatch, stop_training_after_one_epoch
):
    import peft_course.finetune as finetune_module

    output = tmp_path / "run"
    command = [
        "finetune",
        "--method",
        "head",
        "--output",
        str(output),
        "--max-examples",
        "40",
        "--epochs",
        "2",
        "--no-progress",
    ]
    real_train = stop_training_after_one_epoch(finetune_module)
    assert main(command) == 130
    # after the progress bars of the work done
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        last.startswith("peft-course finetune: interrupted;")
        and "with --resume to continue" in last
    ), last
    monkeypatch.setattr(finetune_module, "train", real_train)

    fails(capsys, command, "holds an interrupted run; pass --resume to continue it")
    before = snapshot(output)
    fails(
        capsys,
        [*command, "--resume", "--method", "lora"],
        "its checkpoint was started with method 'head', not 'lora'",
    )
    fails(
        capsys,
        [*command, "--resume", "--learning-rate", "0.5"],
        "started with learning_rate 0.02, not 0.5",
    )
    assert snapshot(output) == before
    optimizer = output / "checkpoint" / "optimizer.pt"
    saved = optimizer.read_bytes()
    optimizer.write_bytes(saved[: len(saved) // 2])
    fails(capsys, [*command, "--resume"], "optimizer.pt is damaged or truncated")
    optimizer.write_bytes(saved)
    assert main([*command, "--resume"]) == 0  # the intact checkpoint still resumes
    assert (output / "metrics.json").is_file()


def test_a_checkpoint_of_another_method_is_refused_by_its_weights(tmp_path):
    """Without the checkpoint's run.json (an older version), the weights' names still decide."""
    from peft_course.data import load_classification_data, tokenize
    from peft_course.finetune import prepare
    from peft_course.models import load_model
    from peft_course.training import TrainConfig, train

    data = load_classification_data("synthetic-sentiment", max_examples=20)
    config = TrainConfig(epochs=1, progress=False)
    model, tokenizer = load_model("tiny-gpt2")
    train(prepare(model, "head"), tokenize(data, tokenizer), tokenizer, config, tmp_path)
    other, _ = load_model("tiny-gpt2")
    with pytest.raises(CourseError, match="trainable.safetensors holds other trainable weights"):
        train(
            prepare(other, "full"),
            tokenize(data, tokenizer),
            tokenizer,
            config,
            tmp_path,
            resume=True,
        )


def test_failing_commands_leave_a_finished_run_as_it_was(tmp_path, capsys, finished_run):
    before = snapshot(finished_run)
    output = ["--output", finished_run]
    fails(capsys, ["finetune", "--method", "head", *output, *FAST], "already holds a finished run")
    fails(
        capsys,
        ["finetune", "--method", "head", "--overwrite", "--epochs", "0", *output],
        "--epochs",
    )
    fails(capsys, ["finetune", "--method", "lora", "--overwrite", "--r", "0", *output], "--r")
    fails(
        capsys,
        ["finetune", "--method", "head", "--overwrite", "--label-names", "a", "a", *output],
        "repeats",
    )
    fails(
        capsys,
        ["finetune", "--method", "head", "--overwrite", "--test-file", "t.csv", *output],
        "--train-file",
    )
    assert snapshot(finished_run) == before


# --- models ---------------------------------------------------------------------------------------


def test_model_directories_that_cannot_load(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    empty = tmp_path / "empty"
    empty.mkdir()
    fails(
        capsys,
        ["finetune", "--method", "head", "--model", empty, *FAST],
        "is not a usable model directory: it has no config.json, no tokenizer files",
    )
    pickled = tmp_path / "pickled"
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=100)
    config.save_pretrained(pickled)
    torch.save(GPT2LMHeadModel(config).state_dict(), pickled / "pytorch_model.bin")
    fails(
        capsys,
        ["finetune", "--method", "head", "--model", pickled, *FAST],
        "pytorch_model.bin: pickled weights, not loaded",
    )
    fails(
        capsys,
        ["finetune", "--method", "head", "--model", tmp_path / "nothing" / "here", *FAST],
        "no such directory",
    )
    fails(
        capsys,
        ["finetune", "--method", "head", "--model", empty, "--output", tmp_path / "run", *FAST],
        "no config.json",
    )
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_hub_id_that_cannot_be_reached(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fails(
        capsys,
        ["prompt", "--model", "someone/not-a-model", "--n-problems", "1"],
        "could not load 'someone/not-a-model'",
        "--model tiny-gpt2",
    )


# --- prompting: a finished run's log survives a failing rerun -------------------------------------


def test_a_failing_prompt_rerun_keeps_the_finished_log(tmp_path, capsys, monkeypatch):
    output = tmp_path / "prompt"
    command = [
        "prompt",
        "--strategy",
        "zero-shot",
        "--n-problems",
        "2",
        "--max-new-tokens",
        "4",
        "--output",
        output,
    ]
    assert main([str(a) for a in command]) == 0
    capsys.readouterr()
    before = snapshot(output)
    fails(
        capsys,
        [*command[:-2], "--strategy", "few-shot", "--shots", "0", "--output", output],
        "needs k >= 1",
    )
    fails(
        capsys,
        [*command[:-2], "--max-new-tokens", "600", "--output", output],
        "--max-new-tokens 600 leaves no room for the prompt",
    )
    fails(
        capsys,
        [*command[:-2], "--strategy", "zero-shot", "zero-shot", "--output", output],
        "--strategy repeats",
    )
    fails(capsys, [*command[:-2], "--top-p", "0", "--output", output], "--top-p must be in (0, 1]")
    import peft_course.prompting as prompting  # `command_prompt` imports it when it runs

    def interrupted(*args, **kwargs):
        def generate(prompt):
            raise KeyboardInterrupt

        return generate

    monkeypatch.setattr(prompting, "load_generate", interrupted)
    assert main([str(a) for a in command]) == 130
    assert snapshot(output) == before  # no temporary file left behind either


# --- the Python API: a string where a list belongs, a wrong type where a number belongs ---------


def test_a_string_where_a_list_belongs_is_named():
    from peft_course.data import load_classification_data
    from peft_course.finetune import prepare_lora_scratch
    from peft_course.methods import prepare_lora
    from peft_course.models import load_model
    from peft_course.prompting import evaluate_prompting
    from peft_course.qlora import prepare_qlora
    from peft_course.runs import predict_texts
    from peft_course.word_problems import generate_problems

    with pytest.raises(
        CourseError,
        match="label_names must be a list of strings, got the string 'negative positive'",
    ):
        load_classification_data(label_names="negative positive")
    with pytest.raises(CourseError, match="strategies must be a list, got the string 'zero-shot'"):
        evaluate_prompting(lambda p: "4", generate_problems(1), "zero-shot")
    model, tokenizer = load_model("tiny-gpt2")
    with pytest.raises(
        CourseError, match="texts must be a list of strings, got the string 'a review'"
    ):
        predict_texts(model, tokenizer, "a review")
    for prepare in (prepare_lora, prepare_lora_scratch, prepare_qlora):
        with pytest.raises(
            CourseError, match="targets must be a list of strings, got the string 'c_attn'"
        ):
            prepare(model, targets="c_attn")


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"epochs": "3"}, "epochs must be a positive integer, got the string '3'"),
        ({"epochs": True}, "epochs must be a positive integer, got True (a bool)"),
        ({"batch_size": 2.0}, "batch_size must be a positive integer, got 2.0"),
        ({"learning_rate": "1e-3"}, "learning_rate must be a number, got the string '1e-3'"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
    ],
)
def test_train_config_names_the_field_and_the_type(kwargs, needle):
    from peft_course.training import TrainConfig

    with pytest.raises(CourseError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**kwargs)


def test_a_fractional_rank_is_refused(tiny_classifier):
    from peft_course.methods import prepare_lora
    from peft_course.lora import LoRAConfig

    model, _ = tiny_classifier
    with pytest.raises(CourseError, match=r"the LoRA rank r must be a positive integer, got 8.5"):
        prepare_lora(model, r=8.5)
    with pytest.raises(
        CourseError, match=r"the LoRA rank r must be a positive integer, got True \(a bool\)"
    ):
        LoRAConfig(r=True)


def test_unknown_method_options_are_named():
    from peft_course.data import load_classification_data
    from peft_course.finetune import finetune

    data = load_classification_data("synthetic-sentiment", max_examples=10)
    with pytest.raises(CourseError, match="method 'head' has no option.* r: it takes none"):
        finetune(data, "head", r=8)
    with pytest.raises(CourseError, match="max_length 1000 is longer than"):
        finetune(data, "head", max_length=1000)


# --- the second sweep: nothing of the user's lost, no silent wrong result --------------------


@pytest.mark.parametrize(
    "command",
    [["dpo", "--n-train", "4", "--n-test", "2"], ["prompt", "--n-problems", "1"]],
    ids=["dpo", "prompt"],
)
def test_another_command_cannot_write_into_a_finished_run(finished_run, capsys, command):
    """dpo and prompt used to overwrite a run's metrics.json / results.md."""
    before = snapshot(finished_run)
    fails(
        capsys, [*command, "--output", finished_run], "holds the output of `peft-course finetune`"
    )
    assert snapshot(finished_run) == before


def test_output_into_a_folder_of_ones_own_files_is_refused(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "results.md").write_text("my results")
    before = snapshot(tmp_path / "notes")
    fails(
        capsys,
        ["finetune", "--method", "head", "--output", tmp_path / "notes", *FAST],
        "'" + str(tmp_path / "notes") + "' is not empty (results.md)",
    )
    fails(capsys, ["lora", "--output", tmp_path / "notes"], "not empty (results.md)")
    assert snapshot(tmp_path / "notes") == before


def test_a_command_refuses_a_directory_another_command_made(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prompt", "--n-problems", "1", "--output", str(out)]) == 0
    capsys.readouterr()
    assert main(["prompt", "--n-problems", "1", "--output", str(out)]) == 0  # its own: fine
    capsys.readouterr()
    fails(
        capsys,
        ["dpo", "--n-train", "4", "--output", out],
        "holds the output of `peft-course prompt`",
    )


def test_two_commands_at_once_into_one_directory(tmp_path, capsys):
    """A second command while a live process holds the directory is refused; a lock left by a
    process that is gone is taken over."""
    from peft_course.files import LOCK

    out = tmp_path / "out"
    out.mkdir()
    (out / ".peft-course").write_text("prompt\n")
    (out / LOCK).write_text(str(os.getppid()))  # a live process other than this one
    fails(capsys, ["prompt", "--n-problems", "1", "--output", out], "is writing to --output")
    (out / LOCK).write_text("999999999")  # no such process
    assert main(["prompt", "--n-problems", "1", "--output", str(out)]) == 0
    assert not (out / LOCK).exists()


def test_results_are_readable_by_others(finished_run):
    """Atomic writes used to keep the temporary file's private mode (0600)."""
    mode = (finished_run / "metrics.json").stat().st_mode & 0o777
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_a_csv_without_label_names_keeps_its_own_labels(tmp_path, capsys):
    """With --train-file and no --dataset the file's labels are its own, not the default
    dataset's negative/positive."""
    from peft_course.data import load_classification_data

    three = reviews_csv(tmp_path / "three.csv", 60, label=lambda i: i % 3)
    assert load_classification_data(train_file=three).label_names == ["0", "1", "2"]
    spam = reviews_csv(tmp_path / "spam.csv", 40, label=lambda i: ["ham", "spam"][i % 2])
    assert load_classification_data(train_file=spam).label_names == ["ham", "spam"]
    output = tmp_path / "run"
    assert (
        main(
            [
                "finetune",
                "--method",
                "head",
                "--train-file",
                str(spam),
                "--output",
                str(output),
                *FAST,
            ]
        )
        == 0
    )
    assert json.loads((output / "run.json").read_text())["label_names"] == ["ham", "spam"]


def test_one_class_and_duplicate_headers_are_refused(tmp_path, capsys):
    one = reviews_csv(tmp_path / "one.csv", 40, label=lambda i: 1)
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", one, *FAST],
        "every training label is 1",
    )
    (tmp_path / "dup.csv").write_text(
        "text,label,label\n" + "".join(f"t{i},0,1\n" for i in range(40))
    )
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", tmp_path / "dup.csv", *FAST],
        "the header names the column 'label' twice (columns 2 and 3)",
    )


def test_an_unreadable_file_is_one_line(tmp_path, capsys):
    path = reviews_csv(tmp_path / "secret.csv")
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything
        pytest.skip("this user can read a file of mode 000")
    fails(
        capsys,
        ["finetune", "--method", "head", "--train-file", path, *FAST],
        "no permission to read",
    )


def test_predict_refuses_a_base_model_that_changed(tmp_path, capsys, monkeypatch):
    """A run on a local base model records its absolute path and a fingerprint: predict works
    from another directory and refuses the model once its files changed."""
    from peft_course.models import resolve_model_path

    import shutil

    base = tmp_path / "base"
    shutil.copytree(resolve_model_path("tiny-gpt2"), base)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert (
        main(["finetune", "--method", "head", "--model", "../base", "--output", "run", *FAST]) == 0
    )
    monkeypatch.chdir(tmp_path)  # the recorded "../base" means something else from here
    assert main(["predict", "--run", "work/run", "a fine film"]) == 0
    config = json.loads((base / "config.json").read_text())
    config["layer_norm_epsilon"] = 1e-3
    (base / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    fails(
        capsys, ["predict", "--run", "work/run", "a fine film"], "changed since the run was trained"
    )


def test_a_sweep_of_one_string_or_no_values_is_one_line():
    from peft_course.ablation import named_sweep

    with pytest.raises(CourseError, match="values must be a list of values, got the string '4 16'"):
        named_sweep("rank", "4 16")
    with pytest.raises(CourseError, match="values is empty: give at least one value"):
        named_sweep("rank", [])
    with pytest.raises(CourseError, match="sweeping dropout needs values"):
        named_sweep("dropout")


def test_more_generated_problems_than_the_generator_can_make(capsys):
    """It used to draw for ever; it now stops once a template runs out, saying how many."""
    fails(capsys, ["prompt", "--n-problems", "100000"], "cannot draw 100000", "ask for at most")


def test_a_config_that_does_not_fit_its_weights(tmp_path, capsys):
    import shutil

    from peft_course.models import resolve_model_path

    model = tmp_path / "model"
    shutil.copytree(resolve_model_path("tiny-gpt2"), model)
    config = json.loads((model / "config.json").read_text())
    config["n_embd"] *= 2
    (model / "config.json").write_text(json.dumps(config))
    fails(
        capsys,
        ["finetune", "--method", "head", "--model", model, *FAST],
        "do not fit its config.json",
    )


def test_a_full_disk_while_saving_is_one_line(tmp_path, capsys, monkeypatch):
    """No space left: one line, and what was saved before is whole."""
    import errno

    import peft_course.commands as commands

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(commands, "command_info", full)
    assert main(["info"]) == 2
    assert "No space left on device" in capsys.readouterr().err


def test_dpo_log_probabilities_that_would_broadcast_are_refused():
    """(4,) against (4, 1) used to broadcast into a (4, 4) batch of margins."""
    from peft_course.dpo import dpo_loss

    flat, column = torch.zeros(4), torch.zeros(4, 1)
    with pytest.raises(
        CourseError, match=r"one shape.*policy_chosen \(4,\).*policy_rejected \(4, 1\)"
    ):
        dpo_loss(flat, column, flat, flat, beta=0.1)


def pairs_file(path: Path, prompt: str) -> Path:
    rows = [{"prompt": prompt, "chosen": f" good {i}", "rejected": f" bad {i}"} for i in range(6)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize(
    "words, flags, needle",
    [
        (40, ["--max-length", "16"], "leaves none of its completions inside max_length 16"),
        (600, [], "leaves none of its completions inside max_length"),
    ],
    ids=["longer-than-max-length", "longer-than-the-context"],
)
def test_a_dpo_prompt_too_long_is_one_line(tmp_path, capsys, words, flags, needle):
    """A prompt past --max-length trained on nothing; past the context it was an IndexError."""
    data = pairs_file(tmp_path / "pairs.jsonl", " ".join(["word"] * words))
    fails(capsys, ["dpo", "--train-file", data, *flags], "pair 1", needle)


def test_a_pair_past_the_context_is_refused_through_the_python_api(tmp_path):
    """The command line keeps --max-length inside the context; a script's config may not."""
    from peft_course.dpo import check_pairs_fit
    from peft_course.models import load_model

    model, tokenizer = load_model("tiny-gpt2", task="causal-lm")
    pair = {"prompt": "word " * 20, "chosen": " yes", "rejected": " no"}
    with pytest.raises(CourseError, match="pair 1: prompt and completion are .* context of 8"):
        check_pairs_fit(tokenizer, [pair], max_length=4096, context=8, source="pairs")


def test_no_strategies_is_one_clear_error():
    from peft_course.decoding import gpt2_generation_rows
    from peft_course.prompting import evaluate_prompting, load_problem_set

    problems = load_problem_set("generated", n=1)
    with pytest.raises(CourseError, match="no strategies to compare"):
        evaluate_prompting(lambda prompts: prompts, problems, strategies=[])
    with pytest.raises(CourseError, match="non-empty list"):
        gpt2_generation_rows(None, None, strategies=())


@pytest.mark.parametrize(
    "call",
    [
        lambda: __import__("peft_course.models").models.count_parameters(None),
        lambda: __import__("peft_course.lora").lora.find_modules(None, ["c_attn"]),
        lambda: __import__("peft_course.lora").lora.trainable_parameters("gpt2", ["score"]),
        lambda: __import__("peft_course.counting").counting.bitfit(None),
    ],
    ids=["count_parameters", "find_modules", "trainable_parameters", "bitfit"],
)
def test_none_or_a_name_for_a_model_is_one_clear_error(call):
    """They used to fail with an AttributeError from inside ('NoneType' has no 'parameters')."""
    with pytest.raises(CourseError, match="must be a torch module"):
        call()
