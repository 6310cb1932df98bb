"""Every results page of the docs, remade by one command, each saying what produced it.

    python -m peft_course.reports                 # every page (about 10 CPU minutes)
    python -m peft_course.reports demo ablation   # only some

A page is the Markdown a chapter function writes, followed by one line from
`peft_course.system.provenance`: the command, the CPU's kernel set and the library versions.
Figures trained on a CPU are reproduced exactly only under the same kernel set; the tests
compare a fresh run with these pages within the spread measured across kernel sets
(`benchmarks/cpu_spread.py`, `docs/results/cpu-spread.md`).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2ForSequenceClassification

from peft_course.ablation import (
    QUICK,
    Settings,
    prompt_sweep,
    rank_sweep,
    run_sweep,
    seed_project_rows,
    write_sweep,
)
from peft_course.models import count_parameters
from peft_course.data import ClassificationData, load_classification_data
from peft_course.demo import (
    DemoSetting,
    ablation_results,
    demo_rows,
    real_model_rows,
    tuning_results,
    tuning_rows,
)
from peft_course import decoding, gpt2
from peft_course.dpo import make_figures
from peft_course.files import atomic_write_text
from peft_course.finetune import finetune
from peft_course.instruct import generated_instructions, instruct_tune, score_cells
from peft_course.metrics import confusion
from peft_course.lora import equivalence_rows
from peft_course.methods import prepare_full, prepare_lora
from peft_course.models import load_model, load_tokenizer
from peft_course.plots import plot_confusion
from peft_course.prompting import write_results_page
from peft_course.settings import DECODING, INSTRUCT, LORA, METHODS
from peft_course.smollm2 import is_installed
from peft_course.qlora import (
    MB,
    QLORA_LEARNING_RATE,
    nf4_config,
    prepare_qlora,
    require_4bit,
    save_random_gpt2,
    stored_quant_bytes,
    theoretical_rows,
)
from peft_course.system import provenance
from peft_course.tables import COLUMNS, confusion_rows, markdown_table, result_row, write_table
from peft_course.training import TrainConfig

RESULTS, IMAGES = Path("docs/results"), Path("docs/images")
COMMAND = "python -m peft_course.reports"


def stamp(path: Path, command: str) -> Path:
    """End the page at `path` with its provenance line, replacing an older one.

    Args:
        path: the Markdown page, rewritten in place.
        command: the command named in the provenance line.

    Returns:
        The page's path.
    """
    lines = [
        line
        for line in path.read_text().rstrip("\n").splitlines()
        if not line.startswith("*Made by `")
    ]
    while lines and not lines[-1].strip():
        lines.pop()
    return atomic_write_text(path, "\n".join(lines) + "\n\n" + provenance(command) + "\n")


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
        stamp(seed_project_page(results), "python -m peft_course.reports demo")
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
    settings = Settings(epochs=QUICK["epochs"], progress=False)
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


LORA_EPOCHS, LORA_LEARNING_RATE = (
    METHODS["lora"].demo_epochs,
    METHODS["lora"].learning_rate,
)  # the demo's


def lora_training_rows(
    data: ClassificationData,
    model_name: str = "tiny-gpt2",
    seed: int = 0,
    epochs: int = LORA_EPOCHS,
    learning_rate: float = LORA_LEARNING_RATE,
    r: int = LORA.r,
    alpha: float = LORA.alpha,
    progress: bool = False,
) -> list[dict[str, str]]:
    """Untrained, LoRA from scratch and peft's LoRA with the same settings
    (best-validation test scores).

    Both rows come from `peft_course.finetune.finetune` (methods `lora-scratch` and `lora`): same
    model, data, seed, loop and hyper-parameters, LoRA on `c_attn` plus the head. They differ
    only in who built the LoRA layers, and in the random draw of `A` (same seed, but peft draws
    it in another order), which is worth a few points of accuracy on 400 test sentences.

    Args:
        data: the classification data.
        model_name: the model both rows start from.
        seed: the seed of both rows.
        epochs: training epochs (default: the demo's LoRA epochs).
        learning_rate: the learning rate (default: the demo's LoRA learning rate).
        r: LoRA rank.
        alpha: LoRA scale numerator (the update is scaled by alpha/r).
        progress: show progress bars.
    """
    options = {"r": r, "alpha": alpha}
    settings = [
        DemoSetting(method, epochs, learning_rate, options) for method in ("lora-scratch", "lora")
    ]
    return demo_rows(data, model_name, seed, settings=settings, progress=progress)


def gpt2_parity_rows(name: str = "tiny-gpt2", seed: int = 0) -> list[dict[str, str]]:
    """The from-scratch GPT-2 against transformers on the same weights:
    the largest |logit difference|.

    Language model and classifier, a batch without padding and one padded on both sides (the
    classifier pools each row's last real token; the LM is compared at the real tokens).

    Args:
        name: the GPT-2 model to compare on.
        seed: seeds the weights and the random token ids.
    """
    lm, tokenizer = load_model(name, task="causal-lm", seed=seed)
    ours = gpt2.from_pretrained(name, seed=seed)
    ids = torch.randint(
        1, ours.config.vocab_size, (4, 24), generator=torch.Generator().manual_seed(seed)
    )
    padding = torch.ones_like(ids)
    padding[0, 16:], padding[1, :5] = 0, 0
    rows = [
        {
            "model": f"{name}, LM head",
            "batch": batch,
            "max abs logit difference": f"{gpt2.max_logit_difference(ours, lm, ids, mask):.1e}",
        }
        for batch, mask in (("no padding", None), ("padded left and right", padding))
    ]
    with tempfile.TemporaryDirectory() as directory:
        classifier, _ = load_model(name, task="classification", num_labels=3, seed=seed)
        classifier.save_pretrained(directory)
        ours = gpt2.from_pretrained(directory, num_labels=3, pad_token_id=tokenizer.pad_token_id)
    padded = ids.masked_fill(padding == 0, tokenizer.pad_token_id)
    rows.append(
        {
            "model": f"{name}, classifier (3 labels)",
            "batch": "padded left and right",
            "max abs logit difference": (
                f"{gpt2.max_logit_difference(ours, classifier, padded, padding):.1e}"
            ),
        }
    )
    return rows


def gpt2_count_rows() -> list[dict[str, str]]:
    """Trainable and frozen parameters of GPT-2 small with LoRA built in, for a few placements."""
    rows = []
    for r, targets, note in (
        (8, ("q", "k", "v"), "the seed project's configuration"),
        (8, ("q", "v"), "the LoRA paper's GPT-2 choice"),
        (4, gpt2.PROJECTIONS, "every projection"),
    ):
        trainable, frozen = gpt2.lora_counts(gpt2.LoRASpec(r=r, alpha=2.0 * r, targets=targets))
        rows.append(
            {
                "LoRA on": ", ".join(targets),
                "r": str(r),
                "trainable": f"{trainable:,}",
                "frozen": f"{frozen:,}",
                "note": note,
            }
        )
    return rows


def gpt2_generation_rows(
    model: gpt2.GPT2,
    tokenizer: Any,
    prompt: str = DECODING.prompt,
    max_new_tokens: int = DECODING.max_new_tokens,
    seed: int = 0,
    strategies: tuple[str, ...] = decoding.STRATEGIES,
    temperature: float = DECODING.temperature,
    top_k: int = DECODING.top_k,
    top_p: float = DECODING.top_p,
) -> list[dict[str, str]]:
    """One continuation of `prompt` per decoding strategy, and how many distinct ones 10 seeds give.

    Args:
        model: the from-scratch GPT-2.
        tokenizer: its tokenizer.
        prompt: the text continued.
        max_new_tokens: the most tokens a continuation has.
        seed: seed `seed` gives the shown continuation; seeds `seed ... seed + 9` are counted, so
            the last column shows what each strategy does to the variety of the text.
        strategies: the decoding strategies, one row each (of "greedy", "temperature",
            "top-k", "top-p").
        temperature: the sampling temperature of every strategy but greedy.
        top_k: the k of "top-k".
        top_p: the probability mass of "top-p".
    """
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    settings = {
        "greedy": {},
        "temperature": {"temperature": temperature},
        "top-k": {"temperature": temperature, "top_k": top_k},
        "top-p": {"temperature": temperature, "top_p": top_p},
    }
    rows = []
    for strategy in strategies:
        options = settings[strategy]
        texts = []
        for draw in range(seed, seed + 10):
            out = decoding.generate(
                model,
                ids,
                max_new_tokens,
                strategy,
                generator=torch.Generator().manual_seed(draw),
                eos_token_id=tokenizer.eos_token_id,
                **options,
            )
            texts.append(
                tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
                .replace("\n", " ")
                .strip()
            )
        shown = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in options.items()) or "-"
        rows.append(
            {
                "strategy": strategy,
                "settings": shown,
                "continuation": texts[0] or "(end of text at once)",
                "distinct in 10 seeds": str(len(set(texts))),
            }
        )
    return rows


def gpt2_pages(results: Path = RESULTS) -> list[Path]:
    """The GPT-2 chapter's tables: parity with transformers, LoRA counts,
    generations on tiny-gpt2.

    Args:
        results: the directory the pages are written to.
    """
    model, tokenizer = gpt2.from_pretrained("tiny-gpt2").eval(), load_tokenizer("tiny-gpt2")
    tables = {
        "gpt2-parity": gpt2_parity_rows(),
        "gpt2-count": gpt2_count_rows(),
        "gpt2-generation": gpt2_generation_rows(model, tokenizer),
    }
    pages = []
    for name, rows in tables.items():
        pages.append(atomic_write_text(results / f"{name}.md", markdown_table(rows)))
    return pages


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


def other_pages(
    results: Path = RESULTS, images: Path = IMAGES
) -> dict[str, Callable[[], list[Path]]]:
    """The chapters that write their own pages: prompting, LoRA, QLoRA, DPO.

    Args:
        results: the directory the pages are written to.
        images: the directory the figures go under.

    Returns:
        Group name -> a function that writes the group's pages and returns their paths.
    """

    def lora() -> list[Path]:
        """The LoRA chapter's equality-with-peft table and its training table (no seconds)."""
        equivalence, training = results / "lora-equivalence.md", results / "lora-training.md"
        equivalence.write_text(markdown_table(equivalence_rows()))
        rows = lora_training_rows(load_classification_data("synthetic-sentiment"))
        training.write_text(markdown_table(rows, tuple(c for c in COLUMNS if c != "seconds")))
        return [equivalence, training]

    return {
        "prompting": lambda: write_results_page(results),
        "lora": lora,
        "qlora": lambda: qlora_pages(results),
        "dpo": lambda: [p for p in make_figures(images / "dpo") if p.suffix == ".md"],
        "gpt2": lambda: gpt2_pages(results),
        "instruct": lambda: instruct_pages(results, images),
    }


def qlora_footprint_rows(name: str = "gpt2", seed: int = 0) -> list[dict[str, str]]:
    """`get_memory_footprint()` of GPT-2 `name` (random weights) as full, LoRA and QLoRA models.

    LoRA and QLoRA use r=8 on `c_attn` plus the head copy. The QLoRA row adds the
    quantization scales, which `get_memory_footprint` does not see, in its own column.

    Args:
        name: the GPT-2 configuration, built with random weights.
        seed: seeds the random weights.
    """
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        save_random_gpt2(directory, name, seed)
        for method in ("full", "LoRA", "QLoRA"):
            if method == "QLoRA":
                require_4bit("cpu")
                model = GPT2ForSequenceClassification.from_pretrained(
                    directory, quantization_config=nf4_config(torch.bfloat16), device_map="cpu"
                )
                model = prepare_qlora(model, r=8, alpha=16)
                scales = stored_quant_bytes(model) - sum(
                    p.numel() for p in model.parameters() if p.dtype == torch.uint8
                )
            else:
                model = GPT2ForSequenceClassification.from_pretrained(directory)
                model = (
                    prepare_full(model) if method == "full" else prepare_lora(model, r=8, alpha=16)
                )
                scales = 0
            trainable, total = count_parameters(model)
            footprint = model.get_memory_footprint()
            rows.append(
                {
                    "method": method,
                    "trainable": f"{trainable:,}",
                    "parameters": f"{total:,}",
                    "get_memory_footprint MB": f"{footprint / MB:,.1f}",
                    "+ NF4 scales MB": f"{scales / MB:,.1f}",
                    "vs full": f"{footprint / rows[0]['_bytes']:.0%}" if rows else "100%",
                    "_bytes": footprint,
                }
            )
            del model
    for row in rows:
        row.pop("_bytes")
    return rows


def qlora_accuracy_rows(
    data: Any,
    model_name: str = "tiny-gpt2",
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
    directory: str | Path = RESULTS, seeds: tuple[int, ...] = (0, 1, 2), progress: bool = False
) -> list[Path]:
    """Write the chapter's tables: `qlora-theory.md`, `qlora-footprint.md` and `qlora-accuracy.md`.

    The accuracy table leaves out the seconds, which depend on the machine and its load.

    Args:
        directory: the directory the pages are written to.
        seeds: the seeds of the accuracy table.
        progress: show progress bars.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
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
    paths = []
    for file, rows in tables.items():
        (directory / file).write_text(markdown_table(rows))
        paths.append(directory / file)
    return paths


def regenerate(names: list[str] | None = None) -> list[Path]:
    """Remake the named groups of pages (all by default) and stamp each with its provenance.

    Args:
        names: the groups (demo, ablation, prompting, lora, qlora, dpo, gpt2, instruct); None
            or empty: all. An unknown name exits with a message listing the groups.

    Returns:
        The pages written.
    """
    groups: dict[str, Callable[[], list[Path]]] = {"demo": demo_pages, "ablation": ablation_pages}
    groups.update(other_pages())
    unknown = set(names or ()) - set(groups)
    if unknown:
        raise SystemExit(
            f"unknown page group(s) {sorted(unknown)}; choose from {', '.join(groups)}"
        )
    written = []
    for name in names or list(groups):
        pages = groups[name]()
        command = f"{COMMAND} {name}"
        written += [
            page if name in ("demo", "ablation") else stamp(page, command) for page in pages
        ]
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Remake the docs' results pages.")
    parser.add_argument(
        "groups",
        nargs="*",
        help="demo, ablation, prompting, lora, qlora, dpo, gpt2, instruct (default: all)",
    )
    for path in regenerate(parser.parse_args().groups):
        print(f"saved {path}")
