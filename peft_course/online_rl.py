"""Online RL on a checkable reward: GRPO through TRL on the instruction chapter's generated tasks.

Preference optimisation learns from pairs someone ranked once. Online RL samples its own
completions and scores them as it goes. When the answer can be checked - the generated tasks
compute theirs, so exact match is the reward - no reward model is needed. GRPO (Group Relative
Policy Optimization) samples a *group* of `G` completions per prompt, scores each, and gives
completion `i` the advantage

    A_i = (r_i - mean(r_1..r_G)) / std(r_1..r_G),

its reward relative to its own group: no learned critic (value model) as in PPO, the group's
mean is the baseline. The policy gradient raises the log-probability of completions with
`A_i > 0` and lowers the others, clipped as PPO does, minus `beta` times an estimate of the KL
divergence to the frozen start (the reference), which keeps the policy near what it knew. A
group whose completions all get the same reward has `A_i = 0` for all: no signal, which is why
the tasks must be answered right *sometimes* (exact match above 0 but far from 1).

The start is the instruction-tuned tiny-gpt2 (`instruct.instruct_tune`, full fine-tuning),
trained once and cached. A reward that only checks the answer's *format* (`format_reward`) can
be gamed: a wrong answer in the right shape earns it in full, and what the policy learns from
it is shown beside the exact-match run.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from peft_course.errors import CourseError, check_int
from peft_course.files import build_directory_once, write_metrics_and_plot
from peft_course.instruct import (
    TASKS,
    Example,
    answer,
    exact_match,
    generated_instructions,
    instruct_tune,
    normalize,
    prompt_text,
)
from peft_course.models import load_model, load_tokenizer
from peft_course.plots import plt, save_figure
from peft_course.preference import machine_bf16
from peft_course.settings import EMBEDDED_MODEL, GRPO, INSTRUCT, GRPOSettings
from peft_course.tiny_gpt2 import cache_root
from peft_course.training import TrainConfig


class OnlineRLError(CourseError):
    """A reward, a task or a setting that the GRPO run cannot use."""


# --8<-- [start:rewards]
# What an answer of each generated task looks like, whether or not it is right.
FORMATS = {
    "sentiment": r"positive|negative",
    "nth word": r"[a-z]+",
    "add": r"\d+",
    "reverse": r"[a-z]+ [a-z]+ [a-z]+",
    "sort": r"\d \d \d",
}


def exact_match_reward(completions: list[str], answer: list[str], **_: Any) -> list[float]:
    """1 for a completion that is the computed answer (`instruct.exact_match`), else 0.

    TRL calls a reward function with the completions and every other column of the dataset
    (here `answer` and `task`) as keyword lists, one entry per completion.

    Args:
        completions: the sampled completions (the text after the prompt).
        answer: the reference answer of each completion's prompt.
    """
    return [float(exact_match(c, a)) for c, a in zip(completions, answer, strict=True)]


def format_reward(completions: list[str], task: list[str], **_: Any) -> list[float]:
    """1 for a completion shaped like an answer of its task (`FORMATS`), right or wrong.

    Gameable: "negative" for a positive review, or "9 9 9" for three numbers to sort, earns
    the whole reward.

    Args:
        completions: the sampled completions.
        task: the generated task of each completion's prompt.
    """
    return [
        float(re.fullmatch(FORMATS[t], normalize(c)) is not None)
        for c, t in zip(completions, task, strict=True)
    ]


# --8<-- [end:rewards]

REWARDS: dict[str, Callable[..., list[float]]] = {
    "exact": exact_match_reward,
    "format": format_reward,
}


def check_reward(name: str) -> str:
    """One of `REWARDS`, or a one-line `OnlineRLError` that lists them."""
    if name not in REWARDS:
        raise OnlineRLError(f"unknown reward {name!r} for GRPO; choose one of {', '.join(REWARDS)}")
    return name


def check_settings(settings: GRPOSettings) -> GRPOSettings:
    """The settings, checked before any model loads: known tasks, positive sizes, a group.

    Raises:
        OnlineRLError: on an unknown task, or fewer than 2 generations (a group of one has no
            relative advantage).
        CourseError: on a size below 1.
    """
    unknown = sorted((set(settings.tasks) | set(settings.start_tasks or ())) - set(TASKS))
    if unknown or not settings.tasks:
        raise OnlineRLError(
            f"unknown or no generated task(s) {unknown}; choose from {', '.join(TASKS)}"
        )
    sizes = ("start_examples", "start_epochs", "n_test", "steps", "prompts_per_step", "samples")
    for name in (*sizes, "max_completion_length"):
        check_int(name, getattr(settings, name))
    if settings.num_generations < 2:
        raise OnlineRLError(
            f"num_generations must be at least 2 (GRPO compares completions within a group), "
            f"got {settings.num_generations}"
        )
    return settings


def task_splits(settings: GRPOSettings) -> dict[str, list[Example]]:
    """The generated examples of `settings.tasks`, split as the start's were.

    GRPO samples answers to the start's training prompts (their references unused but to
    score); `test` is held out from both.
    """
    splits = generated_instructions(settings.start_examples, INSTRUCT.n_validation, settings.n_test)
    return {name: [e for e in rows if e.task in settings.tasks] for name, rows in splits.items()}


# --8<-- [start:start]
def instruction_tuned_start(settings: GRPOSettings = GRPO) -> Path:
    """The directory of the instruction-tuned tiny-gpt2 GRPO starts from, trained once and cached.

    Full fine-tuning (`instruct.instruct_tune`) on the chapter's generated tasks, shorter than
    the chapter's run so that some answers are still wrong; saved with `save_pretrained`
    (safetensors) under the course cache, keyed by its recipe.

    Args:
        settings: `start_tasks`, `start_examples` and `start_epochs` set the recipe.
    """
    tasks = settings.start_tasks or tuple(TASKS)
    recipe = {"examples": settings.start_examples, "epochs": settings.start_epochs, "tasks": tasks}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]

    def build(scratch: Path) -> None:
        splits = generated_instructions(settings.start_examples, INSTRUCT.n_validation, 50)
        splits = {name: [e for e in rows if e.task in tasks] for name, rows in splits.items()}
        config = TrainConfig(
            epochs=settings.start_epochs,
            learning_rate=INSTRUCT.learning_rates["full"],
            batch_size=INSTRUCT.batch_size,
            progress=False,
        )
        result = instruct_tune(splits, "full", config=config)
        result.model.save_pretrained(scratch, safe_serialization=True)
        load_tokenizer(EMBEDDED_MODEL).save_pretrained(scratch)

    return build_directory_once(cache_root() / f"grpo-start-{key}", build)


# --8<-- [end:start]


def held_out(
    model: torch.nn.Module, tokenizer: Any, examples: Sequence[Example], settings: GRPOSettings
) -> dict[str, Any]:
    """Greedy exact match and format rate, and the mean rewards of sampled completions.

    The sampled means are what GRPO raises: the expected reward of the policy at the training
    temperature, `settings.samples` completions per prompt (seeded, so the same for every run).

    Args:
        model: the policy.
        tokenizer: its tokenizer.
        examples: the held-out examples.
        settings: `max_completion_length`, `temperature` and `samples`.

    Returns:
        `exact match`, `format` (greedy), `exact match reward`, `format reward` (sampled means),
        `greedy` and `sampled` answers (the first sample of each prompt).
    """
    examples = list(examples)
    tasks, answers = [e.task for e in examples], [e.response for e in examples]
    greedy = answer(model, tokenizer, examples, max_new_tokens=settings.max_completion_length)
    repeated = examples * settings.samples
    sampled = answer(
        model,
        tokenizer,
        repeated,
        max_new_tokens=settings.max_completion_length,
        do_sample=True,
        temperature=settings.temperature,
        top_k=0,
        seed=0,
    )
    n = settings.samples
    return {
        "exact match": sum(exact_match_reward(greedy, answers)) / len(examples),
        "format": sum(format_reward(greedy, tasks)) / len(examples),
        "exact match reward": sum(exact_match_reward(sampled, answers * n)) / len(repeated),
        "format reward": sum(format_reward(sampled, tasks * n)) / len(repeated),
        "greedy": greedy,
        "sampled": sampled[: len(examples)],
    }


# --8<-- [start:config]
def grpo_config(settings: GRPOSettings, output_dir: str | Path, reward: str, seed: int) -> Any:
    """TRL's `GRPOConfig` for the run: a group of `num_generations` per prompt, short answers.

    Both rewards are computed on every completion (TRL logs each), but only `reward` counts:
    the other's weight is 0, so the format-hacked run still shows its exact match.

    Args:
        settings: the run's sizes and hyper-parameters.
        output_dir: TRL's output directory (nothing is saved there).
        reward: the reward trained on, a key of `REWARDS`.
        seed: seeds sampling and training.
    """
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(output_dir),
        max_steps=settings.steps,
        learning_rate=settings.learning_rate,
        beta=settings.beta,  # TRL's default 0 loads no reference and logs no KL
        num_generations=settings.num_generations,
        per_device_train_batch_size=settings.prompts_per_step * settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        reward_weights=[float(name == reward) for name in REWARDS],
        disable_dropout=True,  # policy and reference score the same completion alike
        use_vllm=False,
        bf16=machine_bf16(),
        gradient_checkpointing=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        push_to_hub=False,
        seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )


# --8<-- [end:config]


@dataclass
class GRPORun:
    """One GRPO run from the instruction-tuned start: held-out figures before and after.

    Attributes:
        reward: the reward trained on (`exact` or `format`).
        before: `held_out` at the start.
        after: `held_out` after training.
        history: per logged step: `step`, `reward` (the trained one), `exact match reward`,
            `format reward` (means over the step's completions), `kl`, `completion length`.
        steps: optimizer steps taken.
        seconds: wall-clock time of `trainer.train()`.
        examples: the held-out examples.
        settings: the run's settings.
        seed: the run's seed.
        model: the trained policy.
    """

    reward: str
    before: dict[str, Any]
    after: dict[str, Any]
    history: list[dict[str, float]]
    steps: int
    seconds: float
    examples: list[Example]
    settings: GRPOSettings
    seed: int
    model: Any = field(repr=False, default=None)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-friendly part (the model left out)."""
        return {
            "reward": self.reward,
            "trainer": "GRPOTrainer",
            "settings": asdict(self.settings),
            "seed": self.seed,
            "before": self.before,
            "after": self.after,
            "history": self.history,
            "steps": self.steps,
            "seconds": round(self.seconds, 2),
        }


def history_rows(log_history: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """The logged steps of TRL's `log_history`, with the course's names."""
    names = {
        "reward": "reward",
        f"rewards/{exact_match_reward.__name__}/mean": "exact match reward",
        f"rewards/{format_reward.__name__}/mean": "format reward",
        "kl": "kl",
        "completions/mean_length": "completion length",
    }
    return [
        {"step": entry["step"], **{new: float(entry[old]) for old, new in names.items()}}
        for entry in log_history
        if "reward" in entry
    ]


# --8<-- [start:train_grpo]
def train_grpo(reward: str = "exact", settings: GRPOSettings = GRPO, seed: int = 0) -> GRPORun:
    """GRPO (`trl.GRPOTrainer`) from the instruction-tuned start on `settings.tasks`.

    Every weight trains; the reference is the start, which TRL loads again from the start's
    directory (the policy's `name_or_path`) for the KL term.

    Args:
        reward: `exact` (the computed answer) or `format` (the answer's shape only).
        settings: the tasks, sizes and hyper-parameters.
        seed: seeds sampling and training (the start is the same for every seed).

    Raises:
        CourseError: on an unknown reward or task, or a bad size (`check_settings`), before any
            model loads.
    """
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOTrainer

    reward, settings = check_reward(reward), check_settings(settings)
    splits = task_splits(settings)
    start = instruction_tuned_start(settings)
    policy, tokenizer = load_model(str(start), task="causal-lm")
    before = held_out(policy, tokenizer, splits["test"], settings)
    train = splits["train"]
    prompts = Dataset.from_dict(
        {
            "prompt": [prompt_text(e.instruction, e.context) for e in train],
            "answer": [e.response for e in train],
            "task": [e.task for e in train],
        }
    )
    with tempfile.TemporaryDirectory() as scratch:
        trainer = GRPOTrainer(
            model=policy,
            reward_funcs=list(REWARDS.values()),
            args=grpo_config(settings, scratch, reward, seed),
            train_dataset=prompts,
            processing_class=tokenizer,
        )
        trainer.remove_callback(PrinterCallback)  # the before/after summary is printed instead
        began = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - began
    after = held_out(trainer.model, tokenizer, splits["test"], settings)
    return GRPORun(
        reward=reward,
        before=before,
        after=after,
        history=history_rows(trainer.state.log_history),
        steps=trainer.state.global_step,
        seconds=seconds,
        examples=splits["test"],
        settings=settings,
        seed=seed,
        model=trainer.model,
    )


# --8<-- [end:train_grpo]


def start_rows(settings: GRPOSettings = GRPO) -> list[dict[str, str]]:
    """Greedy exact match of the start on each generated task's held-out examples.

    Why `settings.tasks`: GRPO learns only where a group's completions differ in reward, so a
    task the start never (or always) answers right gives it nothing.
    """
    start = instruction_tuned_start(settings)
    model, tokenizer = load_model(str(start), task="causal-lm")
    test = generated_instructions(settings.start_examples, INSTRUCT.n_validation, settings.n_test)
    examples = test["test"]
    hits = exact_match_reward(
        answer(model, tokenizer, examples, max_new_tokens=settings.max_completion_length),
        [e.response for e in examples],
    )
    row = {"model": "instruction-tuned start"}
    for task in TASKS:
        scored = [h for h, e in zip(hits, examples) if e.task == task]
        row[task] = f"{sum(scored) / len(scored):.3f}"
    return [row]


def mean_of(history: Sequence[dict[str, float]], key: str) -> float:
    """The mean of `key` over the logged steps `history` (0 for none)."""
    return sum(h[key] for h in history) / max(len(history), 1)


def grpo_rows(runs: Sequence[GRPORun]) -> list[dict[str, str]]:
    """The comparison table: one row per run, held-out figures start -> after.

    Args:
        runs: finished runs (the exact-match one and the format-hacked one).
    """

    def change(run: GRPORun, key: str) -> str:
        return f"{run.before[key]:.3f} -> {run.after[key]:.3f}"

    return [
        {
            "reward trained on": run.reward,
            "exact match (greedy)": change(run, "exact match"),
            "exact-match reward (sampled)": change(run, "exact match reward"),
            "format reward (sampled)": change(run, "format reward"),
            "KL (last 10 steps)": f"{mean_of(run.history[-10:], 'kl'):.3f}",
            "steps": str(run.steps),
            "seconds": f"{run.seconds:.0f}",
        }
        for run in runs
    ]


def sample_rows(run: GRPORun, n: int = 4) -> list[dict[str, str]]:
    """The first `n` held-out prompts: the reference, a sampled completion before and after.

    Args:
        run: a finished run.
        n: the most rows.
    """
    return [
        {
            "task": e.task,
            "context": e.context,
            "reference": e.response,
            "start (sampled)": run.before["sampled"][i] or "(nothing)",
            f"after {run.reward} GRPO (sampled)": run.after["sampled"][i] or "(nothing)",
        }
        for i, e in enumerate(run.examples[:n])
    ]


def moving_mean(values: Sequence[float], window: int = 10) -> list[float]:
    """The mean of each value and the `window - 1` before it (fewer at the start)."""
    return [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]


def plot_grpo(runs: Sequence[GRPORun], path: str | Path, title: str = "") -> Path:
    """Mean exact-match and format reward of the training completions, and the KL, per step.

    Each curve is a 10-step moving mean: a step scores only `prompts_per_step` prompts.

    Args:
        runs: finished runs.
        path: the image file to write.
        title: the figure's title.

    Returns:
        The path written.
    """
    figure, (rewards, kl) = plt.subplots(1, 2, figsize=(10, 3.8))
    for run, colour in zip(runs, ("tab:blue", "tab:red", "tab:green", "tab:purple")):
        steps = [h["step"] for h in run.history]
        for key, style in (("exact match reward", "-"), ("format reward", "--")):
            values = moving_mean([h[key] for h in run.history])
            label = f"{key.removesuffix(' reward')} ({run.reward} run)"
            rewards.plot(steps, values, style, color=colour, label=label)
        kl.plot(steps, moving_mean([h["kl"] for h in run.history]), color=colour, label=run.reward)
    rewards.set(xlabel="step", ylabel="mean reward of the step's completions", ylim=(0, 1.05))
    kl.set(xlabel="step", ylabel="KL to the start (per token)")
    rewards.legend(fontsize=8)
    kl.legend(fontsize=8, title="reward trained on", title_fontsize=8)
    return save_figure(figure, path, title)


def save_grpo_run(run: GRPORun, output: str | Path, title: str = "") -> tuple[Path, Path]:
    """Write `metrics.json` (settings, before/after, history) and `rewards.png`, as DPO runs do.

    Args:
        run: the finished run.
        output: the directory written into.
        title: the plot's title.

    Returns:
        `(metrics.json, rewards.png)` paths.
    """
    return write_metrics_and_plot(output, run.as_dict(), lambda path: plot_grpo([run], path, title))
