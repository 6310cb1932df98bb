"""What a run leaves is what the ecosystem loads: peft adapters, exported checkpoints, TensorBoard.

Each run here is tiny (32 examples a split, one epoch, 64 tokens) and trained once per module;
the checks compare what peft, transformers' pipeline and TensorBoard read from the run's files
with what `peft-course predict` computes from the same files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForSequenceClassification, PeftModel
from safetensors.torch import load_file

from peft_course.cli import main
from peft_course.data import load_classification_data
from peft_course.event_logs import LiveEvents, event_files, read_events, write_events
from peft_course.export import export_run, run_command
from peft_course.finetune import finetune
from peft_course.models import load_model
from peft_course.registry import get_method
from peft_course.runs import RunSpec, load_run, predict_texts, save_run
from peft_course.training import TrainConfig

TEXTS = ["a wonderful, moving film", "dull and far too long", "it was fine"]
FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0-lora"  # written by release 0.1.0
ELSEWHERE = Path(__file__).parents[1] / "docs" / "examples" / "elsewhere"
# peft's model and ours run the same float32 operations on the same weights: measured 0.0
# (merged: 1.2e-7, peft folds B A into W first) on tiny-gpt2; the bar is 1e-6.
PEFT_ATOL = 1e-6
# pipeline() classifies one text at a time, predict pads them into one batch: the padded rows'
# probabilities differ by float32 rounding: measured at most 8.9e-8 (lora-scratch on tiny-gpt2).
PIPELINE_ATOL = 1e-6
# a QLoRA run's 4-bit layers compute in bf16 (on this CPU), its dequantized export in float32:
# the probabilities differ by at most 4.6e-4 here (three texts, one run).
QLORA_ATOL = 2e-3


@pytest.fixture(scope="module")
def data():
    return load_classification_data("synthetic-sentiment", max_examples=32)


def train_run(directory: Path, data, method: str, model: str = "tiny-gpt2") -> Path:
    """A finished run of `method` in `directory`, as `peft-course finetune` saves it."""
    config = TrainConfig(
        epochs=1, batch_size=16, learning_rate=get_method(method).learning_rate, progress=False
    )
    result = finetune(data, method, model, config, 64)
    spec = RunSpec(model, method, data.label_names, data.name, {}, 64, 0, {"epochs": 1})
    return save_run(directory, result, spec, data)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """Finished runs of the methods checked here, by method (and model for tiny-llama)."""
    root = tmp_path_factory.mktemp("runs")
    made = {m: train_run(root / m, data, m) for m in ("lora", "lora-scratch", "merged", "bitfit")}
    for method in ("lora", "lora-scratch"):  # nn.Linear projections: no fan_in_fan_out
        made[f"{method}-llama"] = train_run(root / f"{method}-llama", data, method, "tiny-llama")
    return made


def predicted_logits(run: Path) -> torch.Tensor:
    """The logits `peft-course predict` computes for TEXTS (one padded batch)."""
    model, tokenizer, _ = load_run(run)
    with torch.no_grad():
        return model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits


def peft_logits(model: torch.nn.Module, tokenizer) -> torch.Tensor:
    model.eval().config.pad_token_id = tokenizer.pad_token_id
    with torch.no_grad():
        return model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits


@pytest.mark.parametrize("method", ["lora", "lora-scratch", "merged", "lora-scratch-llama"])
def test_a_run_is_a_peft_adapter_directory(runs, data, method):
    """PeftModel.from_pretrained on the base and AutoPeftModel alone give predict's logits;
    LoRA from scratch loads through the same call (its A and B under peft's names)."""
    run = runs[method]
    expected = predicted_logits(run)
    model = "tiny-llama" if method.endswith("-llama") else "tiny-gpt2"
    base, tokenizer = load_model(model, "classification", 2, data.label_names)
    untrained = peft_logits(base, tokenizer)
    assert (untrained - expected).abs().max() > 1e-3  # the adapter and head change the logits
    loaded = PeftModel.from_pretrained(base, str(run))
    assert loaded.peft_config["default"].peft_type == "LORA"
    torch.testing.assert_close(peft_logits(loaded, tokenizer), expected, atol=PEFT_ATOL, rtol=0)
    alone = AutoPeftModelForSequenceClassification.from_pretrained(str(run))
    torch.testing.assert_close(peft_logits(alone, tokenizer), expected, atol=PEFT_ATOL, rtol=0)


def test_lora_from_scratch_saves_peft_names_with_the_same_tensors(runs):
    """The scratch run's adapter file holds its own A, B and head under peft's names."""
    ours = load_file(runs["lora-scratch"] / "weights.safetensors")
    theirs = load_file(runs["lora-scratch"] / "adapter_model.safetensors")
    renamed = {
        "base_model.model." + n + (".weight" if n.endswith(("lora_A", "lora_B")) else ""): t
        for n, t in ours.items()
    }
    assert renamed.keys() == theirs.keys()
    assert all(torch.equal(renamed[n], theirs[n]) for n in theirs)
    assert any(n.endswith("lora_B.weight") and t.abs().sum() > 0 for n, t in theirs.items())


@pytest.mark.parametrize(
    "run_name, flags",
    [("lora", ["--merged"]), ("lora-scratch", ["--merged"]), ("lora-llama", ["--merged"])]
    + [("bitfit", [])],  # no adapter: a whole checkpoint without --merged too
)
def test_exported_merged_checkpoint_serves_predicts_labels(runs, tmp_path, run_name, flags, capsys):
    """`peft-course export RUN OUT --merged` -> pipeline("text-classification") predicts what
    predict predicts, with the same probabilities, on tiny-gpt2 and tiny-llama."""
    from transformers import pipeline

    out = tmp_path / "out"
    assert main(["export", str(runs[run_name]), str(out), *flags]) == 0
    assert "saved:" in capsys.readouterr().out
    assert not (out / "adapter_config.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    model, tokenizer, spec = load_run(runs[run_name])
    expected = predict_texts(model, tokenizer, TEXTS, spec.max_length)
    served = pipeline("text-classification", model=str(out), top_k=None)(TEXTS)
    for want, got in zip(expected, served):
        scores = {row["label"]: row["score"] for row in got}
        assert max(scores, key=scores.get) == want["label"]
        for label, probability in want["probabilities"].items():
            assert scores[label] == pytest.approx(probability, abs=PIPELINE_ATOL)


def test_a_qlora_run_exports_its_dequantized_merged_weights(data, tmp_path):
    """A QLoRA run loads with peft on a 4-bit base; its export holds the dequantized weights:
    pipeline predicts predict's labels, with probabilities within the bf16 compute's rounding."""
    from transformers import pipeline

    from peft_course.system import bnb_4bit_support

    works, why = bnb_4bit_support()
    if not works:
        pytest.skip(why)
    from peft_course.qlora import load_qlora_model

    run = train_run(tmp_path / "qlora", data, "qlora")
    base, tokenizer = load_qlora_model("tiny-gpt2", "classification", 2, data.label_names)
    loaded = PeftModel.from_pretrained(base, str(run))  # the run is a peft adapter on 4-bit too
    torch.testing.assert_close(
        peft_logits(loaded, tokenizer), predicted_logits(run), atol=PEFT_ATOL, rtol=0
    )
    out = export_run(run, tmp_path / "out", merged=True)
    model, tokenizer, spec = load_run(run)
    expected = predict_texts(model, tokenizer, TEXTS, spec.max_length)
    served = pipeline("text-classification", model=str(out), top_k=None)(TEXTS)
    for want, got in zip(expected, served):
        scores = {row["label"]: row["score"] for row in got}
        assert max(scores, key=scores.get) == want["label"]
        for label, probability in want["probabilities"].items():
            assert scores[label] == pytest.approx(probability, abs=QLORA_ATOL)


def test_exported_adapter_and_its_model_card(runs, tmp_path):
    """Without --merged: a peft adapter with the tokenizer; the card is in the Hub's format."""
    out = export_run(runs["lora"], tmp_path / "adapter")
    loaded = AutoPeftModelForSequenceClassification.from_pretrained(str(out))
    tokenizer = load_model("tiny-gpt2")[1]
    torch.testing.assert_close(
        peft_logits(loaded, tokenizer), predicted_logits(runs["lora"]), atol=PEFT_ATOL, rtol=0
    )
    card = (out / "README.md").read_text()
    header = card.split("---\n")[1]
    assert 'base_model: "tiny-gpt2"' in header and 'library_name: "peft"' in header
    assert "\nlicense:" in header and 'pipeline_tag: "text-classification"' in header
    metrics = json.loads((runs["lora"] / "metrics.json").read_text())
    assert f"{metrics['best_validation']['accuracy']:.4f}" in card
    assert "peft-course finetune --method lora --dataset synthetic-sentiment" in card


def test_the_card_command_names_only_what_differs_from_the_defaults():
    spec = RunSpec(
        "tiny-llama",
        "lora",
        ["a", "b"],
        "reviews",
        {"r": 4, "use_rslora": True, "alpha": 16.0},
        128,
        0,
        {"epochs": 5, "batch_size": 32, "progress": True, "learning_rate": 5e-3},
    )
    assert run_command(spec) == (
        "peft-course finetune --method lora --model tiny-llama --dataset reviews "
        "--max-length 128 --r 4 --rslora --epochs 5"
    )


def test_every_run_directory_has_tensorboard_events(runs):
    """TensorBoard's own reader finds the history's loss, validation score, learning rate and
    tokens/s in each run directory, at the history's steps."""
    for run in runs.values():
        assert len(event_files(run)) == 1
        history = json.loads((run / "history.json").read_text())
        scalars = read_events(run)
        for tag in ("train_loss", "val_loss", "val_accuracy", "learning_rate"):
            assert scalars[tag] == [
                (h["step"], pytest.approx(h[tag], rel=1e-6)) for h in history
            ], tag
        assert [s for s, _ in scalars["tokens_per_second"]] == [h["step"] for h in history]
        assert all(value > 0 for _, value in scalars["tokens_per_second"])


def test_events_are_written_as_the_run_trains(data, tmp_path):
    """Each validation is in the event file as soon as it ends (TensorBoard follows a run while
    it trains); an earlier run's file is removed at the first one."""
    write_events([{"step": 99, "val_loss": 9.0}], tmp_path)  # an earlier run's
    live, seen = LiveEvents(tmp_path), []

    def watch(entry):
        live(entry)
        seen.append([step for step, _ in read_events(tmp_path)["val_loss"]])

    config = TrainConfig(epochs=2, batch_size=16, learning_rate=2e-2, progress=False)
    result = finetune(data, "head", "tiny-gpt2", config, 64, on_validate=watch)
    live.close()
    steps = [h["step"] for h in result.training.history]
    assert len(steps) == 2 and seen == [steps[:1], steps]


def test_preference_histories_are_written_under_trl_names_and_replaced_on_rerun(tmp_path):
    """DPO's, the aligned losses' and instruction runs' histories go through the same writer:
    trl's tags (`rewards/margins`) kept, booleans and NaN left out, a rerun's file replacing
    the first."""
    history = [
        {"step": 2, "epoch": 0.5, "loss": 0.69, "rewards/margins": 0.0, "learning_rate": 1e-4},
        {"step": 4, "epoch": 1.0, "loss": 0.61, "rewards/margins": 0.3, "grad_norm": float("nan")},
    ]
    write_events(history, tmp_path)
    second = write_events(history[:1], tmp_path)
    assert event_files(tmp_path) == [second]
    scalars = read_events(tmp_path)
    assert set(scalars) == {"epoch", "loss", "rewards/margins", "learning_rate"}
    assert scalars["loss"] == [(2, pytest.approx(0.69))]


def test_a_run_of_release_0_1_0_still_loads_and_exports(tmp_path):
    """The committed run (run.json and weights.safetensors only) predicts, and export converts
    it to a peft adapter that gives the same logits."""
    run = shutil.copytree(FIXTURE, tmp_path / "old")
    assert not (run / "adapter_config.json").exists()
    model, tokenizer, spec = load_run(run)
    rows = predict_texts(model, tokenizer, TEXTS, spec.max_length)
    assert [sorted(r["probabilities"]) for r in rows] == [["negative", "positive"]] * 3
    out = export_run(run, tmp_path / "converted")
    loaded = AutoPeftModelForSequenceClassification.from_pretrained(str(out))
    torch.testing.assert_close(
        peft_logits(loaded, tokenizer), predicted_logits(run), atol=PEFT_ATOL, rtol=0
    )


def test_export_refuses_in_one_line(data, tmp_path, capsys):
    """A method whose weights transformers does not know (its events where --log-dir says), soft
    prompts to merge, and a directory that is no run or the run itself."""
    houlsby, logs = tmp_path / "houlsby", tmp_path / "logs"
    fast = ["--max-examples", "32", "--epochs", "1", "--max-length", "64", "--no-progress"]
    argv = ["finetune", "--method", "houlsby", *fast, "--output", houlsby, "--log-dir", logs]
    assert main([str(a) for a in argv]) == 0
    assert not (houlsby / "adapter_config.json").exists()  # the course's adapters: no peft format
    assert not event_files(houlsby) and set(read_events(logs)) >= {"train_loss", "val_accuracy"}
    assert len(event_files(logs)) == 1  # the one written as it trained, replaced by the whole
    prompts = train_run(tmp_path / "prompts", data, "prompt-tuning")
    capsys.readouterr()  # the training's output
    for argv, needle in (
        (["export", prompts, tmp_path / "o3", "--merged"], "export it without --merged"),
        (["export", str(houlsby), str(tmp_path / "o1"), "--merged"], "houlsby adds parameters"),
        (["export", str(tmp_path), str(tmp_path / "o2")], "is not a finished run"),
        (["export", str(houlsby), str(houlsby)], f"OUT '{houlsby}' holds the output of"),
    ):
        assert main([str(a) for a in argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("peft-course export: error: "), lines
        assert needle in lines[0], lines[0]
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


def test_the_docs_section_runs_as_written(tmp_path, monkeypatch, capsys):
    """docs/finetune.md's "Using your run elsewhere": its commands, then its script."""
    import runpy
    import shlex
    import subprocess
    import sys

    monkeypatch.chdir(tmp_path)
    commands = (ELSEWHERE / "commands.sh").read_text().splitlines()
    for line in commands:
        program, *argv = shlex.split(line)
        if program == "peft-course":
            assert main(argv) == 0, line
        else:
            tool = Path(sys.executable).with_name(program)
            done = subprocess.run([str(tool), *argv], capture_output=True, text=True, timeout=120)
            assert done.returncode == 0 and "tokens_per_second" in done.stdout, done.stderr
    capsys.readouterr()
    runpy.run_path(str(ELSEWHERE / "use_run.py"), run_name="__main__")
    printed = capsys.readouterr().out
    difference = float(printed.split("largest logit difference from predict:")[1].split()[0])
    assert difference <= PEFT_ATOL
    assert printed.count(": ") >= 3 and ("positive: " in printed or "negative: " in printed)
    card = (tmp_path / "exported" / "lora-reviews" / "README.md").read_text()
    assert f"```\n{commands[0]}\n```" in card  # the command that made the run, as typed
