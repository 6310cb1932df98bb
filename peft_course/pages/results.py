"""The results pages measured on the embedded tiny-gpt2, one group per chapter.

    python -m peft_course.pages                 # every group (about 17 CPU minutes)
    python -m peft_course.pages demo ablation   # only some

A page is the Markdown a chapter function writes, followed by the line `stamp` adds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from peft_course.ablation import (
    QUICK,
    SweepSettings,
    prompt_sweep,
    rank_sweep,
    run_sweep,
    seed_project_rows,
    write_sweep,
)
from peft_course import dora, gpt2, ia3
from peft_course.compare import compare, plot_family, spread_rows, write_compare
from peft_course.counting import family_table
from peft_course.data import ClassificationData, load_classification_data
from peft_course.decoding import gpt2_generation_rows
from peft_course.demo import (
    ablation_results,
    demo_rows,
    real_model_rows,
    tuning_results,
    tuning_rows,
)
from peft_course.derivations import checks_table
from peft_course.dpo import (
    DPORunConfig,
    before_after_table,
    compare_with_trl,
    film_preferences,
    plot_rewards,
    train_dpo,
)
from peft_course.errors import CourseError
from peft_course.files import atomic_write_text
from peft_course.finetune import finetune, lora_training_rows
from peft_course.instruct import generated_instructions, instruct_tune, score_cells
from peft_course.lora import equivalence_rows
from peft_course.metrics import confusion
from peft_course.models import load_tokenizer
from peft_course.pages.stamp import COMMAND, IMAGES, RESULTS, stamp
from peft_course.plots import plot_confusion
from peft_course.preference import (
    LossSettings,
    compare_losses_with_trl,
    plot_histories,
    reward_model_rows,
    side_by_side_rows,
    train_preference,
    train_reward_model,
    train_side_by_side,
)
from peft_course.online_rl import grpo_rows, plot_grpo, sample_rows, start_rows, train_grpo
from peft_course.preference_derivations import checks_table as checks_table_of_losses
from peft_course.preference_derivations import plot_margin_losses
from peft_course.prompting import prompt_gallery, results_page
from peft_course.qlora import QLORA_LEARNING_RATE, qlora_footprint_rows, theoretical_rows
from peft_course.settings import COMPARE, GRPO, INSTRUCT, LORA
from peft_course.system import provenance
from peft_course.smollm2 import is_installed
from peft_course.tables import COLUMNS, confusion_rows, markdown_table, result_row, write_table
from peft_course.training import TrainConfig
from peft_course.settings import EMBEDDED_MODEL

# The groups whose pages name their own command (`peft-course demo`, `peft-course ablate`) or
# add to the line (compare: the run's wall time).
SELF_STAMPED = ("demo", "ablation", "compare")


def demo_pages(results: Path = RESULTS, images: Path = IMAGES) -> list[Path]:
    """`demo.md` and `ablation-{rank,alpha,prompt}.md` (+ plots): what `peft-course demo` prints.

    Args:
        results: the directory the pages are written to.
        images: the directory the ablation plots go under (`ablation/`).

    Returns:
        The pages written, each stamped (`demo-real-model.md` too when SmolLM2 is installed).
    """
    data = load_classification_data("synthetic-sentiment")
    pages = [write_table(demo_rows(data, progress=False), results, "demo")]
    quick = load_classification_data("synthetic-sentiment", max_examples=QUICK["max_examples"])
    scratch = results / ".ablation"
    for result in ablation_results(quick, output=scratch, progress=False):
        name = result.sweep.name
        shutil.move(scratch / f"{name}.md", results / f"ablation-{name}.md")
        (images / "ablation").mkdir(parents=True, exist_ok=True)
        shutil.move(scratch / f"{name}-val-loss.png", images / "ablation" / f"{name}-val-loss.png")
        pages.append(results / f"ablation-{name}.md")
    shutil.rmtree(scratch, ignore_errors=True)
    (results / "demo.csv").unlink(missing_ok=True)
    if is_installed():
        pages.append(
            atomic_write_text(results / "demo-real-model.md", markdown_table(real_model_rows()))
        )
    return [stamp(page, "peft-course demo") for page in pages] + [
        stamp(seed_project_page(results), f"{COMMAND} demo")
    ]


def seed_project_page(results: Path = RESULTS) -> Path:
    """`ablation-seed-project.md`: the seed project's figures (`ablation.SEED`) as one table.

    Args:
        results: the directory the page is written to.
    """
    return atomic_write_text(
        results / "ablation-seed-project.md", markdown_table(seed_project_rows())
    )


def ablation_pages(results: Path = RESULTS) -> list[Path]:
    """`ablation-seeds-rank.md` and `ablation-seeds-prompt.md`: the quick tables over seeds 0, 1, 2.

    The spread across seeds says which differences between cells are effects: a gap between
    two cells larger than both cells' standard deviations.

    Args:
        results: the directory the pages are written to.

    Returns:
        The two pages, stamped.
    """
    scratch = results / ".cells"
    quick = load_classification_data("synthetic-sentiment", max_examples=QUICK["max_examples"])
    settings = SweepSettings(epochs=QUICK["epochs"], progress=False)
    pages = []
    for sweep in (rank_sweep(), prompt_sweep()):
        result = run_sweep(sweep, quick, settings, (0, 1, 2), scratch)
        stem = f"ablation-seeds-{sweep.name}"
        written = write_sweep(result, scratch, stem)
        shutil.move(written[0], results / f"{stem}.md")
        pages.append(
            stamp(results / f"{stem}.md", f"peft-course ablate {sweep.name} --quick --seeds 0 1 2")
        )
    shutil.rmtree(scratch, ignore_errors=True)
    return pages


def prompting_pages(results: Path = RESULTS) -> list[Path]:
    """`prompting.md` (`prompting.results_page`) and `prompting-prompts.md` (the gallery).

    Args:
        results: the directory the pages are written to.
    """
    gallery = atomic_write_text(results / "prompting-prompts.md", prompt_gallery())
    return [atomic_write_text(results / "prompting.md", results_page()), gallery]


def lora_pages(results: Path = RESULTS) -> list[Path]:
    """The LoRA chapter's equality-with-peft table and its training table (no seconds).

    Args:
        results: the directory the pages are written to.
    """
    rows = lora_training_rows(load_classification_data("synthetic-sentiment"))
    return [
        atomic_write_text(results / "lora-equivalence.md", markdown_table(equivalence_rows())),
        atomic_write_text(
            results / "lora-training.md",
            markdown_table(rows, tuple(c for c in COLUMNS if c != "seconds")),
        ),
    ]


def qlora_accuracy_rows(
    data: ClassificationData,
    model_name: str = EMBEDDED_MODEL,
    seeds: tuple[int, ...] = (0,),
    epochs: int = 4,
    learning_rate: float = QLORA_LEARNING_RATE,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    progress: bool = False,
) -> list[dict[str, str]]:
    """Test scores (best-validation checkpoint) of peft LoRA and QLoRA, same settings, per seed.

    Args:
        data: the classification data.
        model_name: the model both methods start from.
        seeds: the seeds, two rows (LoRA, QLoRA) each.
        epochs: training epochs.
        learning_rate: the learning rate of both methods.
        r: LoRA rank.
        alpha: LoRA scale numerator (the update is scaled by alpha/r).
        progress: show progress bars.
    """
    rows = []
    for seed in seeds:
        config = TrainConfig(
            epochs=epochs, learning_rate=learning_rate, seed=seed, progress=progress
        )
        lora = finetune(data, "lora", model_name, config, r=r, alpha=alpha)
        qlora = finetune(data, "qlora", model_name, config, r=r, alpha=alpha)
        for label, result in (("LoRA (peft)", lora), ("QLoRA (NF4)", qlora)):
            row = result_row(label, result.trainable, result.best, result.training.seconds)
            rows.append({"seed": str(seed), **row})
    return rows


def qlora_pages(
    results: Path = RESULTS, seeds: tuple[int, ...] = (0, 1, 2), progress: bool = False
) -> list[Path]:
    """The chapter's tables: `qlora-theory.md`, `qlora-footprint.md` and `qlora-accuracy.md`.

    The accuracy table leaves out the seconds, which depend on the machine and its load.

    Args:
        results: the directory the pages are written to.
        seeds: the seeds of the accuracy table.
        progress: show progress bars.
    """
    data = load_classification_data("synthetic-sentiment")
    accuracy = [
        {k: v for k, v in row.items() if k != "seconds"}
        for row in qlora_accuracy_rows(data, seeds=seeds, progress=progress)
    ]
    tables = {
        "qlora-theory.md": theoretical_rows(),
        "qlora-footprint.md": qlora_footprint_rows(),
        "qlora-accuracy.md": accuracy,
    }
    return [
        atomic_write_text(results / file, markdown_table(rows)) for file, rows in tables.items()
    ]


FIGURE_RUNS = {  # name: (prefer, lora, learning rate)
    "lora": ("positive", True, 1e-2),
    "full": ("positive", False, 1e-3),
    "lora-negative": ("negative", True, 1e-2),
}


def dpo_pages(images: Path = IMAGES, seed: int = 0) -> list[Path]:
    """The DPO chapter's tables and figures, under `images/dpo`.

    Writes the derivation checks, the by-hand vs TRL comparison, and for each run in
    `FIGURE_RUNS` the reward curves (`rewards-<name>.png`) and a before/after table.

    Args:
        images: the directory the figures go under (`dpo/`).
        seed: seeds the models and the pairs of every run.

    Returns:
        The Markdown tables written (the plots beside them are not listed).
    """
    output = images / "dpo"
    output.mkdir(parents=True, exist_ok=True)
    pages = [
        atomic_write_text(output / "checks.md", checks_table() + "\n"),
        atomic_write_text(output / "trl-equality.md", markdown_table(compare_with_trl(seed=seed))),
    ]
    for name, (prefer, lora, learning_rate) in FIGURE_RUNS.items():
        config = DPORunConfig(lora=lora, seed=seed, learning_rate=learning_rate)
        run = train_dpo(film_preferences(seed=seed, prefer=prefer), config=config)
        title = f"DPO on film pairs, prefer {prefer}, {'LoRA' if lora else 'full'}"
        plot_rewards(run.history, output / f"rewards-{name}.png", title)
        pages.append(
            atomic_write_text(output / f"before-after-{name}.md", before_after_table(run) + "\n")
        )
    return pages


def gpt2_pages(results: Path = RESULTS) -> list[Path]:
    """The GPT-2 chapter's tables: parity with transformers, LoRA counts,
    generations on tiny-gpt2.

    Args:
        results: the directory the pages are written to.
    """
    model, tokenizer = gpt2.from_pretrained(EMBEDDED_MODEL).eval(), load_tokenizer(EMBEDDED_MODEL)
    tables = {
        "gpt2-parity": gpt2.gpt2_parity_rows(),
        "gpt2-count": gpt2.gpt2_count_rows(),
        "gpt2-generation": gpt2_generation_rows(model, tokenizer),
    }
    return [
        atomic_write_text(results / f"{name}.md", markdown_table(rows))
        for name, rows in tables.items()
    ]


def instruct_pages(results: Path = RESULTS, images: Path = IMAGES) -> list[Path]:
    """The instruction-tuning chapter's tables on tiny-gpt2,
    and entailment's and six classes' results.

    About five minutes on 2 CPU cores: three instruction-tuning runs (LoRA, LoRA with the tied
    embedding trained too, full), then full fine-tuning on the generated entailment pairs and the
    six generated emotions (`demo.tuning_results`, which also makes the demo's table).

    Args:
        results: the directory the pages are written to.
        images: the directory the emotion confusion plot goes under (`instruct/`).
    """
    splits = generated_instructions()
    runs = {}
    for label, method, embeddings in (
        ("LoRA", "lora", False),
        ("LoRA + embedding", "lora", True),
        ("full fine-tuning", "full", False),
    ):
        config = TrainConfig(
            epochs=INSTRUCT.epochs, learning_rate=INSTRUCT.learning_rates[method], progress=False
        )
        runs[label] = instruct_tune(splits, method, config=config, train_embeddings=embeddings)
    rows = [{"model": "untrained", "trainable params": "0", **score_cells(runs["LoRA"].untrained)}]
    rows += [
        {"model": label, "trainable params": f"{run.trainable:,}", **score_cells(run.best)}
        for label, run in runs.items()
    ]
    pages = [
        atomic_write_text(results / "instruct-tiny.md", markdown_table(rows)),
        atomic_write_text(
            results / "instruct-answers.md", markdown_table(runs["full fine-tuning"].rows())
        ),
    ]
    tuning = tuning_results(
        progress=False, instructions=runs["full fine-tuning"]
    )  # the same full run
    pages.append(atomic_write_text(results / "demo-tuning.md", markdown_table(tuning_rows(tuning))))
    pair, result = tuning.classifiers["synthetic-entailment"]
    pages.append(
        atomic_write_text(
            results / "entailment-confusion.md",
            markdown_table(
                confusion_rows(
                    confusion(pair.splits["test"]["label"], result.predictions, 2), pair.label_names
                )
            ),
        )
    )
    six, result = tuning.classifiers["synthetic-emotion"]
    (images / "instruct").mkdir(parents=True, exist_ok=True)
    plot_confusion(
        confusion(six.splits["test"]["label"], result.predictions, 6),
        six.label_names,
        images / "instruct" / "emotion-confusion.png",
        "full fine-tuning on synthetic-emotion",
    )
    pages.append(
        atomic_write_text(
            results / "emotion.md",
            markdown_table(
                [
                    result_row("untrained", 0, result.untrained, 0.0),
                    result_row(
                        "full fine-tuning", result.trainable, result.best, result.training.seconds
                    ),
                ]
            ),
        )
    )
    return pages


def family_pages(results: Path = RESULTS) -> list[Path]:
    """`ia3-equivalence.md` and `dora-equivalence.md`: the PEFT family page's two methods written
    from scratch against peft's layers on the same weights (tiny-gpt2's Conv1D, a Llama's
    nn.Linear)."""
    return [
        atomic_write_text(results / f"{name}-equivalence.md", markdown_table(rows()))
        for name, rows in (("ia3", ia3.equivalence_rows), ("dora", dora.equivalence_rows))
    ]


def counting_pages(results: Path = RESULTS) -> list[Path]:
    """`peft-family-count.md`: what every fine-tuning method trains on GPT-2 small and SmolLM2,
    the counting chapter's formula beside each count (`counting.family_table`)."""
    return [atomic_write_text(results / "peft-family-count.md", family_table() + "\n")]


def compare_pages(images: Path = IMAGES, work: Path = Path("runs/compare-docs")) -> list[Path]:
    """The PEFT family page's comparison, under `images/peft-family`: every method, budget and
    seed on the embedded default (its first `COMPARE.docs_examples` rows a split), the spread
    table and the families' figure; the cells are kept in `work` for reruns.

    The tables end with their own provenance line, which adds the run's wall time.
    """
    directory = images / "peft-family"
    directory.mkdir(parents=True, exist_ok=True)
    data = load_classification_data("synthetic-sentiment", max_examples=COMPARE.docs_examples)
    result = compare(data, output=work)
    every = [m for runs in [*result.search.values(), *result.runs.values()] for m in runs]
    unique = {(json.dumps(m["cell"]), m["rate"], m["seed"]): m for m in every}  # a run once
    loops = sum(m["seconds"] for m in unique.values())
    note = (
        provenance(f"{COMMAND} compare")
        + f" Wall time of this run: {result.seconds / 60:.1f} min ({len(result.trained)} runs "
        f"trained, {len(result.reused)} reused); the training loops of all the runs: "
        f"{loops / 60:.1f} min."
    )
    paths = write_compare(result, directory, note)
    paths.append(write_table(spread_rows(result), directory, "spread", note))
    paths.append(plot_family(directory / "families.png"))
    return paths


def preference_pages(images: Path = IMAGES, n_train: int = 64, n_test: int = 32) -> list[Path]:
    """The Beyond DPO chapter's tables and figures, under `images/preference`: the sympy
    checks, the margin-loss figure, TRL's numbers, the side-by-side runs and their histories,
    ORPO's lambda, the reward model beside DPO, and GRPO (`grpo_pages`).

    8 LoRA steps per loss on tiny-gpt2, film pairs that prefer the pan (the pretrained model
    ranks most of them the other way), learning rate 1e-2, beta 0.1, `LossSettings()`.

    Args:
        images: the figures' directory.
        n_train: generated training pairs.
        n_test: generated held-out pairs.
    """
    directory = images / "preference"
    directory.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(directory / "checks.md", checks_table_of_losses() + "\n")]
    plot_margin_losses(directory / "margin-losses.png")
    equality = [
        {
            **row,
            "by hand": f"{row['by hand']:.6f}",
            "TRL": f"{row['TRL']:.6f}",
            "difference": f"{row['difference']:.1e}",
        }
        for row in compare_losses_with_trl()
        if row["metric"] in ("loss", "rewards/margins")
    ]
    written.append(
        atomic_write_text(directory / "trl-equality.md", markdown_table(equality) + "\n")
    )
    pairs = film_preferences(n_train, n_test, seed=0, prefer="negative")
    config = DPORunConfig(learning_rate=1e-2, epochs=2, batch_size=16)
    runs = train_side_by_side(pairs, config=config)
    rows = markdown_table(side_by_side_rows(runs))
    written.append(atomic_write_text(directory / "side-by-side.md", rows + "\n"))
    title = f"{n_train} reversed film pairs, tiny-gpt2, LoRA"
    plot_histories(runs, directory / "histories.png", title)
    orpo_rows = []
    for orpo_lambda in (0.1, 1.0, 2.0):  # the paper's lambda, and larger ones
        settings = LossSettings(orpo_lambda=orpo_lambda)
        run = train_preference("orpo", pairs, config=config, settings=settings)
        orpo_rows.append({"ORPO lambda": f"{orpo_lambda:g}", **side_by_side_rows([run])[0]})
    written.append(
        atomic_write_text(directory / "orpo-lambda.md", markdown_table(orpo_rows) + "\n")
    )
    reward_rows = []
    for prefer in ("negative", "positive"):
        reward_pairs = film_preferences(n_train, n_test, seed=0, prefer=prefer)
        run = train_reward_model(reward_pairs, config=config)
        reward_rows += reward_model_rows(run, f"prefer {prefer}")
    written.append(
        atomic_write_text(directory / "reward-model.md", markdown_table(reward_rows) + "\n")
    )
    return written + grpo_pages(directory)


def grpo_pages(directory: Path) -> list[Path]:
    """GRPO from the instruction-tuned tiny-gpt2 with the exact-match reward and with the
    format-only one (`online_rl.train_grpo`, `GRPO` settings, seed 0): the start's exact match
    per task, the two runs' table, their rewards and KL per step, sampled answers before/after.

    Args:
        directory: where the pages and the figure go (`images/preference`).
    """
    runs = [train_grpo(reward) for reward in ("exact", "format")]
    plot_grpo(runs, directory / "grpo.png", "GRPO on tiny-gpt2, " + ", ".join(GRPO.tasks))
    pages = {
        "grpo-start.md": start_rows(),
        "grpo.md": grpo_rows(runs),
        "grpo-samples.md": [
            {**row, "after exact GRPO (sampled)": runs[0].after["sampled"][i]}
            for i, row in enumerate(sample_rows(runs[1], 6))
        ],
    }
    return [atomic_write_text(directory / n, markdown_table(r) + "\n") for n, r in pages.items()]


def page_groups(
    results: Path = RESULTS, images: Path = IMAGES
) -> dict[str, Callable[[], list[Path]]]:
    """Every group of pages, by name, each writing into `results` (and `images`).

    Args:
        results: the directory the pages are written to.
        images: the directory the figures go under.

    Returns:
        Group name -> a function that writes the group's pages and returns their paths.
    """
    return {
        "demo": lambda: demo_pages(results, images),
        "ablation": lambda: ablation_pages(results),
        "prompting": lambda: prompting_pages(results),
        "lora": lambda: lora_pages(results),
        "qlora": lambda: qlora_pages(results),
        "dpo": lambda: dpo_pages(images),
        "gpt2": lambda: gpt2_pages(results),
        "instruct": lambda: instruct_pages(results, images),
        "counting": lambda: counting_pages(results),
        "family": lambda: family_pages(results),
        "compare": lambda: compare_pages(images),
        "preference": lambda: preference_pages(images),
    }


GROUPS = tuple(page_groups())


def regenerate(
    names: list[str] | None = None, results: Path = RESULTS, images: Path = IMAGES
) -> list[Path]:
    """Remake the named groups of pages (all by default) and stamp each with its provenance.

    Args:
        names: the groups, from `GROUPS`; None or empty: all.
        results: the directory the pages are written to.
        images: the directory the figures go under.

    Returns:
        The pages written.

    Raises:
        CourseError: if a name is not one of `GROUPS`.
    """
    unknown = sorted(set(names or ()) - set(GROUPS))
    if unknown:
        raise CourseError(f"unknown page group(s) {unknown}; choose from {', '.join(GROUPS)}")
    results.mkdir(parents=True, exist_ok=True)
    groups = page_groups(results, images)
    written = []
    for name in names or GROUPS:
        pages = groups[name]()
        if name not in SELF_STAMPED:
            pages = [stamp(p, f"{COMMAND} {name}") if p.suffix == ".md" else p for p in pages]
        written += pages
    return written
