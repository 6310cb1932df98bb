"""Every chapter on a real pretrained language model: SmolLM2-135M-Instruct on real data.

`python -m peft_course.pages real-model --data-dir ../shared/data` (or `make real-model`)
runs the parts below and writes one results page each into `docs/results/` (Markdown tables,
PNG curves), with the command, the machine and the wall time; a part alone is named by its
page, e.g. `python -m peft_course.pages real-finetune`:

* `real-prompting`: zero- and k-shot sentiment on Rotten Tomatoes (verbalizer and strict),
  with and without the chat template;
* `real-arithmetic`: direct, few-shot, chain-of-thought and zero-shot CoT on the generated
  word problems and on GSM8K;
* `real-ablation`: a short learning-rate search, then the rank, alpha and prompt tables;
* `real-finetune`: untrained, head, LoRA, merged LoRA and QLoRA classifiers;
* `real-dpo`: DPO with LoRA on Anthropic HH pairs, preference accuracy before and after;
* `real-instruct`: LoRA instruction tuning on the generated tasks, exact match before and
  after;
* `real-classes`: LoRA classifiers on RTE's sentence pairs and the six classes of `emotion`;
* `real-topics`: the financial-news seed, head, LoRA, merged LoRA and QLoRA on 20 topics;
* `real-compare`: the PEFT family side by side at about 1% of the parameters;
* `real-preference`: DPO, IPO, hinge, robust, SimPO, ORPO, KTO and APO-zero side by side on the
  HH pairs, and a reward model beside DPO's implicit reward.

The sizes are the CPU sizes the pages were made with (5 to 27 minutes a part on 2 cores, the
ablation about an hour); `--scale full` uses the whole splits for a learner with a GPU
(`--device cuda`). Every part is resumable: what finished (a prompt setting, a cell, a method)
is kept under `--work` and reused when the command runs again, so an interrupted run
continues where it stopped.
The real data is read from `--data-dir` (`../shared/data` by default), never from the hub.
"""

from __future__ import annotations

import gzip
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from datasets import Dataset
from tqdm.auto import tqdm

from peft_course.ablation import (
    SEED_ALPHAS,
    SEED_RANKS,
    CellConfig,
    SweepSettings,
    alpha_sweep,
    drop_cells,
    format_mean_std,
    full_cell,
    parameter_sweep,
    prompt_sweep,
    rank_sweep,
    run_sweep,
    table_rows,
    write_sweep,
)
from peft_course.compare import compare, plot_pareto, search_rows
from peft_course.compare import table_rows as compare_rows
from peft_course.data import ClassificationData, load_classification_data
from peft_course.dpo import (
    DPORunConfig,
    before_after_table,
    check_pair,
    save_dpo_run,
    tokenize_pair,
    train_dpo,
)
from peft_course.errors import CourseError
from peft_course.preference import (
    LOSSES,
    AlignRun,
    LossSettings,
    RewardModelRun,
    plot_histories,
    reward_model_rows,
    side_by_side_rows,
    train_preference,
    train_reward_model,
)
from peft_course.files import atomic_write_text
from peft_course.finetune import FinetuneResult, finetune, finish_as
from peft_course.registry import get_method
from peft_course.instruct import generated_instructions, instruct_rows, instruct_tune
from peft_course.lm_classification import TEMPLATES
from peft_course.metrics import confusion
from peft_course.models import load_model, load_tokenizer
from peft_course.pages.stamp import COMMAND
from peft_course.prompting import (
    DEFAULT_STRATEGIES,
    HFGenerate,
    balanced_examples,
    evaluate_prompting,
    example_pool,
    load_problem_set,
    sentiment_by_prompting,
)
from peft_course.settings import COMPARE, COMPARED_METHODS, INSTRUCT
from peft_course.system import provenance
from peft_course.tables import confusion_rows, distinct_markdown_table, markdown_table, result_row
from peft_course.training import TrainConfig
from peft_course.word_problems import load_gsm8k_jsonl


@dataclass(frozen=True)
class Sizes:
    """How much of each dataset a part uses (rows); None means the whole split.

    Attributes:
        prompt_test: test reviews of the prompting part.
        shots: the k of the k-shot prompts.
        draws: draws of the solved examples for each k.
        gsm8k: GSM8K test problems; each is four generations of up to 128 tokens, about 6 s
            each on a CPU.
        generated: generated word problems.
        ablation: rows of the ablation tables: train, validation, test.
        search: rows of the learning-rate search: train, validation, test.
        finetune: rows of the classifiers part: train, validation, test.
        dpo: train pairs, held-out pairs.
        instruct: generated instruction examples: train, validation, test.
        classes: RTE and emotion: train, validation, test.
        topics: the 20 topics of finance tweets: train, validation, test.
        compare: rows of the PEFT family's comparison: train, validation, test.
        compare_search: training rows of its learning-rate search.
        compare_methods: the methods compared (keys of `compare.FAMILIES`).
        compare_rate_factors: the search's multiples of each method's registry rate.
        general: IMDB reviews the comparison's forgetting figure is measured on.
        preference: HH pairs of the side-by-side losses: train, held-out.
        preference_losses: the losses trained side by side (keys of `preference.LOSSES`).
    """

    prompt_test: int | None = 500
    shots: tuple[int, ...] = (2, 4, 8)
    draws: int = 3
    gsm8k: int | None = (
        30  # problems; each is four generations of up to 128 tokens, about 6 s each on a CPU
    )
    generated: int = 27
    ablation: tuple[int | None, int | None, int | None] = (400, 200, 500)  # train, validation, test
    search: tuple[int, int, int] = (200, 100, 200)
    finetune: tuple[int | None, int | None, int | None] = (1000, 200, 500)
    dpo: tuple[int | None, int | None] = (300, 100)  # train pairs, held-out pairs
    instruct: tuple[int, int, int] = (
        600,
        50,
        100,
    )  # generated instruction examples: train, validation, test
    classes: tuple[int | None, int | None, int | None] = (
        600,
        150,
        500,
    )  # RTE and emotion: train, validation, test
    topics: tuple[int | None, int | None, int | None] = (1000, 200, 500)  # finance tweets
    compare: tuple[int | None, int | None, int | None] = (400, 100, 200)
    compare_search: int = 400  # the training split itself: one run is its search and its seed
    compare_methods: tuple[str, ...] = COMPARED_METHODS
    compare_rate_factors: tuple[float, ...] = (0.1, 0.3, 1.0)  # the registry's rates, and lower
    general: int = 32
    preference: tuple[int | None, int | None] = (64, 32)
    preference_losses: tuple[str, ...] = tuple(LOSSES)


SCALES = {
    "cpu": Sizes(),
    "full": Sizes(
        prompt_test=None,
        gsm8k=None,
        generated=100,
        ablation=(None, None, None),
        search=(2000, 500, 500),
        finetune=(None, None, None),
        dpo=(None, None),
        instruct=(2000, 100, 200),
        classes=(None, None, None),
        topics=(None, None, None),
        compare=(2000, 500, 1000),
        compare_search=500,
        compare_rate_factors=COMPARE.rate_factors,
        general=64,
        preference=(None, None),
    ),
    "smoke": Sizes(
        16,
        (2,),
        2,
        2,
        2,
        (16, 8, 8),
        (16, 8, 8),
        (16, 8, 8),
        (8, 4),
        (10, 5, 5),
        (16, 8, 8),
        (40, 20, 20),
        (16, 8, 8),
        8,
        ("ia3", "lora"),
        (1.0,),
        4,
        (8, 4),
        ("dpo", "simpo"),
    ),  # a test
}


@dataclass(frozen=True)
class Context:
    """Where the real data is, where pages and resumable work go, and how to run.

    Attributes:
        model: the model every part loads.
        scale: the name of the sizes in `SCALES` (`cpu`, `full`, `smoke`).
        data_dir: the folder holding the real datasets (`--data-dir`).
        results: where the pages are written (`--results`).
        work: where finished work is kept for reruns (`--work`).
        sizes: how much of each dataset a part uses.
        device: where to train; None: CUDA if present.
        progress: show progress bars.
        fresh: recompute finished work instead of reusing it.
    """

    model: str
    scale: str
    data_dir: Path
    results: Path
    work: Path
    sizes: Sizes
    device: str | None
    progress: bool
    fresh: bool

    def store(self, part: str) -> "Store":
        """The finished work of `part` for this model and scale (another model never reuses it).

        Args:
            part: the part's name, which names its JSON file.
        """
        return Store(self.work / f"{self.model}-{self.scale}" / f"{part}.json", self.fresh)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def subsample(
    data: ClassificationData, sizes: tuple[int | None, ...], seed: int = 0
) -> ClassificationData:
    """`data` with at most `sizes` rows in train, validation and test (a seeded sample of each).

    Args:
        data: the classification data.
        sizes: the most rows of train, validation and test; None keeps a whole split.
        seed: seeds the shuffle each sample is taken from.
    """
    splits = {}
    for split, n in zip(("train", "validation", "test"), sizes):
        rows = data.splits[split]
        splits[split] = (
            rows if n is None or n >= len(rows) else rows.shuffle(seed=seed).select(range(n))
        )
    return replace(data, splits=type(data.splits)(splits))


def rotten_tomatoes(context: Context, sizes: tuple[int | None, ...]) -> ClassificationData:
    """Rotten Tomatoes from `--data-dir`, sampled to `sizes`.

    Args:
        context: where the real data is, where pages and resumable work go, and how to run.
        sizes: the most rows of train, validation and test; None keeps a whole split.

    Raises:
        CourseError: if `--data-dir` holds no `rotten_tomatoes/train.jsonl`.
    """
    folder = context.data_dir / "rotten_tomatoes"
    if not (folder / "train.jsonl").is_file():
        raise CourseError(
            f"no Rotten Tomatoes in {folder}: pass --data-dir, the folder holding rotten_tomatoes/"
        )
    data = load_classification_data(
        "rotten_tomatoes",
        train_file=folder / "train.jsonl",
        validation_file=folder / "validation.jsonl",
        test_file=folder / "test.jsonl",
        label_names=["negative", "positive"],
    )
    return subsample(data, sizes)


class Store:
    """A JSON file of finished results, keyed by setting: what makes a part resumable.

    Args:
        path: the JSON file.
        fresh: start empty, ignoring what the file holds.

    Attributes:
        path: the JSON file.
        results: setting -> finished result.
    """

    def __init__(self, path: Path, fresh: bool) -> None:
        self.path = path
        self.results: dict[str, Any] = (
            {} if fresh or not path.is_file() else json.loads(path.read_text())
        )

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        """The stored result for `key`, or `compute()`, stored at once.

        Args:
            key: the setting.
            compute: computes the result when none is stored (it must be JSON-serializable).
        """
        if key not in self.results:
            self.results[key] = compute()
            atomic_write_text(self.path, json.dumps(self.results, indent=1))
        return self.results[key]


def page(context: Context, name: str, title: str, body: str, started: float) -> Path:
    """Write `<name>.md` into `context.results`: the title (bold: the page is included under a
    chapter's heading), the body, and the line saying what made it.

    Args:
        context: where the real data is, where pages and resumable work go, and how to run.
        name: the page's file name, without `.md`, which is also the part's name in `PARTS`.
        title: the page's title.
        body: the page's Markdown.
        started: `time.perf_counter()` when the part started, for the wall time.
    """
    minutes = (time.perf_counter() - started) / 60
    note = (
        provenance(f"{COMMAND} {name}")
        + f" Wall time of this run: {minutes:.1f} min (work reused from an earlier run is not "
        "counted)."
    )
    return atomic_write_text(context.results / f"{name}.md", f"**{title}**\n\n{body}\n{note}\n")


# ---------------------------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------------------------

CHAT_INSTRUCTION = "Is this movie review positive or negative? Answer with one word.\n\n"


def part_prompting(context: Context) -> list[Path]:
    """Sentiment by prompting: zero-shot and k-shot (3 draws of the examples), plain and chat.

    Args:
        context: where the real data is, where pages and resumable work go, and how to run.

    Returns:
        The page written.
    """
    started = time.perf_counter()
    data = rotten_tomatoes(context, (None, None, context.sizes.prompt_test))
    train, test = data.splits["train"], data.splits["test"]
    model, tokenizer = load_model(context.model, task="causal-lm")
    store = context.store("prompting")
    chats = (
        (False, True) if getattr(tokenizer, "chat_template", None) else (False,)
    )  # a base model has none
    settings = [(0, 0, chat) for chat in chats]
    settings += [
        (k, draw, False) for k in context.sizes.shots for draw in range(context.sizes.draws)
    ]
    if True in chats:  # the chat layout at k = 0 and at the middle k only
        settings += [
            (k, draw, True) for k in context.sizes.shots[1:2] for draw in range(context.sizes.draws)
        ]
    for k, draw, chat in tqdm(settings, desc="prompting settings", disable=not context.progress):

        def run(k=k, draw=draw, chat=chat) -> dict[str, Any]:
            examples = balanced_examples(train["text"], train["label"], k, seed=draw) if k else []
            words = ("negative", "positive") if chat else (" negative", " positive")
            result = sentiment_by_prompting(
                model,
                tokenizer,
                test["text"],
                test["label"],
                words,
                examples=examples,
                chat=chat,
                instruction=CHAT_INSTRUCTION if chat else "",
            )
            return {
                "verbalizer": result["accuracy"],
                "strict": result["strict"],
                "positive share": result["predicted counts"][1] / len(test),
            }

        store.get(f"k={k} draw={draw} chat={chat}", run)
    rows = []
    for chat in chats:
        for k in (0, *context.sizes.shots) if not chat else (0, *context.sizes.shots[1:2]):
            runs = [
                v
                for key, v in store.results.items()
                if key.startswith(f"k={k} ") and key.endswith(f"chat={chat}")
            ]
            rows.append(
                {
                    "prompt": "chat template + instruction" if chat else "plain",
                    "k": str(k),
                    "draws": str(len(runs)),
                    "verbalizer": format_mean_std([r["verbalizer"] for r in runs]),
                    "strict": format_mean_std([r["strict"] for r in runs]),
                    "predicted positive": format_mean_std([r["positive share"] for r in runs]),
                }
            )
    body = (
        f"`{context.model}` on {len(test)} Rotten Tomatoes test reviews (a seeded sample), no "
        "training. Prompt: `Review: <text>\\nSentiment:` after k solved examples drawn from the "
        "training split (labels alternating, order shuffled; mean ± std over "
        f"{context.sizes.draws} draws). With the chat template, the user's turn starts with "
        f"`{CHAT_INSTRUCTION.strip()}` (without it SmolLM2 answers the review in prose and strict "
        "accuracy is 0) and the label words lose their leading space. **verbalizer**: the "
        "likelier of the two label words; **strict**: the single likeliest next token of all "
        f"{len(tokenizer):,} is the true label word (what greedy decoding writes first). "
        f"{sum(test['label']) / len(test):.1%} of the "
        f"reviews are positive.\n\n{markdown_table(rows)}"
    )
    return [
        page(
            context,
            "real-prompting",
            "Prompting SmolLM2-135M-Instruct: sentiment",
            body,
            started,
        )
    ]


ARITHMETIC_BATCH = 8  # prompts decoded together: a CPU reads the weights once for all eight


def part_arithmetic(context: Context) -> list[Path]:
    """Direct, few-shot, chain-of-thought and zero-shot CoT on generated problems and GSM8K.

    Args:
        context: where the real data is, where pages and resumable work go, and how to run.

    Returns:
        The page written.
    """
    started = time.perf_counter()
    model, tokenizer = load_model(context.model, task="causal-lm")
    generate = HFGenerate(model, tokenizer, max_new_tokens=128, batch_size=ARITHMETIC_BATCH)
    gsm8k = context.data_dir / "gsm8k"
    sources = {
        "generated": (load_problem_set("generated", context.sizes.generated, 0), None),
        "GSM8K test": (
            load_gsm8k_jsonl(gsm8k / "test.jsonl", limit=context.sizes.gsm8k),
            load_gsm8k_jsonl(gsm8k / "train.jsonl", limit=8),
        ),
    }
    store = context.store("arithmetic")
    sections = []
    for name, (problems, pool) in sources.items():
        examples = pool if pool is not None else example_pool(problems, 2, 0)
        for strategy in tqdm(
            DEFAULT_STRATEGIES, desc=f"arithmetic, {name}", disable=not context.progress
        ):

            def run(strategy=strategy) -> dict[str, Any]:
                result = evaluate_prompting(generate, problems, [strategy], examples, 2)
                return {
                    "table": result.table(),
                    "first completions": [r["completion"] for r in result.records[:3]],
                }

            store.get(f"{name} {strategy}", run)
        tables = [store.results[f"{name} {s}"]["table"] for s in DEFAULT_STRATEGIES]
        header, rows = tables[0].splitlines()[:2], [t.splitlines()[2] for t in tables]
        sections.append(
            f"**{name}** ({len(problems)} problems, greedy, at most 128 new tokens, k=2, "
            f"{ARITHMETIC_BATCH} prompts decoded together):\n\n" + "\n".join(header + rows) + "\n"
        )
    body = "\n".join(sections)
    return [
        page(
            context,
            "real-arithmetic",
            "Prompting SmolLM2-135M-Instruct: arithmetic",
            body,
            started,
        )
    ]


LORA_RATES, FULL_RATES = (1e-4, 3e-4, 1e-3), (1e-5, 3e-5)


def best_rate(metrics: dict[str, list[dict[str, Any]]]) -> float:
    """The learning rate whose cell reached the highest validation accuracy (ties: the smaller).

    Args:
        metrics: a learning-rate sweep's metrics (`SweepResult.metrics`).
    """
    scored = [
        (max(h["val_accuracy"] for h in runs[0]["history"]), -runs[0]["config"]["learning_rate"])
        for runs in metrics.values()
    ]
    return -max(scored)[1]


def part_ablation(context: Context) -> list[Path]:
    """A short learning-rate search (by validation accuracy),
    then the rank, alpha and prompt tables.

    Args:
        context: where the real data is, where pages and resumable work go, and how to run.

    Returns:
        The page, then the tables and plots of every sweep.
    """
    started = time.perf_counter()
    settings = SweepSettings(
        model=context.model,
        epochs=1,
        batch_size=8,
        device=context.device,
        progress=context.progress,
    )
    cells = context.work / "ablation"
    search = rotten_tomatoes(context, context.sizes.search)
    base = CellConfig(r=16, alpha=64.0, template="default")
    searches = [
        parameter_sweep("learning_rate", list(LORA_RATES), base),
        parameter_sweep("learning_rate", list(FULL_RATES), replace(base, method="full")),
    ]
    if context.fresh:
        drop_cells(searches, search, settings, output=cells)
    lora, full = [run_sweep(sweep, search, settings, output=cells) for sweep in searches]
    lora_rate, full_rate = best_rate(lora.metrics), best_rate(full.metrics)
    search_rows = [
        {
            "method": method,
            "learning rate": label,
            "best validation accuracy": f"{max(h['val_accuracy'] for h in runs[0]['history']):.3f}",
        }
        for method, result in (("LoRA r=16", lora), ("full", full))
        for label, runs in result.metrics.items()
    ]
    data = rotten_tomatoes(context, context.sizes.ablation)
    base = CellConfig(r=16, alpha=64.0, learning_rate=lora_rate)
    full_row = full_cell(base, full_rate)
    sweeps = [
        rank_sweep(SEED_RANKS, 4.0, base, full_row),
        alpha_sweep(SEED_ALPHAS, 16, base, full_row),
        prompt_sweep(tuple(TEMPLATES), 128, 512.0, base),
    ]
    if context.fresh:
        drop_cells(sweeps, data, settings, output=cells)
    written, tables = [], []
    for sweep in sweeps:
        result = run_sweep(sweep, data, settings, output=cells)
        written += write_sweep(
            result,
            context.results / "real-ablation",
            f"{sweep.name} sweep: {context.model} on Rotten Tomatoes",
            provenance(f"{COMMAND} real-ablation"),
        )
        tables.append(
            f"### The {sweep.name} table\n\n{distinct_markdown_table(table_rows(result))}\n"
            f"![validation loss of every cell](results/real-ablation/{sweep.name}-val-loss.png)\n"
        )
    split = ", ".join(f"{len(data.splits[s])} {s}" for s in ("train", "validation", "test"))
    body = (
        f"`{context.model}` fine-tuned through its LM head (prompt + label word, loss on the label "
        f"word), Rotten Tomatoes ({split}; a seeded sample), 1 epoch, batch 8, seed 0; test "
        "accuracy by verbalizer and by strict match, at the last iteration and at the best "
        "validation. Beside each cell the seed project's figure (GPT-2 small, full Rotten "
        "Tomatoes, strict match).\n\n**Learning rates**, picked by validation accuracy on a "
        "smaller sample "
        f"({', '.join(f'{len(search.splits[s])} {s}' for s in ('train', 'validation'))}): LoRA "
        f"{lora_rate:g}, full fine-tuning {full_rate:g}.\n\n{markdown_table(search_rows)}\n"
        + "\n".join(tables)
    )
    return [
        page(
            context,
            "real-ablation",
            "The ablation tables on SmolLM2-135M-Instruct",
            body,
            started,
        ),
        *written,
    ]


FINETUNE_METHODS = (  # method, epochs, learning rate, options
    ("head", 2, 1e-3, {}),
    ("lora", 1, 5e-4, {"r": 8, "alpha": 16}),
    ("merged", 1, 5e-4, {"r": 8, "alpha": 16}),
    ("qlora", 1, 5e-4, {"r": 8, "alpha": 16}),
)


def train_methods(
    context: Context,
    data: ClassificationData,
    store: Store,
    desc: str,
    with_confusion: bool = False,
) -> list[dict[str, str]]:
    """Train `FINETUNE_METHODS` on `data` (each kept in `store`, reused on a rerun) and return
    their result rows after the untrained model's.

    Nothing the rows do not show is computed: the untrained classifier is scored once (by the
    first method), no method scores its last iteration, and `merged` finishes the `lora` run
    of the same recipe when that ran in this process instead of training it again.

    Args:
        context: where the real data is, where pages and resumable work go, and how to run.
        data: the classification data.
        store: the part's stored work.
        desc: the progress bar's label.
        with_confusion: also keep each method's confusion matrix on the test split.
    """
    trained: dict[tuple[Any, ...], FinetuneResult] = {}  # (method, recipe): a run of this process
    for index, (method, epochs, rate, options) in enumerate(
        tqdm(FINETUNE_METHODS, desc=desc, disable=not context.progress)
    ):

        def run(
            index=index, method=method, epochs=epochs, rate=rate, options=options
        ) -> dict[str, Any]:
            recipe = (epochs, rate, tuple(sorted(options.items())))
            earlier = trained.get(("lora", recipe)) if method == "merged" else None
            if earlier is not None:
                result = finish_as(earlier, method, data, 128, context.device)
            else:
                config = TrainConfig(
                    epochs=epochs,
                    batch_size=16,
                    learning_rate=rate,
                    device=context.device,
                    progress=context.progress,
                )
                result = finetune(
                    data,
                    method,
                    context.model,
                    config,
                    128,
                    score_untrained=index == 0,
                    score_last=False,
                    **options,
                )
                if method == "lora":  # kept for `merged`
                    trained[(method, recipe)] = result
            done = {
                "untrained": result.untrained,
                "best": result.best,
                "trainable": result.trainable,
                "seconds": result.training.seconds,
            }
            if with_confusion:
                labels = data.splits["test"]["label"]
                done["confusion"] = confusion(labels, result.predictions, data.num_labels)
            return done

        store.get(method, run)
    first = store.results[FINETUNE_METHODS[0][0]]
    rows = [result_row("untrained", 0, first["untrained"], 0.0)]
    for method, *_ in FINETUNE_METHODS:
        done = store.results[method]
        label = get_method(method).label
        rows.append(result_row(label, done["trainable"], done["best"], done["seconds"]))
    return rows


def part_finetune(context: Context) -> list[Path]:
    """Untrained, head, LoRA, merged LoRA and QLoRA sequence classifiers on Rotten Tomatoes.

    Args:
        context: where the real data is, where pages and resumable work go, and how to run.

    Returns:
        The page written.
    """
    started = time.perf_counter()
    data = rotten_tomatoes(context, context.sizes.finetune)
    store = context.store("finetune")
    rows = train_methods(context, data, store, "finetune methods")
    recipes = "; ".join(
        f"{get_method(m).label} {e} epoch{'s' if e > 1 else ''} at {r:g}"
        + (f" (r={o['r']}, alpha {o['alpha']})" if o else "")
        for m, e, r, o in FINETUNE_METHODS
    )
    split = ", ".join(f"{len(data.splits[s])} {s}" for s in ("train", "validation", "test"))
    body = (
        f"`{context.model}` with a new classification head (`LlamaForSequenceClassification`, pad "
        f"= eos), Rotten Tomatoes ({split}; a seeded sample), batch 16, texts cut at 128 tokens; "
        "test accuracy and weighted F1 at the best-validation checkpoint; seconds of training on "
        f"this machine. Learning rates set by hand, not searched: {recipes}.\n\n"
        f"{markdown_table(rows)}"
    )
    return [
        page(
            context,
            "real-finetune",
            "Fine-tuning SmolLM2-135M-Instruct for classification",
            body,
            started,
        )
    ]


def usable_pairs(path: Path) -> tuple[Any, int]:
    """The pairs of a JSONL file whose prompt and answers are all non-empty, and how many were not.

    HH-RLHF has a few pairs with an empty answer, which `load_preference_jsonl` rightly refuses.

    Args:
        path: the JSONL file of preference pairs.

    Returns:
        `(pairs, dropped)`: the usable pairs as a `Dataset`, and how many pairs were left out.

    Raises:
        CourseError: if there is no file at `path`.
    """
    if not path.is_file():
        raise CourseError(
            f"no preference pairs at {path}: pass --data-dir, the folder holding hh_rlhf_dpo/"
        )
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [
        check_pair(r, f"{path}: pair {i}")
        for i, r in enumerate(rows)
        if all(isinstance(r.get(k), str) and r[k].strip() for k in ("prompt", "chosen", "rejected"))
    ]
    return Dataset.from_list(kept), len(rows) - len(kept)


def fits_in(tokenizer: Any, pair: dict[str, str], max_length: int) -> bool:
    """Whether the prompt with either answer (and eos) is at most `max_length` tokens.

    Args:
        tokenizer: the model's tokenizer.
        pair: one `{"prompt", "chosen", "rejected"}` dict.
        max_length: the most tokens allowed.
    """
    ids = tokenize_pair(tokenizer, pair)
    return (
        len(ids["prompt_ids"]) + max(len(ids["chosen_ids"]), len(ids["rejected_ids"])) <= max_length
    )


HH_DPO = DPORunConfig(  # LoRA on the HH pairs: the DPO part's recipe
    beta=0.1,
    learning_rate=1e-4,
    epochs=1,
    batch_size=4,
    lora=True,
    r=16,
    alpha=32.0,
    max_length=256,
    logging_steps=5,
)


def part_dpo(context: Context) -> list[Path]:
    """DPO with LoRA on Anthropic HH helpful pairs:
    held-out preference accuracy before and after.

    Args:
        context: where the real data is, where pages and resumable work go, and how to run.

    Returns:
        The page written.
    """
    started = time.perf_counter()
    config = replace(HH_DPO, progress=context.progress)
    pairs, dropped = hh_pairs(context, context.sizes.dpo, config.max_length)
    run = train_dpo(pairs, context.model, config)
    save_dpo_run(run, context.results / "real-dpo", f"DPO on {context.model}, LoRA r=16")
    body = (
        f"`{context.model}` + LoRA (r=16, alpha 32, peft's default targets q_proj and v_proj) "
        f"trained with `trl.DPOTrainer` on {len(pairs['train'])} Anthropic HH helpful-base pairs "
        "(a seeded sample), 1 epoch, batch 4, beta 0.1, learning rate 1e-4; measured on "
        f"{len(pairs['test'])} held-out pairs. *likelihood accuracy*: the policy gives the chosen "
        "answer a higher log-likelihood than the rejected one, and *likelihood margin* is the "
        "mean of log π(chosen) − log π(rejected); *rewards/accuracies*: the implicit reward "
        f"beta·(log π − log π_ref) of the chosen answer is higher. {run.seconds:.0f} s of "
        f"training; the reference stayed unchanged: {run.reference_unchanged}. Sampled from the "
        f"pairs whose prompt and longer answer fit in {config.max_length} tokens (so nothing is "
        f"truncated, in training or in the measurement); {dropped} pairs with an empty answer were "
        f"left out.\n\n{before_after_table(run)}\n\n"
        f"![rewards during training](results/real-dpo/rewards.png)\n"
    )
    return [page(context, "real-dpo", "DPO on SmolLM2-135M-Instruct", body, started)]


INSTRUCT_EPOCHS, INSTRUCT_LEARNING_RATE = 2, 5e-4


def part_instruct(context: Context) -> list[Path]:
    """LoRA instruction tuning on the generated tasks:
    exact match of greedy answers before and after.

    Args:
        context: where the real data is, where pages and resumable work go, and how to run.

    Returns:
        The page written.
    """
    started = time.perf_counter()
    n_train, n_validation, n_test = context.sizes.instruct
    splits = generated_instructions(n_train, n_validation, n_test)
    store = context.store("instruct")

    def run() -> dict[str, Any]:
        config = TrainConfig(
            epochs=INSTRUCT_EPOCHS,
            batch_size=16,
            learning_rate=INSTRUCT_LEARNING_RATE,
            device=context.device,
            progress=context.progress,
        )
        result = instruct_tune(splits, "lora", context.model, config)
        return {
            "untrained": {k: result.untrained[k] for k in ("loss", "accuracy", "per_task")},
            "best": {k: result.best[k] for k in ("loss", "accuracy", "per_task")},
            "trainable": result.trainable,
            "seconds": result.training.seconds,
            "rows": result.rows(),
        }

    done = store.get("lora", run)
    body = (
        f"`{context.model}` with peft LoRA (r={INSTRUCT.r}, alpha {INSTRUCT.alpha:g}, every "
        f"projection; {done['trainable']:,} trainable, the embedding frozen), {INSTRUCT_EPOCHS} "
        f"epochs at {INSTRUCT_LEARNING_RATE:g}, batch 16, on {n_train} generated examples (loss on "
        f"the response only); {n_test} test examples, greedy answers, {done['seconds'] / 60:.1f} "
        f"min of training.\n\n{markdown_table(instruct_rows(done['untrained'], done['best']))}\n"
        f"{markdown_table(done['rows'])}"
    )
    return [
        page(
            context,
            "real-instruct",
            "Instruction tuning SmolLM2-135M-Instruct",
            body,
            started,
        )
    ]


CLASS_SETS = (  # (dataset, folder, files: train, validation, test)
    ("rte", "rte", ("train.tsv", None, "dev.tsv")),
    ("emotion", "emotion", ("train.jsonl", "validation.jsonl", "test.jsonl")),
)
CLASSES_EPOCHS, CLASSES_LEARNING_RATE = 2, 5e-4


def part_classes(context: Context) -> list[Path]:
    """LoRA classifiers on sentence pairs
    (RTE, eos-free pair encoding) and six classes (emotion).

    Args:
        context: where the real data is, where pages and resumable work go, and how to run.

    Returns:
        The page written.

    Raises:
        CourseError: if `--data-dir` lacks a data set's training file.
    """
    started = time.perf_counter()
    store = context.store("classes")
    sections = []
    for name, folder, files in CLASS_SETS:
        paths = [context.data_dir / folder / f if f else None for f in files]
        if not paths[0].is_file():
            raise CourseError(
                f"no {name} data in {paths[0].parent}: pass "
                f"--data-dir, the folder holding {folder}/"
            )
        data = load_classification_data(
            name, train_file=paths[0], validation_file=paths[1], test_file=paths[2]
        )
        data = subsample(data, context.sizes.classes)

        def run(data=data) -> dict[str, Any]:
            config = TrainConfig(
                epochs=CLASSES_EPOCHS,
                batch_size=16,
                learning_rate=CLASSES_LEARNING_RATE,
                device=context.device,
                progress=context.progress,
            )
            result = finetune(data, "lora", context.model, config, 128, r=8, alpha=16)
            return {
                "untrained": result.untrained,
                "best": result.best,
                "trainable": result.trainable,
                "seconds": result.training.seconds,
                "confusion": confusion(
                    data.splits["test"]["label"], result.predictions, data.num_labels
                ),
            }

        done = store.get(name, run)
        rows = [
            result_row("untrained", 0, done["untrained"], 0.0),
            result_row("LoRA (peft)", done["trainable"], done["best"], done["seconds"]),
        ]
        split = ", ".join(f"{len(data.splits[s])} {s}" for s in ("train", "validation", "test"))
        sections.append(
            f"**{name}** ({split}; {data.num_labels} labels):\n\n{markdown_table(rows)}\n"
            f"Confusion matrix of the test split (rows: true label):\n\n"
            f"{markdown_table(confusion_rows(done['confusion'], data.label_names))}"
        )
    body = (
        f"`{context.model}` with a new classification head and peft LoRA (r=8, alpha 16, the "
        f"default targets), {CLASSES_EPOCHS} epochs at {CLASSES_LEARNING_RATE:g}, batch 16, texts "
        "cut at 128 tokens (a pair: the premise is cut first); "
        "test accuracy and weighted F1 at the best validation.\n\n" + "\n".join(sections)
    )
    return [
        page(
            context,
            "real-classes",
            "Sentence pairs and six classes on SmolLM2-135M-Instruct",
            body,
            started,
        )
    ]


TOPICS_FOLDER = "twitter_financial_news_topic"
SEED_TOPICS = "about 89.1% accuracy and weighted F1 (GPT-2 small, LoRA, the whole training set)"


def part_topics(context: Context) -> list[Path]:
    """The financial-news seed on SmolLM2: head, LoRA, merged LoRA and QLoRA on the 20 topics
    of finance tweets, the fine-tuning part's recipes, and LoRA's confusion matrix.

    Args:
        context: where the real data is, where pages and resumable work go, and how to run.

    Returns:
        The page written.

    Raises:
        CourseError: if `--data-dir` lacks the tweets' training file.
    """
    started = time.perf_counter()
    folder = context.data_dir / TOPICS_FOLDER
    if not (folder / "new_data_train.csv").is_file():
        raise CourseError(
            f"no finance tweets in {folder}: pass --data-dir, the folder holding {TOPICS_FOLDER}/"
        )
    data = load_classification_data(
        "twitter-financial-news-topic",
        train_file=folder / "new_data_train.csv",
        test_file=folder / "new_data_test.csv",
    )
    data = subsample(data, context.sizes.topics)
    store = context.store("topics")
    rows = train_methods(context, data, store, "topic methods", with_confusion=True)
    split = ", ".join(f"{len(data.splits[s])} {s}" for s in ("train", "validation", "test"))
    lora = store.results["lora"]["confusion"]
    body = (
        f"`{context.model}` with a new 20-way classification head, the finance tweets of "
        f"Twitter Financial News Topic ({split}; a seeded sample, validation carved from train, "
        "the hub's validation split as the test), batch 16, texts cut at 128 tokens, the "
        "fine-tuning part's recipes; test accuracy and weighted F1 at the best-validation "
        f"checkpoint. The seed project reported {SEED_TOPICS}.\n\n{markdown_table(rows)}\n"
        "LoRA's confusion matrix on the test split (rows: true topic):\n\n"
        f"{markdown_table(confusion_rows(lora, data.label_names))}"
    )
    title = "The 20-topic financial-news seed on SmolLM2-135M-Instruct"
    return [page(context, "real-topics", title, body, started)]


def imdb_reviews(context: Context, n: int, seed: int = 0) -> list[str]:
    """`n` IMDB test reviews (a seeded sample): natural English that is not Rotten Tomatoes.

    Args:
        context: where the real data is.
        n: how many reviews.
        seed: seeds the sample.

    Raises:
        CourseError: if `--data-dir` holds no `imdb/test.jsonl.gz`.
    """
    path = context.data_dir / "imdb" / "test.jsonl.gz"
    if not path.is_file():
        raise CourseError(f"no IMDB reviews at {path}: pass --data-dir, the folder holding imdb/")
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        texts = [json.loads(line)["text"] for line in lines if line.strip()]
    return [texts[i] for i in random.Random(seed).sample(range(len(texts)), min(n, len(texts)))]


def part_compare(context: Context) -> list[Path]:
    """The PEFT family on SmolLM2 and Rotten Tomatoes at about 1% of the parameters: the
    embedded comparison's search and cells (`peft_course.compare.compare`), one seed, one epoch,
    the training batches run in pieces of at most 1,024 tokens (the same gradient, less padding).

    Args:
        context: where the real data is, where pages and resumable work go, and how to run.

    Returns:
        The page written.
    """
    started = time.perf_counter()
    sizes = context.sizes
    data = rotten_tomatoes(context, sizes.compare)
    loop = {"batch_size": 16, "max_tokens_per_batch": 1024, "device": context.device}
    result = compare(
        data,
        methods=sizes.compare_methods,
        shares=(0.01,),
        seeds=(0,),
        output=context.work / f"{context.model}-{context.scale}" / "compare",
        model_name=context.model,
        max_length=128,
        max_epochs=1,
        search_examples=sizes.compare_search,
        rate_factors=sizes.compare_rate_factors,
        general=imdb_reviews(context, sizes.general),
        fresh=context.fresh,
        progress=context.progress,
        loop=loop,
    )
    directory = context.results / "real-compare"
    directory.mkdir(parents=True, exist_ok=True)
    plot_pareto(result, directory / "pareto.png", f"the PEFT family on {context.model}")
    split = ", ".join(f"{len(data.splits[s])} {s}" for s in ("train", "validation", "test"))
    factors = ", ".join(f"{f:.3g}" for f in sizes.compare_rate_factors)
    body = (
        f"`{context.model}` with a new classification head, Rotten Tomatoes ({split}; a seeded "
        f"sample), every method at the size nearest 1% of the model's parameters (a method "
        "without a size knob at its own size), 1 epoch, batch 16 in pieces of at most 1,024 "
        "tokens, texts cut at 128 tokens, seed 0. Each learning rate is the best of the "
        f"method's registry rate times {factors}, by validation accuracy after training on "
        f"{sizes.compare_search} rows; the test accuracy is of the best-validation checkpoint. "
        "*forgetting*: the rise of the LM loss (nats a token, through the tied embedding) on "
        f"{sizes.general} IMDB reviews; tokens/s and peak RSS measured on this machine.\n\n"
        f"{markdown_table(compare_rows(result))}\n\n"
        f"Learning-rate search (validation accuracy):\n\n{markdown_table(search_rows(result))}\n\n"
        "![accuracy against trainable parameters](results/real-compare/pareto.png)\n"
    )
    return [
        page(context, "real-compare", "The PEFT family on SmolLM2-135M-Instruct", body, started)
    ]


def hh_pairs(context: Context, sizes: tuple[int | None, int | None], max_length: int) -> Any:
    """Seeded samples of the HH helpful-base pairs whose prompt and longer answer fit in
    `max_length` tokens (nothing truncated), and how many pairs with an empty answer were left out.

    Args:
        context: where the real data is.
        sizes: train pairs, held-out pairs (None: all).
        max_length: the most tokens of a prompt with either answer.
    """
    folder = context.data_dir / "hh_rlhf_dpo"
    tokenizer = load_tokenizer(context.model)
    pairs, dropped = {}, 0
    for split, file, n in (
        ("train", "train.jsonl", sizes[0]),
        ("test", "validation.jsonl", sizes[1]),
    ):
        rows, empty = usable_pairs(folder / file)
        fits = rows.filter(lambda pair: fits_in(tokenizer, pair, max_length))
        dropped += empty
        pairs[split] = fits.shuffle(seed=0).select(range(min(n or len(fits), len(fits))))
    return pairs, dropped


def align_run_of(record: dict[str, Any]) -> AlignRun:
    """An `AlignRun` back from its stored `as_dict()` (without the model)."""
    fields = {k: v for k, v in record.items() if k != "trainer"}
    return AlignRun(
        **{
            **fields,
            "config": DPORunConfig(**fields["config"]),
            "settings": LossSettings(**fields["settings"]),
        }
    )


def part_preference(context: Context) -> list[Path]:
    """The preference losses side by side on HH helpful-base pairs with LoRA (each through its
    TRL trainer, the same pairs and steps), then a reward model beside DPO's implicit reward.

    Args:
        context: where the real data is, where pages and resumable work go, and how to run.

    Returns:
        The page written.
    """
    started = time.perf_counter()
    # a higher learning rate than `real-dpo`'s: these runs take fewer steps
    config = replace(HH_DPO, learning_rate=3e-4, logging_steps=2, progress=context.progress)
    pairs, dropped = hh_pairs(context, context.sizes.preference, config.max_length)
    store = context.store("preference")
    start = None  # the starting model's scores and lengths, measured by the first loss trained

    def train(name: str) -> dict[str, Any]:
        nonlocal start
        run = train_preference(name, pairs, context.model, config, start=start)
        start = run.start
        return run.as_dict()

    for name in tqdm(context.sizes.preference_losses, desc="losses", disable=not context.progress):
        store.get(name, lambda name=name: train(name))
    runs = [align_run_of(store.results[name]) for name in context.sizes.preference_losses]
    dpo = next((run for run in runs if run.loss == "dpo"), None)
    reward = store.get(
        "reward-model", lambda: train_reward_model(pairs, context.model, config, dpo).as_dict()
    )
    directory = context.results / "real-preference"
    directory.mkdir(parents=True, exist_ok=True)
    plot_histories(runs, directory / "histories.png", f"HH pairs, {context.model}, LoRA")
    reward_run = RewardModelRun(**{k: v for k, v in reward.items() if k != "trainer"})
    reward_run.config = config
    body = (
        f"`{context.model}` + LoRA (r=16, alpha 32) trained by each loss's TRL trainer on the same "
        f"{len(pairs['train'])} Anthropic HH helpful-base pairs (a seeded sample of those whose "
        f"prompt and longer answer fit in {config.max_length} tokens; {dropped} pairs with an "
        f"empty answer left out), 1 epoch, batch 4, learning rate {config.learning_rate:g}, "
        f"beta {config.beta:g} (the losses' other parameters: `LossSettings()`); measured on "
        f"{len(pairs['test'])} held-out pairs before -> after. *reward accuracy*: the implicit "
        "reward beta·(log π − log π_ref) of the chosen answer is higher; the KL to the reference "
        "is estimated on completions sampled from the held-out prompts; response length: greedy "
        "responses of up to 24 tokens.\n\n"
        f"{markdown_table(side_by_side_rows(runs))}\n\n"
        "![reward margins during training](results/real-preference/histories.png)\n\n"
        "A reward model (`trl.RewardTrainer`: a scalar head on the same base, the same LoRA, "
        "pairs and steps) beside DPO's implicit reward, on the same held-out pairs:\n\n"
        f"{markdown_table(reward_model_rows(reward_run, 'HH helpful-base'))}\n"
    )
    title = "Preference losses side by side on SmolLM2-135M-Instruct"
    return [page(context, "real-preference", title, body, started)]


PARTS: dict[str, Callable[[Context], list[Path]]] = {  # page name: the part that writes it
    "real-prompting": part_prompting,
    "real-arithmetic": part_arithmetic,
    "real-ablation": part_ablation,
    "real-finetune": part_finetune,
    "real-dpo": part_dpo,
    "real-instruct": part_instruct,
    "real-classes": part_classes,
    "real-topics": part_topics,
    "real-compare": part_compare,
    "real-preference": part_preference,
}
