"""GRPO through TRL on the generated tasks: the rewards, a short run that raises the reward, and
the one-line errors of `train_grpo` and `peft-course align --grpo`."""

from __future__ import annotations

from dataclasses import replace

import pytest

from peft_course.cli import main
from peft_course.command_options import GRPO_REWARDS
from peft_course.errors import CourseError
from peft_course.online_rl import (
    REWARDS,
    exact_match_reward,
    format_reward,
    train_grpo,
)
from peft_course.settings import EMBEDDED_MODEL, GRPO


def test_exact_match_reward_is_one_only_for_the_computed_answer():
    completions = [" positive", "Positive.", " negative", " 1 2 5", "1 2 5 7"]
    answers = ["positive", "positive", "positive", "1 2 5", "1 2 5"]
    assert exact_match_reward(completions, answers) == [1.0, 1.0, 0.0, 1.0, 0.0]


def test_the_format_reward_is_gamed_by_a_wrong_answer():
    completions = [" negative", " 9 9 9", " cow", " 12", " red", " 1 2"]
    tasks = ["sentiment", "sort", "nth word", "add", "reverse", "sort"]
    answers = ["positive", "1 2 5", "fox", "30", "red cat owl", "1 2 5"]
    assert format_reward(completions, tasks) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert exact_match_reward(completions, answers) == [0.0] * 6  # all wrong, most "well formed"


@pytest.mark.parametrize(
    "reward, settings, needle",
    [
        ("length", GRPO, "unknown reward 'length' for GRPO; choose one of exact, format"),
        ("exact", replace(GRPO, tasks=("translate",)), "unknown or no generated task(s)"),
        ("exact", replace(GRPO, num_generations=1), "num_generations must be at least 2"),
        ("exact", replace(GRPO, steps=0), "steps"),
    ],
    ids=["reward", "task", "group of one", "no steps"],
)
def test_bad_grpo_input_is_one_line(reward, settings, needle):
    with pytest.raises(CourseError) as e:
        train_grpo(reward, settings)
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--grpo", "--loss", "ipo"], ("--grpo", "--loss does not apply")),
        (["--grpo", "--reward-model"], ("--grpo", "--reward-model does not apply")),
        (["--grpo", "--beta=0.2", "--no-lora"], ("--beta, --no-lora do not apply",)),
        (["--grpo", "--learning-rate", "1e-3"], ("--learning-rate does not apply",)),
        (["--grpo", "--model", EMBEDDED_MODEL], ("--model does not apply",)),  # even the default
        (["--grpo", "--grpo-reward", "length"], ("--grpo-reward", "unknown GRPO reward 'length'")),
        (["--grpo", "--grpo-steps", "0"], ("--grpo-steps",)),
    ],
    ids=[
        "with a loss",
        "with a reward model",
        "with DPO's options",
        "with a learning rate",
        "another model",
        "unknown reward",
        "no steps",
    ],
)
def test_align_grpo_bad_options_are_one_line(tmp_path, capsys, argv, needles):
    code = main(["align", *argv, "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("peft-course align: error: "), lines[0]
    assert all(needle in lines[0] for needle in needles), lines[0]
    assert not (tmp_path / "out").exists()


# A start trained on sentiment alone (160 examples, 4 epochs: about 9 s once, then cached) and
# 20 GRPO steps of 8 prompts x 4 completions (about 6 s).
SMALL = replace(
    GRPO,
    tasks=("sentiment",),
    start_tasks=("sentiment",),
    start_examples=800,
    start_epochs=4,
    n_test=500,
    steps=20,
    learning_rate=3e-4,
)


def test_grpo_raises_the_mean_exact_match_reward_above_the_start():
    """Measured on seeds 0, 1, 2: the held-out mean reward of sampled answers 0.547 -> 0.637,
    0.620, 0.615 (greedy exact match 0.71 -> 0.63, 0.65, 0.70: GRPO sharpens what the start
    samples, it need not change its first choice). The bar of +0.03 is under half the smallest
    rise."""
    run = train_grpo("exact", SMALL, seed=0)
    assert run.after["exact match reward"] > run.before["exact match reward"] + 0.03
    assert run.steps == 20 and len(run.history) == 20
    assert all(h["kl"] >= 0 for h in run.history) and run.history[-1]["kl"] > 0
    assert run.history[0]["reward"] == run.history[0]["exact match reward"]


def test_the_commands_rewards_are_the_modules():
    assert GRPO_REWARDS == tuple(REWARDS)
    assert list(REWARDS.values()) == [exact_match_reward, format_reward]
