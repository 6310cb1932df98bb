"""What each `peft-course` subcommand does, once its arguments are parsed.

`peft_course.cli` builds the parser and imports this module only after parsing, so `--help`
and a mistyped option cost no torch import. Each `command_<name>` is a thin layer over a
chapter function, so what the command prints is what a learner gets by calling that function.
`check_arguments` checks every option's range before any command does work.
"""

from __future__ import annotations

import argparse
from argparse import Namespace
from dataclasses import asdict, replace
from pathlib import Path

from peft_course.ablation import (
    FULL_LEARNING_RATE,
    LORA_LEARNING_RATE,
    QUICK,
    SEED_ALPHAS,
    SEED_RANKS,
    CellConfig,
    Settings,
    alpha_sweep,
    full_cell,
    parameter_sweep,
    prompt_sweep,
    rank_sweep,
    run_sweep,
    table_rows,
    write_sweep,
)
from peft_course.counting import count_method, format_method_count
from peft_course.data import check_label_names, load_classification_data
from peft_course.demo import (
    ablation_results,
    demo_rows,
    real_model_rows,
    tuning_results,
    tuning_rows,
)
from peft_course.dpo import (
    DPORunConfig,
    before_after_table,
    film_preferences,
    load_preference_jsonl,
    save_dpo_run,
    split_pairs,
    train_dpo,
)
from peft_course.errors import (
    CourseError,
    check_distinct,
    check_int,
    check_number,
    check_positive_int,
    check_positive_number,
)
from peft_course.files import atomic_write_text, check_output_directory
from peft_course.finetune import check_method_options, finetune, get_method, lora_training_rows
from peft_course.lm_classification import TEMPLATES
from peft_course.lora import equivalence_rows
from peft_course.models import check_max_length, context_length, load_tokenizer, model_config
from peft_course.prompting import (
    DEFAULT_STRATEGIES,
    build_prompt,
    evaluate_prompting,
    example_pool,
    get_strategy,
    load_generate,
    load_problem_set,
)
from peft_course.qlora import require_4bit
from peft_course.decoding import decoding_options, gpt2_generation_rows
from peft_course.gpt2 import from_pretrained, gpt2_count_rows, gpt2_parity_rows
from peft_course.instruct import instruct_rows, instruct_tune, load_instructions
from peft_course.runs import (
    RunSpec,
    check_resume,
    check_run_directory,
    check_texts_to_classify,
    load_run,
    predict_texts,
    save_run,
    start_run,
)
from peft_course import distributed, smollm2
from peft_course.settings import ABLATION, EMBEDDED_MODEL, INSTRUCT
from peft_course.system import check_device, provenance, system_info
from peft_course.tables import markdown_table, write_table
from peft_course.training import TrainConfig, check_checkpoint
from peft_course.word_problems import load_gsm8k_jsonl


def data_from_arguments(args: argparse.Namespace):
    """Load the classification data the data arguments describe.

    Args:
        args: the parsed command line of a command with the data options (`--dataset`,
            `--train-file`, ...).

    Raises:
        CourseError: if `--validation-file` or `--test-file` is given without `--train-file`.
    """
    for option, value in (
        ("--validation-file", args.validation_file),
        ("--test-file", args.test_file),
    ):
        if value is not None and args.train_file is None:
            raise CourseError(
                f"{option} needs --train-file: local validation and test files go with a local "
                f"training file (without one, {args.dataset} would be used and {option} ignored)"
            )
    return load_classification_data(
        args.dataset,
        train_file=args.train_file,
        validation_file=args.validation_file,
        test_file=args.test_file,
        text_column=args.text_column,
        text_pair_column=args.text_pair_column,
        label_column=args.label_column,
        label_names=args.label_names,
        max_examples=args.max_examples,
        seed=args.seed,
    )


# `prepare`'s keyword -> how it is read off the parsed arguments, where the two differ
OPTION_ARGUMENTS = {
    "use_rslora": lambda args: args.rslora,
    "gradient_checkpointing": lambda args: not args.no_gradient_checkpointing,
}


def method_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of the chosen method's `prepare`: the options it declares (see
    `peft_course.settings.METHOD_OPTIONS`), read off the command line.

    An option left unset (None) is left out, so the method's own default applies, and an option
    with no command-line form (`trainable`) is for Python callers only.

    Args:
        args: the parsed command line of `peft-course finetune`.
    """
    options = {}
    for name in get_method(args.method).options:
        value = (
            OPTION_ARGUMENTS[name](args) if name in OPTION_ARGUMENTS else getattr(args, name, None)
        )
        if value is not None:
            options[name] = value
    return options


def finetune_output(args: argparse.Namespace) -> Path:
    """`--output`, or `runs/<method>-<dataset>`
    (the training file's stem in place of the dataset).

    Args:
        args: the parsed command line of `peft-course finetune`.
    """
    if args.output is not None:
        return args.output
    return (
        Path("runs")
        / f"{args.method}-{Path(args.train_file).stem if args.train_file else args.dataset}"
    )


def smollm2_status() -> str:
    """Whether the real language model is installed and converted, and what to do if not."""
    if not smollm2.is_installed():
        return f"not installed ({smollm2.INSTALL})"
    if smollm2.is_converted():
        return f"installed, converted: {smollm2.smollm2_directory()}"
    return "installed; converted to safetensors on first use (about 30 s)"


def command_info(args: argparse.Namespace) -> None:
    """Library versions, devices, 4-bit support, and whether `smollm2-135m` is ready.

    Args:
        args: the parsed command line of `peft-course info`.
    """
    for key, value in {**system_info(), smollm2.SMOLLM2: smollm2_status()}.items():
        print(f"{key:>22}: {value}")


def command_demo(args: argparse.Namespace) -> None:
    """The results table of every method, the quick ablation tables, and the real-model glimpse.

    Args:
        args: the parsed command line of `peft-course demo`.
    """
    data = data_from_arguments(args)
    rows = demo_rows(data, args.model, args.seed, args.max_length, progress=not args.no_progress)
    path = write_table(rows, args.output, note=provenance("peft-course demo"))
    print(f"\n{data.name} with {args.model} (test split, best-validation checkpoint)\n")
    print(markdown_table(rows))
    print(f"saved: {path} and {path.with_suffix('.csv')}")
    demo_ablation(args)
    if not args.no_tuning and args.model == EMBEDDED_MODEL:
        demo_tuning(args)
    if not args.no_real_model:
        demo_real_model(args.output)


def demo_tuning(args: argparse.Namespace) -> None:
    """Instruction tuning, entailment and six classes on the embedded model: untrained vs full.

    Args:
        args: the parsed command line of `peft-course demo`.
    """
    rows = tuning_rows(tuning_results(args.seed, progress=not args.no_progress))
    path = write_table(rows, args.output, "tuning", note=provenance("peft-course demo"))
    print(
        f"\nBeyond binary sentiment: {args.model}, untrained and fully fine-tuned (test splits)\n"
    )
    print(markdown_table(rows))
    print(f"saved: {path}")


def demo_ablation(args: argparse.Namespace) -> None:
    """The rank, alpha and prompt tables at `--quick` size, on the embedded model only.

    Args:
        args: the parsed command line of `peft-course demo`.
    """
    if args.model != EMBEDDED_MODEL:
        print(
            "\nThe ablation tables run on the embedded model only; for another model use "
            "`peft-course ablate` with that model's learning rates (see docs/ablation.md)."
        )
        return
    size = min(args.max_examples or QUICK["max_examples"], QUICK["max_examples"])
    quick = data_from_arguments(Namespace(**{**vars(args), "max_examples": size}))
    try:
        results = ablation_results(
            quick, args.model, args.output / "ablation", progress=not args.no_progress
        )
    except CourseError as error:  # pairs, or label words the tokenizer can't tell apart
        print(f"\nThe ablation tables were skipped for {quick.name}: {error}")
        return
    for result in results:
        print(
            f"\nAblation, {result.sweep.name}: {args.model} on {quick.name} ({size} rows a split, "
            f"{QUICK['epochs']} epochs), classified through the LM head; beside it the seed "
            "project's figures (GPT-2 small, Rotten Tomatoes, strict match)\n"
        )
        print(markdown_table(table_rows(result)))
    print(
        f"saved: {args.output / 'ablation'} (rank, alpha and prompt tables, .md/.csv/-val-loss.png)"
    )


def demo_real_model(output: Path) -> None:
    """The demo's last table:
    SmolLM2 classifying generated reviews with no training, if installed.

    Args:
        output: the directory the table is saved in.
    """
    if not smollm2.is_installed():
        print(f"\nThe real-model table needs {smollm2.SMOLLM2}: {smollm2.INSTALL}")
        return
    rows = real_model_rows()
    path = write_table(rows, output, "real-model", note=provenance("peft-course demo"))
    print(
        f"\nA real pretrained LM, no training: {smollm2.SMOLLM2} prompted on 100 generated test "
        "reviews (`Review: <text>\\nSentiment:`, 0 or 4 solved examples before it)\n"
    )
    print(markdown_table(rows))
    print(f"saved: {path}")


def command_finetune(args: argparse.Namespace) -> None:
    """Train one method on one dataset and save the run (weights, metrics, plots, results row).

    Args:
        args: the parsed command line of `peft-course finetune`.
    """
    method = get_method(args.method)
    output = check_run_directory(
        finetune_output(args), args.overwrite, args.resume
    )  # nothing written yet
    options = method_options(args)
    check_method_options(args.method, options)
    if args.method == "qlora":
        require_4bit(args.device)  # says what to install before any data or model is loaded
    data = data_from_arguments(args)
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=method.learning_rate if args.learning_rate is None else args.learning_rate,
        weight_decay=args.weight_decay,
        eval_every=args.eval_every,
        group_by_length=args.group_by_length,
        max_tokens_per_batch=args.max_tokens_per_batch,
        compile=args.compile,
        fsdp=args.fsdp,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    spec = RunSpec(
        args.model,
        args.method,
        data.label_names,
        data.name,
        options,
        args.max_length,
        args.seed,
        {k: v for k, v in asdict(config).items() if k != "progress"},
    )
    if args.resume and (output / "checkpoint" / "state.json").is_file():
        check_resume(output, spec)
        check_checkpoint(output / "checkpoint")
    main = distributed.is_main()  # under torchrun, one process writes and prints
    if main:
        start_run(output, spec)
    result = finetune(
        data,
        args.method,
        args.model,
        config,
        args.max_length,
        output / "checkpoint",
        args.resume,
        **options,
    )
    if not main:
        return
    save_run(output, result, spec, data)
    print((output / "results.md").read_text())
    print(
        f"best validation (step {result.training.best_step}): test accuracy "
        f"{result.best['accuracy']:.4f}, weighted F1 {result.best['f1']:.4f}; "
        f"last iteration: {result.last['accuracy']:.4f}"
    )
    print(f"saved: {output}")


def command_predict(args: argparse.Namespace) -> None:
    """Label texts with a saved run's model, with each label's probability.

    Args:
        args: the parsed command line of `peft-course predict`.
    """
    check_texts_to_classify(args.texts)  # before the model loads
    model, tokenizer, spec = load_run(args.run)
    for row in predict_texts(model, tokenizer, args.texts, spec.max_length):
        probabilities = ", ".join(f"{k}={v:.3f}" for k, v in row["probabilities"].items())
        print(f"{row['label']}\t({probabilities})\t{row['text']}")


def command_count(args: argparse.Namespace) -> None:
    """Print what a method trains: trainable and total parameters, and the formula's count.

    Args:
        args: the parsed command line of `peft-course count`.
    """
    result = count_method(
        args.method, args.model, rank=args.r, targets=args.targets, labels=args.labels
    )
    print(format_method_count(result))


def command_lora(args: argparse.Namespace) -> None:
    """LoRA from scratch against peft on the same weights, then both trained side by side.

    Args:
        args: the parsed command line of `peft-course lora`.
    """
    equivalence = equivalence_rows(args.seed)
    print("\nLoRA from scratch vs peft: largest absolute differences (same A, B and head)\n")
    print(markdown_table(equivalence))
    data = load_classification_data("synthetic-sentiment", seed=args.seed)
    training = lora_training_rows(
        data,
        args.model,
        args.seed,
        args.epochs,
        args.learning_rate,
        args.r,
        args.alpha,
        progress=not args.no_progress,
    )
    print(
        f"\n{data.name} with {args.model}, {args.epochs} epochs at lr {args.learning_rate:g} "
        f"(test split, best-validation checkpoint)\n"
    )
    print(markdown_table(training))
    for rows, stem in ((equivalence, "equivalence"), (training, "training")):
        path = write_table(rows, args.output, stem)
        print(f"saved: {path} and {path.with_suffix('.csv')}")


def command_gpt2(args: argparse.Namespace) -> None:
    """GPT-2 from scratch: parity with transformers,
    LoRA counts and continuations decoded by hand.

    Args:
        args: the parsed command line of `peft-course gpt2`.
    """
    check_distinct("--strategy", args.strategy)
    for strategy in args.strategy:  # every setting is checked before anything loads
        decoding_options(strategy, args.temperature, args.top_k, args.top_p)
    model = from_pretrained(args.model, seed=args.seed).eval()
    tokenizer = load_tokenizer(args.model, args.seed)
    if not args.no_check:
        print(f"\nThe from-scratch GPT-2 against transformers on the weights of {args.model}\n")
        print(markdown_table(gpt2_parity_rows(args.model, args.seed)))
    print("\nGPT-2 small with LoRA built in: what trains\n")
    print(markdown_table(gpt2_count_rows()))
    rows = gpt2_generation_rows(
        model,
        tokenizer,
        args.prompt,
        args.max_new_tokens,
        args.seed,
        tuple(args.strategy),
        args.temperature,
        args.top_k,
        args.top_p,
    )
    print(f"\n{args.model} continues {args.prompt!r} (KV cache, seed {args.seed})\n")
    print(markdown_table(rows))


def command_instruct(args: argparse.Namespace) -> None:
    """Instruction tuning with the loss on the response only; exact match before and after.

    Args:
        args: the parsed command line of `peft-course instruct`.
    """
    columns = {
        "instruction": args.instruction_column,
        "context": args.context_column,
        "response": args.response_column,
    }
    check_output_directory(args.output)
    splits = load_instructions(args.data, args.seed, args.max_examples, columns)
    rate = (
        args.learning_rate
        if args.learning_rate is not None
        else INSTRUCT.learning_rates[args.method]
    )
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=rate,
        seed=args.seed,
        progress=not args.no_progress,
    )
    result = instruct_tune(
        splits,
        args.method,
        args.model,
        config,
        args.max_length,
        args.r,
        args.alpha,
        args.targets,
        args.train_embeddings,
    )
    if not distributed.is_main():  # under torchrun, one process writes and prints
        return
    label = args.method + (
        " + embeddings" if args.train_embeddings and args.method == "lora" else ""
    )
    scores = markdown_table(instruct_rows(result.untrained, result.best, label))
    answers = markdown_table(result.rows())
    print(
        f"\n{args.data} with {args.model}, {label}: {result.trainable:,} trainable, {args.epochs} "
        f"epochs at {rate:g} (test split, best validation)\n"
    )
    print(scores)
    print(answers)
    for text, stem in ((scores, "results"), (answers, "answers")):
        path = atomic_write_text(args.output / f"{stem}.md", text)
        print(f"saved: {path}")


def command_prompt(args: argparse.Namespace) -> None:
    """Prompt a language model on word problems: direct, few-shot and chain-of-thought.

    Args:
        args: the parsed command line of `peft-course prompt`.
    """
    # every input is read and checked before the model runs;
    # the outputs are replaced only at the end
    strategies = [get_strategy(name).name for name in args.strategy or DEFAULT_STRATEGIES]
    check_distinct("--strategy", strategies)
    problems = load_problem_set(args.problems, args.n_problems, args.seed)
    examples = (
        load_gsm8k_jsonl(args.examples, limit=args.shots or None)
        if args.examples
        else example_pool(problems, args.shots, args.seed)
    )
    for (
        name
    ) in strategies:  # a prompt each strategy cannot build (--shots 0 with few-shot) fails here
        build_prompt(name, problems[0].question, examples, args.shots)
    generate = load_generate(
        args.model,
        seed=args.seed,
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        top_p=args.top_p,
        chat=args.chat,
    )
    log_path = args.output / "completions.jsonl"
    result = evaluate_prompting(
        generate, problems, strategies, examples, args.shots, log_path=log_path
    )
    decoding = f"sampled (T={args.temperature}, top-p={args.top_p})" if args.sample else "greedy"
    print(
        f"\n{len(problems)} problems from {args.problems}, "
        f"{args.model}, {decoding}, k={args.shots}\n"
    )
    print(result.table())
    if generate.truncated:
        print(
            f"note: {generate.truncated} prompt(s) were longer "
            "than the context and lost their first tokens"
        )
    atomic_write_text(args.output / "results.md", result.table())
    print(f"saved: {log_path} (every prompt and completion) and {args.output / 'results.md'}")


def command_dpo(args: argparse.Namespace) -> None:
    """Direct Preference Optimization through trl, with the before/after preference table.

    Args:
        args: the parsed command line of `peft-course dpo`.
    """
    if args.train_file:
        pairs = split_pairs(load_preference_jsonl(args.train_file), args.test_fraction, args.seed)
        source = args.train_file
    else:
        pairs = film_preferences(args.n_train, args.n_test, args.seed, prefer=args.prefer)
        source = f"generated film pairs (prefer {args.prefer})"
    config = DPORunConfig(
        beta=args.beta,
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lora=args.lora,
        r=args.r,
        alpha=args.alpha,
        seed=args.seed,
    )
    run = train_dpo(pairs, args.model, config)
    print(
        f"\nDPO on {source}: {len(pairs['train'])} train / {len(pairs['test'])} held-out pairs, "
        f"{args.model}, {'LoRA' if args.lora else 'full'}, beta {args.beta:g}, lr "
        f"{args.learning_rate:g}, {run.seconds:.1f} s\n"
    )
    print(before_after_table(run))
    print(f"\nreference unchanged: {run.reference_unchanged}")
    metrics, plot = save_dpo_run(
        run, args.output, f"DPO, {'LoRA' if args.lora else 'full'}, beta {args.beta:g}"
    )
    print(f"saved: {metrics} and {plot}")


def numbers(values: list[str], kind: type, option: str) -> list:
    """`values` read as `kind` (int or float), or an error naming the option.

    Args:
        values: the values as typed.
        kind: `int` or `float`.
        option: the option they were given to, for the message.

    Raises:
        CourseError: if a value is not a number of that kind.
    """
    try:
        return [kind(v) for v in values]
    except ValueError:
        kinds = {int: "whole numbers", float: "numbers"}
        raise CourseError(
            f"{option} must be {kinds.get(kind, kind.__name__)}, got {' '.join(values)}"
        ) from None


def check_distinct_values(option: str, given: list[str], values: list) -> list:
    """`values` (what `given` means) unless two of them are one: `64` and `64.0` are one alpha.

    Compared after conversion, so a repeated cell is refused rather than shown as two rows.

    Args:
        option: the option the values were given to, for the message.
        given: the values as typed.
        values: what they mean (converted), in the same order.

    Raises:
        CourseError: if two of `values` are equal.
    """
    for j, value in enumerate(values):
        if value in values[:j]:
            i = values.index(value)
            both = (
                f"{given[i]!r} and {given[j]!r}" if given[i] != given[j] else f"{given[i]!r}, twice"
            )
            raise CourseError(
                f"{option} gives the same value twice ({both}): one cell would show as two rows"
            )
    return values


def sweep_from_arguments(args: argparse.Namespace):
    """The sweep `peft-course ablate NAME` asks for, with `--values` replacing the seed's grid.

    Args:
        args: the parsed command line of `peft-course ablate`.

    Raises:
        CourseError: if a sweep other than rank, alpha or prompt is given no `--values`.
    """

    if args.r is not None:
        r = args.r
    else:
        r = ABLATION.prompt_r if args.sweep == "prompt" else ABLATION.r
    alpha = ABLATION.alpha_ratio * r if args.alpha is None else args.alpha
    learning_rate = LORA_LEARNING_RATE if args.learning_rate is None else args.learning_rate
    full_learning_rate = (
        FULL_LEARNING_RATE if args.full_learning_rate is None else args.full_learning_rate
    )
    base = CellConfig(
        r=r,
        alpha=alpha,
        dropout=args.dropout,
        learning_rate=learning_rate,
        targets=tuple(args.targets) if args.targets else None,
        template=args.template,
    )
    full = full_cell(base, full_learning_rate, args.dropout)
    values = args.values
    if args.sweep == "prompt":
        return prompt_sweep(
            check_distinct_values("--values", values, values) if values else tuple(TEMPLATES),
            r,
            alpha,
            base,
        )
    if args.sweep == "rank":
        ranks = (
            check_distinct_values("--values", values, numbers(values, int, "--values"))
            if values
            else None
        )
        sweep = rank_sweep(ranks or SEED_RANKS, args.alpha_ratio, base, full)
    elif args.sweep == "alpha":
        alphas = (
            check_distinct_values("--values", values, numbers(values, float, "--values"))
            if values
            else None
        )
        sweep = alpha_sweep(alphas or SEED_ALPHAS, r, base, full)
    elif not values:
        raise CourseError(f"sweeping {args.sweep} needs --values")
    elif (
        args.sweep == "targets"
    ):  # each value is one comma-separated list of modules; order does not matter
        lists = [[m.strip() for m in v.split(",") if m.strip()] for v in values]
        check_distinct_values("--values", values, [sorted(modules) for modules in lists])
        sweep = parameter_sweep("targets", lists, base, full)
    else:
        grid = check_distinct_values("--values", values, numbers(values, float, "--values"))
        sweep = parameter_sweep(args.sweep.replace("-", "_"), grid, base, full)
    return replace(sweep, cells=sweep.cells[:-1]) if args.no_full else sweep


def command_ablate(args: argparse.Namespace) -> None:
    """Run an ablation sweep
    (rank, alpha, prompt template or the full table) and save its tables.

    Args:
        args: the parsed command line of `peft-course ablate`.
    """
    if args.quick:
        args.max_examples = args.max_examples or QUICK["max_examples"]
        args.epochs = QUICK["epochs"] if args.epochs is None else args.epochs
    sweep = sweep_from_arguments(args)
    data = data_from_arguments(args)
    settings = Settings(
        model=args.model,
        epochs=Settings.epochs if args.epochs is None else args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        cue=args.cue.replace("\\n", "\n"),
        label_words=tuple(args.label_words) if args.label_words else None,
        device=args.device,
        progress=not args.no_progress,
    )
    result = run_sweep(sweep, data, settings, args.seeds, args.output, fresh=args.fresh)
    if not distributed.is_main():  # under torchrun, one process writes the tables and prints
        return
    if result.reused:
        print(f"reused {len(result.reused)} finished cell(s): {', '.join(result.reused)}")
    paths = write_sweep(result, args.output, f"{sweep.name} sweep: {args.model} on {data.name}")
    seeds = (
        f"seeds {' '.join(map(str, args.seeds))} (mean ± sample std)"
        if len(args.seeds) > 1
        else f"seed {args.seeds[0]}"
    )
    print(
        f"\n{sweep.name} sweep: {args.model} on {data.name}, {settings.epochs} epochs, {seeds}; "
        "test accuracy (verbalizer and strict match; last iteration and best validation). The "
        "seed project's figures are GPT-2 small on Rotten Tomatoes, strict match.\n"
    )
    print(markdown_table(table_rows(result)))
    print("saved: " + ", ".join(str(p) for p in paths))


# What `check_arguments` checks, by argparse `dest`, wherever a command has the option.
POSITIVE_INTEGERS = (
    "epochs",
    "batch_size",
    "max_examples",
    "eval_every",
    "max_tokens_per_batch",
    "r",
    "n_problems",
    "max_new_tokens",
    "n_train",
    "n_test",
    "labels",
)
NON_NEGATIVE_INTEGERS = ("seed", "shots")
POSITIVE_NUMBERS = (
    "learning_rate",
    "full_learning_rate",
    "alpha",
    "alpha_ratio",
    "beta",
    "temperature",
)
INTERVALS = {  # dest: (low, high, low_open, high_open)
    "weight_decay": (0, None, False, False),
    "dropout": (0, 1, False, True),
    "test_fraction": (0, 1, True, True),
    "top_p": (0, 1, True, False),
}


def option_names(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """argparse `dest` -> the option a user types
    (`max_examples` -> `--max-examples`), for `command`.

    Args:
        parser: the `peft-course` parser, with its subcommands.
        command: the subcommand's name.
    """
    subparser = parser._subparsers._group_actions[0].choices[command]
    return {
        action.dest: max(action.option_strings, key=len)
        for action in subparser._actions
        if action.option_strings
    }


def check_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Check every option's range before a command does any work, naming the option as typed.

    argparse checks types (`--epochs abc`); the ranges are checked here, once for all commands:
    counts are positive, rates positive, probabilities in range, the device exists, `--output`
    can be written and `--max-length` fits the model. A command then fails in its first second,
    before it loads a model or writes a file, instead of after minutes of work or with a
    traceback from deep inside a library.

    Args:
        args: the parsed command line of any `peft-course` command.
        parser: the parser that parsed it (it knows how each option is typed).

    Raises:
        CourseError: if `--max-new-tokens` leaves no room for the prompt in the model's context.
    """
    names = option_names(parser, args.command)
    given = {
        dest: value for dest, value in vars(args).items() if dest in names and value is not None
    }
    for dest, value in given.items():
        option = names[dest]
        if dest in POSITIVE_INTEGERS:
            check_positive_int(option, value)
        elif dest in NON_NEGATIVE_INTEGERS:
            check_int(option, value, minimum=0)
        elif dest in POSITIVE_NUMBERS:
            check_positive_number(option, value)
        elif dest in INTERVALS:
            check_number(option, value, *INTERVALS[dest])
    for seed in given.get("seeds", []):
        check_int("--seeds", seed, minimum=0)
    check_distinct("--seeds", given.get("seeds", []))
    if "label_names" in given:
        check_label_names(given["label_names"], "--label-names")
    if "device" in given:
        check_device(given["device"])
    if "output" in given and args.command != "finetune":  # finetune checks its run directory itself
        check_output_directory(given["output"], "--output")
    if (
        "model" in given and args.command != "count"
    ):  # count's --model names an architecture, not a checkpoint
        model_config(
            given["model"]
        )  # a missing directory or an unreachable hub id fails here, not after work
    if "max_length" in given and "model" in given:
        check_max_length(given["max_length"], given["model"], "--max-length")
    if "max_new_tokens" in given and "model" in given:
        limit = context_length(given["model"])
        if limit is not None and given["max_new_tokens"] >= limit:
            raise CourseError(
                f"--max-new-tokens {given['max_new_tokens']} leaves no room for the prompt: the "
                f"model '{given['model']}' has {limit} positions; use fewer than {limit}"
            )


def interrupted_message(args: argparse.Namespace) -> str:
    """What Ctrl-C left behind, and how to continue: finetune resumes,
    ablate keeps finished cells.

    Args:
        args: the parsed command line of the interrupted command.
    """
    if args.command == "finetune":
        checkpoint = finetune_output(args) / "checkpoint"
        if (checkpoint / "state.json").is_file():
            return (
                f"interrupted; the last finished epoch is saved in {checkpoint}: rerun the same "
                "command with --resume to continue from it"
            )
        return (
            "interrupted before its first epoch finished, so there is no checkpoint yet: rerun the "
            "same command (--resume continues a run once an epoch has finished)"
        )
    if args.command == "ablate":
        return (
            f"interrupted; finished cells are kept in {args.output / 'cells'}: rerun the same "
            "command to continue (they are reused, and the "
            "interrupted cell resumes from its last finished epoch)"
        )
    return "interrupted"
