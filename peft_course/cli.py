"""The `peft-course` command: one subcommand per thing the course runs.

Each subcommand is a thin layer over a chapter function, so what the command prints is what
a learner gets by calling that function from Python.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peft_course.data import REGISTRY, load_classification_data
from peft_course.errors import (
    CourseError, check_distinct, check_int, check_number, check_positive_int, check_positive_number,
)
from peft_course.files import check_output_directory
from peft_course.models import DEFAULT_MODEL


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """`--model`: the embedded tiny-gpt2 by default, a local directory, or a hub id."""
    parser.add_argument("--model", default="tiny-gpt2",
                        help=f"tiny-gpt2 (embedded), a local checkpoint directory, or a hub id such as {DEFAULT_MODEL}")


def add_data_arguments(parser: argparse.ArgumentParser, default_dataset: str) -> None:
    """`--dataset` or local files, their column names, and subsampling."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=default_dataset,
                       help=f"a registered dataset ({', '.join(sorted(REGISTRY))}); default: %(default)s")
    group.add_argument("--train-file", help="local CSV/TSV/JSONL/Parquet training file (instead of the hub)")
    group.add_argument("--validation-file", help="local validation file, with --train-file (default: 10%% of train)")
    group.add_argument("--test-file", help="local test file, with --train-file (default: 10%% of train)")
    group.add_argument("--text-column", help="column holding the text")
    group.add_argument("--text-pair-column", help="column holding the second text of a pair")
    group.add_argument("--label-column", help="column holding the label")
    group.add_argument("--label-names", nargs="+", help="label names, in label-id order")
    group.add_argument("--max-examples", type=int, help="keep at most this many rows per split (seeded)")


def data_from_arguments(args: argparse.Namespace):
    """Load the classification data the data arguments describe."""
    for option, value in (("--validation-file", args.validation_file), ("--test-file", args.test_file)):
        if value is not None and args.train_file is None:
            raise CourseError(f"{option} needs --train-file: local validation and test files go with a local "
                              f"training file (without one, {args.dataset} would be used and {option} ignored)")
    return load_classification_data(
        args.dataset, train_file=args.train_file, validation_file=args.validation_file,
        test_file=args.test_file, text_column=args.text_column,
        text_pair_column=args.text_pair_column, label_column=args.label_column,
        label_names=args.label_names, max_examples=args.max_examples, seed=args.seed,
    )


def command_info(args: argparse.Namespace) -> None:
    from peft_course.system import system_info

    for key, value in system_info().items():
        print(f"{key:>22}: {value}")


def command_demo(args: argparse.Namespace) -> None:
    from peft_course.demo import demo_rows
    from peft_course.system import provenance
    from peft_course.tables import markdown_table, write_table

    data = data_from_arguments(args)
    rows = demo_rows(data, args.model, args.seed, args.max_length, progress=not args.no_progress)
    path = write_table(rows, args.output, note=provenance("peft-course demo"))
    print(f"\n{data.name} with {args.model} (test split, best-validation checkpoint)\n")
    print(markdown_table(rows))
    print(f"saved: {path} and {path.with_suffix('.csv')}")

    from argparse import Namespace

    from peft_course.ablation import QUICK, table_rows
    from peft_course.demo import ablation_results

    if args.model != "tiny-gpt2":
        print("\nThe ablation tables run on the embedded model only; for another model use `peft-course ablate` "
              "with that model's learning rates (see docs/ablation.md).")
        return
    size = min(args.max_examples or QUICK["max_examples"], QUICK["max_examples"])
    quick = data_from_arguments(Namespace(**{**vars(args), "max_examples": size}))
    try:
        results = ablation_results(quick, args.model, args.output / "ablation", progress=not args.no_progress)
    except CourseError as error:  # pairs, or label words the tokenizer can't tell apart
        print(f"\nThe ablation tables were skipped for {quick.name}: {error}")
        return
    for result in results:
        print(f"\nAblation, {result.sweep.name}: {args.model} on {quick.name} ({size} rows a split, "
              f"{QUICK['epochs']} epochs), classified through the LM head; beside it the seed project's "
              f"figures (GPT-2 small, Rotten Tomatoes, strict match)\n")
        print(markdown_table(table_rows(result)))
    print(f"saved: {args.output / 'ablation'} (rank, alpha and prompt tables, .md/.csv/-val-loss.png)")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The loop's hyper-parameters and the LoRA options."""
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=3)
    group.add_argument("--batch-size", type=int, default=32)
    group.add_argument("--learning-rate", type=float, help="default: the method's (see peft_course.finetune.METHODS)")
    group.add_argument("--weight-decay", type=float, default=0.0)
    group.add_argument("--eval-every", type=int, help="validate every N steps (default: every epoch)")
    group.add_argument("--max-length", type=int, default=256, help="truncate texts to this many tokens")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda if present)")
    lora = parser.add_argument_group("LoRA (methods lora, lora-scratch, merged, qlora)")
    lora.add_argument("--r", type=int, default=8, help="rank of the update")
    lora.add_argument("--alpha", type=float, default=16.0, help="scale: the update is multiplied by alpha/r")
    lora.add_argument("--dropout", type=float, default=0.0, help="dropout on the LoRA path")
    lora.add_argument("--targets", nargs="+", help="module-name patterns to adapt (default: c_attn for peft)")
    lora.add_argument("--bias", default="none", choices=["none", "all", "lora_only"], help="peft only")
    lora.add_argument("--modules-to-save", nargs="+", help="peft only: extra modules trained in full")
    lora.add_argument("--rslora", action="store_true", help="scale by alpha/sqrt(r) instead of alpha/r")
    lora.add_argument("--no-gradient-checkpointing", action="store_true",
                      help="qlora only: keep activations instead of recomputing them (faster, more memory)")


def method_options(args: argparse.Namespace) -> dict:
    """The keyword arguments the chosen method's `prepare` takes."""
    if args.method in ("lora", "merged"):
        return {"r": args.r, "alpha": args.alpha, "dropout": args.dropout, "targets": args.targets,
                "bias": args.bias, "modules_to_save": args.modules_to_save, "use_rslora": args.rslora}
    if args.method == "lora-scratch":
        options = {"r": args.r, "alpha": args.alpha, "dropout": args.dropout, "use_rslora": args.rslora}
        return options | ({"targets": args.targets} if args.targets else {})
    if args.method == "qlora":
        return {"r": args.r, "alpha": args.alpha, "dropout": args.dropout, "targets": args.targets,
                "gradient_checkpointing": not args.no_gradient_checkpointing}
    return {}


def finetune_output(args: argparse.Namespace) -> Path:
    """`--output`, or `runs/<method>-<dataset>` (the training file's stem in place of the dataset)."""
    if args.output is not None:
        return args.output
    return Path("runs") / f"{args.method}-{Path(args.train_file).stem if args.train_file else args.dataset}"


def command_finetune(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from peft_course.finetune import check_method_options, finetune, get_method
    from peft_course.runs import RunSpec, check_resume, check_run_directory, save_run, start_run
    from peft_course.training import TrainConfig, check_checkpoint

    method = get_method(args.method)
    output = check_run_directory(finetune_output(args), args.overwrite, args.resume)  # nothing written yet
    options = method_options(args)
    check_method_options(args.method, options)
    if args.method == "qlora":
        from peft_course.qlora import require_4bit

        require_4bit(args.device)  # says what to install before any data or model is loaded
    data = data_from_arguments(args)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=method.learning_rate if args.learning_rate is None else args.learning_rate,
        weight_decay=args.weight_decay, eval_every=args.eval_every, seed=args.seed, device=args.device,
        progress=not args.no_progress,
    )
    spec = RunSpec(args.model, args.method, data.label_names, data.name, options, args.max_length,
                   args.seed, {k: v for k, v in asdict(config).items() if k != "progress"})
    if args.resume and (output / "checkpoint" / "state.json").is_file():
        check_resume(output, spec)
        check_checkpoint(output / "checkpoint")
    start_run(output, spec)
    result = finetune(data, args.method, args.model, config, args.max_length, output / "checkpoint",
                      args.resume, **options)
    save_run(output, result, spec, data)
    print((output / "results.md").read_text())
    print(f"best validation (step {result.training.best_step}): test accuracy {result.best['accuracy']:.4f}, "
          f"weighted F1 {result.best['f1']:.4f}; last iteration: {result.last['accuracy']:.4f}")
    print(f"saved: {output}")


def command_predict(args: argparse.Namespace) -> None:
    from peft_course.runs import check_texts_to_classify, load_run, predict_texts

    check_texts_to_classify(args.texts)  # before the model loads
    model, tokenizer, spec = load_run(args.run)
    for row in predict_texts(model, tokenizer, args.texts, spec.max_length):
        probabilities = ", ".join(f"{k}={v:.3f}" for k, v in row["probabilities"].items())
        print(f"{row['label']}\t({probabilities})\t{row['text']}")


def command_count(args: argparse.Namespace) -> None:
    from peft_course.counting import count_method, format_method_count

    result = count_method(args.method, args.model, rank=args.r, targets=args.targets, labels=args.labels)
    print(format_method_count(result))


def add_count_command(commands) -> None:
    """`peft-course count`: what BitFit, adapters or LoRA train, per module type."""
    count = commands.add_parser(
        "count", help="trainable parameters of bitfit/adapter/lora, per module type, checked against a formula",
        description="Apply a method to GPT-2 small (random weights, nothing downloaded) or to the course's "
                    "1024-512-...-2-1 network, and print its trainable parameters per module type next to "
                    "the closed-form formula's answer.")
    count.add_argument("--method", required=True, choices=("bitfit", "adapter", "lora"))
    count.add_argument("--model", default="gpt2-small", choices=("gpt2-small", "mlp"),
                       help="default: %(default)s")
    count.add_argument("--r", type=int, default=8, help="adapter bottleneck / LoRA rank (default: %(default)s)")
    count.add_argument("--targets", nargs="+", metavar="MODULE",
                       help="module names or suffixes (GPT-2: c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj; "
                            "mlp: fc1 ... fc10). Default: c_attn (lora), attn.c_proj mlp.c_proj (adapter), "
                            "every layer (lora on mlp) or every hidden layer (adapter on mlp)")
    count.add_argument("--labels", type=int, default=2, help="classes of GPT-2's classification head")
    count.set_defaults(handler=command_count)


def command_lora(args: argparse.Namespace) -> None:
    from peft_course.data import load_classification_data
    from peft_course.lora import equivalence_rows
    from peft_course.reports import lora_training_rows
    from peft_course.tables import markdown_table, write_table

    equivalence = equivalence_rows(args.seed)
    print("\nLoRA from scratch vs peft: largest absolute differences (same A, B and head)\n")
    print(markdown_table(equivalence))
    data = load_classification_data("synthetic-sentiment", seed=args.seed)
    training = lora_training_rows(data, args.model, args.seed, args.epochs, args.learning_rate,
                             args.r, args.alpha, progress=not args.no_progress)
    print(f"\n{data.name} with {args.model}, {args.epochs} epochs at lr {args.learning_rate:g} "
          f"(test split, best-validation checkpoint)\n")
    print(markdown_table(training))
    for rows, stem in ((equivalence, "equivalence"), (training, "training")):
        path = write_table(rows, args.output, stem)
        print(f"saved: {path} and {path.with_suffix('.csv')}")


def add_lora_command(commands) -> None:
    """`peft-course lora`: the LoRA chapter's two tables (equality with peft, then training)."""
    lora = commands.add_parser(
        "lora", help="LoRA from scratch: check it equals peft, then train both and compare",
        description="Compare the course's LoRA layer with peft's (logits, merged logits, gradients), "
                    "then fine-tune tiny-gpt2 with each on synthetic-sentiment.")
    add_model_argument(lora)
    # the defaults are peft_course.reports.LORA_EPOCHS and LORA_LEARNING_RATE, written out so that
    # `--help` does not import torch
    lora.add_argument("--epochs", type=int, default=4)
    lora.add_argument("--learning-rate", type=float, default=5e-3)
    lora.add_argument("--r", type=int, default=8, help="rank of the update")
    lora.add_argument("--alpha", type=float, default=16.0, help="the update is multiplied by alpha/r")
    lora.add_argument("--seed", type=int, default=0)
    lora.add_argument("--output", type=Path, default=Path("runs/lora"), help="where the tables are saved")
    lora.add_argument("--no-progress", action="store_true", help="hide progress bars")
    lora.set_defaults(handler=command_lora)


def command_prompt(args: argparse.Namespace) -> None:
    from peft_course.prompting import (
        DEFAULT_STRATEGIES, build_prompt, evaluate_prompting, example_pool, get_strategy, load_generate,
        load_problem_set,
    )
    from peft_course.files import atomic_write_text
    from peft_course.word_problems import load_gsm8k_jsonl

    # every input is read and checked before the model runs; the outputs are replaced only at the end
    strategies = [get_strategy(name).name for name in args.strategy or DEFAULT_STRATEGIES]
    check_distinct("--strategy", strategies)
    problems = load_problem_set(args.problems, args.n_problems, args.seed)
    examples = (load_gsm8k_jsonl(args.examples, limit=args.shots or None) if args.examples
                else example_pool(problems, args.shots, args.seed))
    for name in strategies:  # a prompt each strategy cannot build (--shots 0 with few-shot) fails here
        build_prompt(name, problems[0].question, examples, args.shots)
    generate = load_generate(args.model, seed=args.seed, max_new_tokens=args.max_new_tokens,
                             do_sample=args.sample, temperature=args.temperature, top_p=args.top_p)
    log_path = args.output / "completions.jsonl"
    result = evaluate_prompting(generate, problems, strategies,
                                examples, args.shots, log_path=log_path)
    decoding = f"sampled (T={args.temperature}, top-p={args.top_p})" if args.sample else "greedy"
    print(f"\n{len(problems)} problems from {args.problems}, {args.model}, {decoding}, k={args.shots}\n")
    print(result.table())
    if generate.truncated:
        print(f"note: {generate.truncated} prompt(s) were longer than the context and lost their first tokens")
    atomic_write_text(args.output / "results.md", result.table())
    print(f"saved: {log_path} (every prompt and completion) and {args.output / 'results.md'}")


def add_prompt_command(commands) -> None:
    """`peft-course prompt`: zero-/few-shot and chain-of-thought prompting on word problems."""
    prompt = commands.add_parser(
        "prompt", help="zero-/few-shot and chain-of-thought prompting on arithmetic word problems",
        description="Prompt a causal LM with each strategy, extract the numbers it answers, and "
                    "print the accuracy per strategy. No weights change.")
    prompt.add_argument("--strategy", nargs="+", metavar="NAME",
                        help="zero-shot, few-shot, cot, zero-shot-cot, few-shot-cot "
                             "(default: zero-shot few-shot cot zero-shot-cot)")
    add_model_argument(prompt)
    prompt.add_argument("--problems", default="generated",
                        help="'generated' (word problems solved by sympy) or a GSM8K-format JSONL file")
    prompt.add_argument("--n-problems", type=int, default=27,
                        help="how many problems (generated, or the first N of the file)")
    prompt.add_argument("--shots", type=int, default=2, help="k, the solved examples of the few-shot strategies")
    prompt.add_argument("--examples", help="GSM8K-format JSONL of solved examples (default: generated ones)")
    prompt.add_argument("--max-new-tokens", type=int, default=96)
    prompt.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    prompt.add_argument("--temperature", type=float, default=0.7)
    prompt.add_argument("--top-p", type=float, default=0.95)
    prompt.add_argument("--seed", type=int, default=0)
    prompt.add_argument("--output", type=Path, default=Path("runs/prompt"),
                        help="where completions.jsonl and results.md are saved")
    prompt.set_defaults(handler=command_prompt)


def command_dpo(args: argparse.Namespace) -> None:
    from peft_course.dpo import (
        DPORunConfig, before_after_table, film_preferences, load_preference_jsonl, save_run, split_pairs,
        train_dpo,
    )

    if args.train_file:
        pairs = split_pairs(load_preference_jsonl(args.train_file), args.test_fraction, args.seed)
        source = args.train_file
    else:
        pairs = film_preferences(args.n_train, args.n_test, args.seed, prefer=args.prefer)
        source = f"generated film pairs (prefer {args.prefer})"
    config = DPORunConfig(beta=args.beta, learning_rate=args.learning_rate, epochs=args.epochs,
                          batch_size=args.batch_size, lora=args.lora, r=args.r, alpha=args.alpha, seed=args.seed)
    run = train_dpo(pairs, args.model, config)
    print(f"\nDPO on {source}: {len(pairs['train'])} train / {len(pairs['test'])} held-out pairs, {args.model}, "
          f"{'LoRA' if args.lora else 'full'}, beta {args.beta:g}, lr {args.learning_rate:g}, "
          f"{run.seconds:.1f} s\n")
    print(before_after_table(run))
    print(f"\nreference unchanged: {run.reference_unchanged}")
    metrics, plot = save_run(run, args.output, f"DPO, {'LoRA' if args.lora else 'full'}, beta {args.beta:g}")
    print(f"saved: {metrics} and {plot}")


def add_dpo_command(commands) -> None:
    """`peft-course dpo`: Direct Preference Optimization through TRL, before/after on held-out pairs."""
    dpo = commands.add_parser(
        "dpo", help="Direct Preference Optimization with TRL on preference pairs",
        description="Train a causal LM with DPO (trl.DPOTrainer) on generated film pairs or a JSONL file of "
                    "prompt/chosen/rejected pairs; print held-out preference accuracy and margin before and "
                    "after; save the logged rewards (metrics.json) and their plot (rewards.png).")
    add_model_argument(dpo)
    dpo.add_argument("--train-file", help="JSONL of {prompt, chosen, rejected} pairs (default: generated film pairs)")
    dpo.add_argument("--test-fraction", type=float, default=0.2, help="pairs of --train-file held out")
    dpo.add_argument("--prefer", default="positive", choices=("positive", "negative"),
                     help="generated pairs: the sentiment of the chosen completion (default: %(default)s)")
    dpo.add_argument("--n-train", type=int, default=256, help="generated training pairs")
    dpo.add_argument("--n-test", type=int, default=64, help="generated held-out pairs")
    dpo.add_argument("--beta", type=float, default=0.1, help="weight of the KL penalty (default: %(default)s)")
    dpo.add_argument("--learning-rate", type=float, default=1e-2,
                     help="default: %(default)s (suits LoRA on tiny-gpt2; try 1e-3 with --no-lora)")
    dpo.add_argument("--epochs", type=int, default=2)
    dpo.add_argument("--batch-size", type=int, default=16)
    dpo.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True,
                     help="LoRA (reference = base with adapters off) or --no-lora (full, explicit frozen reference)")
    dpo.add_argument("--r", type=int, default=8, help="LoRA rank")
    dpo.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha")
    dpo.add_argument("--seed", type=int, default=0)
    dpo.add_argument("--output", type=Path, default=Path("runs/dpo"), help="where metrics.json and rewards.png go")
    dpo.set_defaults(handler=command_dpo)


SWEEPS = ("rank", "alpha", "prompt", "dropout", "learning-rate", "targets")


def numbers(values: list[str], kind: type, option: str) -> list:
    """`values` read as `kind` (int or float), or an error naming the option."""
    try:
        return [kind(v) for v in values]
    except ValueError:
        kinds = {int: "whole numbers", float: "numbers"}
        raise CourseError(f"{option} must be {kinds.get(kind, kind.__name__)}, got {' '.join(values)}") from None


def check_distinct_values(option: str, given: list[str], values: list) -> list:
    """`values` (what `given` means) unless two of them are one: `64` and `64.0` are one alpha.

    Compared after conversion, so a repeated cell is refused rather than shown as two rows.
    """
    for j, value in enumerate(values):
        if value in values[:j]:
            i = values.index(value)
            both = f"{given[i]!r} and {given[j]!r}" if given[i] != given[j] else f"{given[i]!r}, twice"
            raise CourseError(f"{option} gives the same value twice ({both}): one cell would show as two rows")
    return values


def sweep_from_arguments(args: argparse.Namespace):
    """The sweep `peft-course ablate NAME` asks for, with `--values` replacing the seed's grid."""
    from dataclasses import replace

    from peft_course.ablation import (
        FULL_LEARNING_RATE, LORA_LEARNING_RATE, SEED_ALPHAS, SEED_RANKS, CellConfig, alpha_sweep, full_cell,
        parameter_sweep, prompt_sweep, rank_sweep,
    )
    from peft_course.lm_classification import TEMPLATES

    if args.r is not None:
        r = args.r
    else:
        r = 128 if args.sweep == "prompt" else 16  # the seed ran its prompt table at r=128
    alpha = 4.0 * r if args.alpha is None else args.alpha
    learning_rate = LORA_LEARNING_RATE if args.learning_rate is None else args.learning_rate
    full_learning_rate = FULL_LEARNING_RATE if args.full_learning_rate is None else args.full_learning_rate
    base = CellConfig(r=r, alpha=alpha, dropout=args.dropout, learning_rate=learning_rate,
                      targets=tuple(args.targets) if args.targets else None, template=args.template)
    full = full_cell(base, full_learning_rate, args.dropout)
    values = args.values
    if args.sweep == "prompt":
        return prompt_sweep(check_distinct_values("--values", values, values) if values else tuple(TEMPLATES),
                            r, alpha, base)
    if args.sweep == "rank":
        ranks = check_distinct_values("--values", values, numbers(values, int, "--values")) if values else None
        sweep = rank_sweep(ranks or SEED_RANKS, args.alpha_ratio, base, full)
    elif args.sweep == "alpha":
        alphas = check_distinct_values("--values", values, numbers(values, float, "--values")) if values else None
        sweep = alpha_sweep(alphas or SEED_ALPHAS, r, base, full)
    elif not values:
        raise CourseError(f"sweeping {args.sweep} needs --values")
    elif args.sweep == "targets":  # each value is one comma-separated list of modules; order does not matter
        lists = [[m.strip() for m in v.split(",") if m.strip()] for v in values]
        check_distinct_values("--values", values, [sorted(modules) for modules in lists])
        sweep = parameter_sweep("targets", lists, base, full)
    else:
        grid = check_distinct_values("--values", values, numbers(values, float, "--values"))
        sweep = parameter_sweep(args.sweep.replace("-", "_"), grid, base, full)
    return replace(sweep, cells=sweep.cells[:-1]) if args.no_full else sweep


def command_ablate(args: argparse.Namespace) -> None:
    from peft_course.ablation import QUICK, Settings, run_sweep, table_rows, write_sweep
    from peft_course.tables import markdown_table

    if args.quick:
        args.max_examples = args.max_examples or QUICK["max_examples"]
        args.epochs = QUICK["epochs"] if args.epochs is None else args.epochs
    sweep = sweep_from_arguments(args)
    data = data_from_arguments(args)
    settings = Settings(model=args.model, epochs=Settings.epochs if args.epochs is None else args.epochs, batch_size=args.batch_size,
                        max_length=args.max_length, cue=args.cue.replace("\\n", "\n"),
                        label_words=tuple(args.label_words) if args.label_words else None,
                        device=args.device, progress=not args.no_progress)
    result = run_sweep(sweep, data, settings, args.seeds, args.output, fresh=args.fresh)
    if result.reused:
        print(f"reused {len(result.reused)} finished cell(s): {', '.join(result.reused)}")
    paths = write_sweep(result, args.output, f"{sweep.name} sweep: {args.model} on {data.name}")
    seeds = f"seeds {' '.join(map(str, args.seeds))} (mean ± sample std)" if len(args.seeds) > 1 else f"seed {args.seeds[0]}"
    print(f"\n{sweep.name} sweep: {args.model} on {data.name}, {settings.epochs} epochs, {seeds}; test accuracy "
          f"(verbalizer and strict match; last iteration and best validation). The seed project's figures are "
          f"GPT-2 small on Rotten Tomatoes, strict match.\n")
    print(markdown_table(table_rows(result)))
    print("saved: " + ", ".join(str(p) for p in paths))


def add_ablate_command(commands) -> None:
    """`peft-course ablate`: the rank, alpha and prompt-template tables, or a sweep of any other setting."""
    ablate = commands.add_parser(
        "ablate", help="rank / alpha / prompt-template ablation tables (or any other hyper-parameter)",
        description="Fine-tune through the language-model head (prompt + label word, LM loss on the label "
                    "word) once per value, score by verbalizer and by strict match of greedy generation, and "
                    "write the table (Markdown + CSV) and every cell's validation-loss curve (PNG). Finished "
                    "cells are reused on a rerun.")
    ablate.add_argument("sweep", choices=SWEEPS, help="the table: rank (alpha = 4r, + full fine-tuning), alpha "
                        "(r=16, + full), prompt (the five templates at r=128), or dropout/learning-rate/targets")
    ablate.add_argument("--values", nargs="+", metavar="V",
                        help="replace the grid: ranks, alphas, template names, dropouts, learning rates, or "
                             "comma-separated module lists (targets: c_attn c_attn,c_fc)")
    add_model_argument(ablate)
    add_data_arguments(ablate, "synthetic-sentiment")
    ablate.add_argument("--data-seed", dest="seed", type=int, default=0,
                        help="seed of the data subsample and split; fixed across --seeds")
    ablate.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="training seeds; each cell runs once per seed and reports mean ± std")
    ablate.add_argument("--quick", action="store_true",
                        help="400 examples a split and 3 epochs: about a CPU minute a sweep on the embedded default")
    ablate.add_argument("--output", type=Path, default=Path("runs/ablation"),
                        help="where the tables, plots and cells/ go (default: %(default)s)")
    ablate.add_argument("--fresh", action="store_true", help="retrain cells that already finished")
    ablate.add_argument("--no-progress", action="store_true", help="hide progress bars")
    group = ablate.add_argument_group("every cell")
    group.add_argument("--epochs", type=int, help="default 3 (also with --quick)")
    group.add_argument("--batch-size", type=int, default=16)
    group.add_argument("--learning-rate", type=float,
                       help="LoRA cells (default: peft_course.ablation.LORA_LEARNING_RATE, 2e-3 for tiny-gpt2)")
    group.add_argument("--full-learning-rate", type=float,
                       help="the full fine-tuning row (default: peft_course.ablation.FULL_LEARNING_RATE, 1e-3)")
    group.add_argument("--no-full", action="store_true", help="leave out the full fine-tuning row")
    group.add_argument("--r", type=int, help="rank where the sweep does not set it (default 16; 128 for prompt)")
    group.add_argument("--alpha", type=float, help="alpha where the sweep does not set it (default 4r)")
    group.add_argument("--alpha-ratio", type=float, default=4.0, help="rank sweep: alpha = ratio * r")
    group.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout; the model's dropout for full")
    group.add_argument("--targets", nargs="+", help="LoRA target modules (default: peft's, c_attn for GPT-2)")
    group.add_argument("--template", default="default", help="prompt template where the sweep does not set it")
    group.add_argument("--max-length", type=int, default=256, help="prompt + text + label word, in tokens")
    group.add_argument("--cue", default="\\nSentiment:", help="answer cue after the text (default: %(default)s)")
    group.add_argument("--label-words", nargs="+", help="one per label (default: ' ' + each label name)")
    group.add_argument("--device", help="cpu, cuda, ... (default: cuda if present)")
    ablate.set_defaults(handler=command_ablate)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with `--help` on every subcommand."""
    parser = argparse.ArgumentParser(
        prog="peft-course", description="Parameter-efficient fine-tuning and alignment on GPT-2.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="library versions, CUDA, and whether 4-bit works here")
    info.set_defaults(handler=command_info)

    demo = commands.add_parser(
        "demo", help="untrained vs fine-tuned: the results table on the embedded default",
        description="Evaluate the untrained model, fine-tune with each method, print a table.")
    add_model_argument(demo)
    add_data_arguments(demo, "synthetic-sentiment")
    demo.add_argument("--max-length", type=int, default=256, help="truncate texts to this many tokens")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--output", type=Path, default=Path("runs/demo"), help="where the table is saved")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    demo.set_defaults(handler=command_demo)

    finetune = commands.add_parser(
        "finetune", help="fine-tune one method on one dataset and save the run",
        description="Train with one method; write metrics.json, the history, plots and a results row.")
    finetune.add_argument("--method", required=True, choices=["head", "lora", "lora-scratch", "merged", "full", "qlora"])
    add_model_argument(finetune)
    add_data_arguments(finetune, "synthetic-sentiment")
    add_training_arguments(finetune)
    finetune.add_argument("--output", type=Path, help="run directory (default: runs/<method>-<dataset>)")
    finetune.add_argument("--overwrite", action="store_true", help="replace a finished run in --output")
    finetune.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    finetune.add_argument("--no-progress", action="store_true", help="hide progress bars")
    finetune.set_defaults(handler=command_finetune)

    predict = commands.add_parser("predict", help="classify texts with a saved run",
                                  description="Reload a run directory and classify each text.")
    predict.add_argument("--run", required=True, type=Path, help="a directory written by `peft-course finetune`")
    predict.add_argument("texts", nargs="+", help="texts to classify")
    predict.set_defaults(handler=command_predict)

    add_count_command(commands)
    add_lora_command(commands)
    add_prompt_command(commands)
    add_dpo_command(commands)
    add_ablate_command(commands)
    return parser


# What `check_arguments` checks, by argparse `dest`, wherever a command has the option.
POSITIVE_INTEGERS = ("epochs", "batch_size", "max_examples", "eval_every", "r", "n_problems", "max_new_tokens",
                     "n_train", "n_test", "labels")
NON_NEGATIVE_INTEGERS = ("seed", "shots")
POSITIVE_NUMBERS = ("learning_rate", "full_learning_rate", "alpha", "alpha_ratio", "beta", "temperature")
INTERVALS = {  # dest: (low, high, low_open, high_open)
    "weight_decay": (0, None, False, False), "dropout": (0, 1, False, True),
    "test_fraction": (0, 1, True, True), "top_p": (0, 1, True, False),
}


def option_names(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """argparse `dest` -> the option a user types (`max_examples` -> `--max-examples`), for `command`."""
    subparser = parser._subparsers._group_actions[0].choices[command]
    return {action.dest: max(action.option_strings, key=len) for action in subparser._actions if action.option_strings}


def check_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Check every option's range before a command does any work, naming the option as typed.

    argparse checks types (`--epochs abc`); the ranges are checked here, once for all commands:
    counts are positive, rates positive, probabilities in range, the device exists, `--output`
    can be written and `--max-length` fits the model. A command then fails in its first second,
    before it loads a model or writes a file, instead of after minutes of work or with a
    traceback from deep inside a library.
    """
    names = option_names(parser, args.command)
    given = {dest: value for dest, value in vars(args).items() if dest in names and value is not None}
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
        from peft_course.data import check_label_names

        check_label_names(given["label_names"], "--label-names")
    if "device" in given:
        from peft_course.system import check_device

        check_device(given["device"])
    if "output" in given and args.command != "finetune":  # finetune checks its run directory itself
        check_output_directory(given["output"], "--output")
    if "model" in given and args.command != "count":  # count's --model names an architecture, not a checkpoint
        from peft_course.models import model_config

        model_config(given["model"])  # a missing directory or an unreachable hub id fails here, not after work
    if "max_length" in given and "model" in given:
        from peft_course.models import check_max_length

        check_max_length(given["max_length"], given["model"], "--max-length")
    if "max_new_tokens" in given and "model" in given:
        from peft_course.models import context_length

        limit = context_length(given["model"])
        if limit is not None and given["max_new_tokens"] >= limit:
            raise CourseError(f"--max-new-tokens {given['max_new_tokens']} leaves no room for the prompt: the model "
                              f"'{given['model']}' has {limit} positions; use fewer than {limit}")


def one_line(error: BaseException) -> str:
    """The error's message on one line (a library's message inside it may span several)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def interrupted_message(args: argparse.Namespace) -> str:
    """What Ctrl-C left behind, and how to continue: finetune resumes, ablate keeps finished cells."""
    if args.command == "finetune":
        checkpoint = finetune_output(args) / "checkpoint"
        if (checkpoint / "state.json").is_file():
            return (f"interrupted; the last finished epoch is saved in {checkpoint}: rerun the same command with "
                    f"--resume to continue from it")
        return ("interrupted before its first epoch finished, so there is no checkpoint yet: rerun the same "
                "command (--resume continues a run once an epoch has finished)")
    if args.command == "ablate":
        return (f"interrupted; finished cells are kept in {args.output / 'cells'}: rerun the same command to "
                f"continue (they are reused, and the interrupted cell resumes from its last finished epoch)")
    return "interrupted"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the subcommand; a user's mistake prints one line and returns 2.

    Only `CourseError` is a user's mistake; any other exception is a bug and keeps its
    traceback. Ctrl-C prints one line saying how to continue and returns 130, as shells do.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_arguments(args, parser)
        args.handler(args)
    except CourseError as error:
        print(f"peft-course {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"peft-course {args.command}: {interrupted_message(args)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
