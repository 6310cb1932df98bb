"""A fine-tuning method is one entry of `peft_course.registry.METHODS`: adding one is enough.

The entry below reuses an existing `prepare` function under a new name, so the test shows
exactly what the registry drives: `finetune --method` and its help, the docs' method table,
training and saving a run, and the run directory's reload path (`predict`).
"""

from __future__ import annotations

import pytest

from peft_course import registry
from peft_course.cli import build_parser, main
from peft_course.errors import CourseError

FAST = ["--max-examples", "40", "--epochs", "1", "--no-progress"]


@pytest.fixture
def one_more_method(monkeypatch):
    """A method `bias-free-head` added the way a chapter adds one: an entry, nothing else."""
    entry = registry.Method(
        "head (registered by a test)",
        "the classification head alone, under another name",
        "peft_course.methods.prepare_head_only",
        learning_rate=2e-2,
        demo_epochs=1,
    )
    monkeypatch.setitem(registry.METHODS, "bias-free-head", entry)
    return "bias-free-head"


def test_a_new_entry_is_a_choice_of_finetune_and_a_row_of_the_table(one_more_method, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["finetune", "--help"])
    help_text = capsys.readouterr().out
    assert one_more_method in help_text and f"{one_more_method} 0.02" in help_text
    assert f"| `{one_more_method}` | the classification head alone" in registry.method_table()


def test_a_new_entry_trains_saves_and_reloads(one_more_method, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["finetune", "--method", one_more_method, "--output", str(run), *FAST]) == 0
    assert "head (registered by a test)" in (run / "results.md").read_text()
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "a wonderful, moving film"]) == 0
    assert capsys.readouterr().out.count("\t") == 2  # label, probabilities, text


def test_options_a_method_does_not_take_are_refused(capsys):
    """`--r` with `--method head` is refused in one line, not silently ignored."""
    assert main(["finetune", "--method", "head", "--r", "4", *FAST]) == 2
    assert "method 'head' has no option(s) r: it takes none" in capsys.readouterr().err
    with pytest.raises(CourseError, match="unknown method 'lorra'"):
        registry.get_method("lorra")
