"""The Python examples the site shows, run as written (the pages include them from here).

Each example sits between `--8<--` markers; a page includes the section, so what a learner
copies from the site is what this file runs.
"""

from __future__ import annotations


def test_load_the_embedded_model():
    # --8<-- [start:load_model]
    from peft_course.models import load_model

    model, tokenizer = load_model("tiny-gpt2", task="classification", num_labels=2)
    # --8<-- [end:load_model]
    assert model.config.num_labels == 2 and tokenizer.pad_token is not None


def test_fine_tune_from_a_script(capsys):
    # --8<-- [start:finetune]
    from peft_course.data import load_classification_data
    from peft_course.finetune import finetune
    from peft_course.training import TrainConfig

    data = load_classification_data("synthetic-sentiment", max_examples=200)
    result = finetune(
        data,
        method="head",
        model_name="tiny-gpt2",
        config=TrainConfig(epochs=2, learning_rate=2e-2),
    )
    print(result.untrained["accuracy"], result.best["accuracy"])
    # --8<-- [end:finetune]
    untrained, best = map(float, capsys.readouterr().out.split()[-2:])
    assert 0 <= untrained <= 1 and 0 <= best <= 1
