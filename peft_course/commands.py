"""What each `peft-course` subcommand does, once its arguments are parsed.

`peft_course.cli` builds the parser and imports this module only after parsing, so `--help`
and a mistyped option cost no torch import. Each `command_<name>` is a thin layer over a
chapter function, so what the command prints is what a learner gets by calling that function.
`check_arguments` checks every option's range before any command does work.

Each handler imports the chapters it runs, inside itself: a command loads only what it uses
(`count` no trl and no matplotlib, `count --method bitfit` no peft, `info` no peft), and
starts in seconds. At the top are the utilities only (tests/test_layers.py checks it).
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, fields
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from peft_course import distributed
from peft_course.configs import DataOptions, DPORunConfig, SweepSettings, TrainConfig
from peft_course.errors import CourseError, check_distinct
from peft_course.event_logs import LiveEvents, write_events
from peft_course.files import (
    atomic_write_text,
    check_output_directory,
    check_output_kind,
    owning_output,
)
from peft_course.options import as_flags, from_options
from peft_course.registry import METHODS, get_method, method_options
from peft_course.settings import COMPARE, DEFAULT_DATASET, EMBEDDED_MODEL, INSTRUCT
from peft_course.tables import markdown_table, write_table


def load_data(args: Any, **given):
    """Load the classification data the data options describe (`--dataset`, `--train-file`, ...).

    Args:
        args: the parsed command line of a command with the data options.
        **given: options set by the command itself (e.g. a smaller `max_examples`).
    """
    from peft_course.data import load_classification_data

    options = asdict(from_options(DataOptions, args, **given))
    return load_classification_data(options.pop("dataset"), **options, seed=args.seed)


def typed_method_options(args: Any) -> dict:
    """The method options typed on the command line, checked against what `--method` takes.

    Returns every option of the method, with its default where none was typed (None left out),
    so that the run records exactly what built its model."""
    names = {f.name for m in METHODS.values() if m.options for f in fields(m.options)}
    given = {name: getattr(args, name) for name in names if hasattr(args, name)}
    method = get_method(args.method)
    with as_flags():
        method_options(args.method, given)
        options = method.options(**given) if method.options else None
    return {} if options is None else {k: v for k, v in asdict(options).items() if v is not None}


def finetune_output(args: Any) -> Path:
    """`--output`, or `runs/<method>-<dataset>` (the training file's stem for a dataset)."""
    if args.output is not None:
        return args.output
    data = Path(args.train_file).stem if args.train_file else args.dataset or DEFAULT_DATASET
    return Path("runs") / f"{args.method}-{data}"


def command_info(args: Any) -> None:
    """Library versions, devices, 4-bit support, the measured matmul peak, and whether
    `smollm2-135m` is ready."""
    from peft_course import smollm2
    from peft_course.cost import cached_peaks
    from peft_course.system import system_info

    peaks = [f"{flops / 1e9:,.1f} GFLOP/s ({where})" for where, flops in cached_peaks().items()]
    measured = "; ".join(peaks) or "not measured yet (the first training run measures it)"
    shown = {**system_info(), "matmul peak": measured, smollm2.SMOLLM2: smollm2.status()}
    for key, value in shown.items():
        print(f"{key:>22}: {value}")


def command_demo(args: Any) -> None:
    """The results table of every method, the quick ablation tables, and the real-model glimpse."""
    from peft_course.ablation import QUICK
    from peft_course.demo import demo_rows, show_ablation, show_real_model, show_tuning
    from peft_course.system import provenance

    data = load_data(args)
    rows = demo_rows(data, args.model, args.seed, args.max_length, progress=args.progress)
    path = write_table(rows, args.output, note=provenance("peft-course demo"))
    print(f"\n{data.name} with {args.model} (test split, best-validation checkpoint)\n")
    print(markdown_table(rows))
    print(f"saved: {path} and {path.with_suffix('.csv')}")
    size = min(args.max_examples or QUICK["max_examples"], QUICK["max_examples"])
    quick = load_data(args, max_examples=size) if args.model == EMBEDDED_MODEL else None
    show_ablation(quick, args.model, args.output / "ablation", size, args.progress)
    if args.tuning and args.model == EMBEDDED_MODEL:
        show_tuning(args.output, args.model, args.seed, args.progress)
    if args.real_model:
        show_real_model(args.output)


def command_finetune(args: Any) -> None:
    """Train one method on one dataset and save the run (weights, metrics, plots, results row)."""
    from peft_course.cost import RunCost
    from peft_course.finetune import finetune
    from peft_course.models import model_identity
    from peft_course.qlora import require_4bit
    from peft_course.runs import RunSpec, check_resume, check_run_directory, save_run, start_run
    from peft_course.training import check_checkpoint

    method = get_method(args.method)
    # nothing is written yet
    output = check_run_directory(finetune_output(args), args.overwrite, args.resume)
    if args.overwrite and any(output.iterdir()):
        kept = sorted(p.name for p in output.iterdir() if not p.name.startswith("."))
        print(f"--overwrite: replacing the run in {output} ({', '.join(kept)})")
    options = typed_method_options(args)
    if args.method == "qlora":
        require_4bit(args.device)  # says what to install before any data or model is loaded
    data = load_data(args)
    rate = method.learning_rate if args.learning_rate is None else args.learning_rate
    config = from_options(TrainConfig, args, learning_rate=rate)
    spec = RunSpec(
        args.model,
        args.method,
        data.label_names,
        data.name,
        options,
        args.max_length,
        args.seed,
        {k: v for k, v in asdict(config).items() if k != "progress"},
        model_identity(args.model),
    )
    if args.resume and (output / "checkpoint" / "state.json").is_file():
        check_resume(output, spec)
        check_checkpoint(output / "checkpoint")
    main = distributed.is_main()  # under torchrun, one process writes and prints
    if main:
        start_run(output, spec)
    live = LiveEvents(args.log_dir or output) if main else None  # TensorBoard, as it trains
    try:
        result = finetune(
            data,
            args.method,
            args.model,
            config,
            args.max_length,
            output / "checkpoint",
            args.resume,
            live,
            **options,
        )
    finally:
        if live is not None:
            live.close()
    if not main:
        return
    typed = getattr(args, "command_line", None)  # set by cli.main
    save_run(output, result, spec, data, args.log_dir, typed and shlex.join(map(str, typed)))
    print((output / "results.md").read_text())
    print(
        f"best validation (step {result.training.best_step}): test accuracy "
        f"{result.best['accuracy']:.4f}, weighted F1 {result.best['f1']:.4f}; "
        f"last iteration: {result.last['accuracy']:.4f}"
    )
    print(RunCost(**result.training.cost).summary())
    print(f"saved: {output}")


def command_predict(args: Any) -> None:
    """Label texts with a saved run's model, with each label's probability."""
    from peft_course.runs import check_texts_to_classify, load_run, predict_texts

    check_texts_to_classify(args.texts)  # before the model loads
    model, tokenizer, spec = load_run(args.run)
    for row in predict_texts(model, tokenizer, args.texts, spec.max_length):
        probabilities = ", ".join(f"{k}={v:.3f}" for k, v in row["probabilities"].items())
        print(f"{row['label']}\t({probabilities})\t{row['text']}")


def command_export(args: Any) -> None:
    """Write a saved run as a transformers checkpoint (--merged) or peft adapter, with its card."""
    from peft_course.export import export_run

    output = export_run(args.run, args.output, args.merged)
    kind = "a transformers checkpoint" if args.merged else "the run for transformers and peft"
    print(f"saved: {output} ({kind}, with its model card {output / 'README.md'})")


def command_count(args: Any) -> None:
    """Print what a method trains: trainable and total parameters, and the formula's count."""
    from peft_course.counting import count_method, family_table, format_method_count

    if args.family:
        print(family_table())
        return
    if args.method is None:
        raise CourseError("say what to count: --method bitfit, adapter or lora, or --family")
    result = count_method(
        args.method, args.model, rank=args.r, targets=args.targets, labels=args.labels
    )
    print(format_method_count(result))


def command_lora(args: Any) -> None:
    """LoRA from scratch against peft on the same weights, then both trained side by side."""
    from peft_course.data import load_classification_data
    from peft_course.finetune import lora_training_rows
    from peft_course.lora import equivalence_rows

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
        progress=args.progress,
    )
    print(
        f"\n{data.name} with {args.model}, {args.epochs} epochs at lr {args.learning_rate:g} "
        f"(test split, best-validation checkpoint)\n"
    )
    print(markdown_table(training))
    for rows, stem in ((equivalence, "equivalence"), (training, "training")):
        path = write_table(rows, args.output, stem)
        print(f"saved: {path} and {path.with_suffix('.csv')}")


def command_gpt2(args: Any) -> None:
    """GPT-2 from scratch: parity with transformers, LoRA counts, continuations by hand."""
    from peft_course.decoding import decoding_options, gpt2_generation_rows
    from peft_course.gpt2 import from_pretrained, gpt2_count_rows, gpt2_parity_rows
    from peft_course.models import load_tokenizer

    for strategy in args.strategy:  # every setting is checked before anything loads
        decoding_options(strategy, args.temperature, args.top_k, args.top_p)
    model = from_pretrained(args.model, seed=args.seed).eval()
    tokenizer = load_tokenizer(args.model, args.seed)
    if args.check:
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


def command_instruct(args: Any) -> None:
    """Instruction tuning with the loss on the response only; exact match before and after."""
    from peft_course.instruct import instruct_rows, instruct_tune, load_instructions
    from peft_course.runs import history_events

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
    config = from_options(TrainConfig, args, learning_rate=rate)
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
    events = write_events(history_events(result.training), args.output)
    print(f"saved: {events} (the history, for TensorBoard)")


def command_prompt(args: Any) -> None:
    """Prompt a language model on word problems: direct, few-shot and chain-of-thought."""
    from peft_course.prompting import (
        DEFAULT_STRATEGIES,
        build_prompt,
        evaluate_prompting,
        example_pool,
        get_strategy,
        load_generate,
        load_problem_set,
    )
    from peft_course.word_problems import load_gsm8k_jsonl

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
    # a prompt a strategy cannot build (--shots 0 with few-shot) fails here
    for name in strategies:
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


def load_pairs(args: Any) -> tuple[Any, str]:
    """`--train-file`'s pairs split into train and test, or generated film pairs; and their name."""
    from peft_course.dpo import film_preferences, load_preference_jsonl, split_pairs

    if args.train_file:
        pairs = split_pairs(load_preference_jsonl(args.train_file), args.test_fraction, args.seed)
        return pairs, args.train_file
    pairs = film_preferences(args.n_train, args.n_test, args.seed, prefer=args.prefer)
    return pairs, f"generated film pairs (prefer {args.prefer})"


def command_dpo(args: Any) -> None:
    """Direct Preference Optimization through trl, with the before/after preference table."""
    from peft_course.dpo import before_after_table, save_dpo_run, train_dpo

    pairs, source = load_pairs(args)
    config = from_options(DPORunConfig, args)
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
    events = write_events(run.history, args.output)
    print(f"saved: {metrics}, {plot} and {events.name} (TensorBoard)")


def command_align(args: Any) -> None:
    """One of DPO's relatives through its TRL trainer, with the before/after preference table
    (or, with `--reward-model`, a reward model and DPO beside it)."""
    from peft_course.preference import (
        TRAINERS,
        LossSettings,
        before_after_rows,
        save_align_run,
        train_preference,
    )

    if args.grpo:
        return align_grpo(args)
    if args.reward_model and (args.loss != "dpo" or not args.lora):
        given = "--no-lora" if args.loss == "dpo" else f"--loss {args.loss}"
        raise CourseError(
            f"--reward-model trains LoRA and a scalar head, DPO beside it: {given} does not apply"
        )
    pairs, source = load_pairs(args)
    config = from_options(DPORunConfig, args)
    if args.reward_model:
        return align_reward_model(args, pairs, source, config)
    settings = LossSettings(
        gamma=args.gamma, label_smoothing=args.label_smoothing, orpo_lambda=args.orpo_lambda
    )
    run = train_preference(args.loss, pairs, args.model, config, settings)
    strength = f"lambda {args.orpo_lambda:g}" if args.loss == "orpo" else f"beta {args.beta:g}"
    print(
        f"\n{args.loss} ({TRAINERS[args.loss]}) on {source}: {len(pairs['train'])} train / "
        f"{len(pairs['test'])} held-out pairs, {args.model}, {'LoRA' if args.lora else 'full'}, "
        f"{strength}, lr {args.learning_rate:g}, {run.steps} steps, {run.seconds:.1f} s, "
        f"{run.tokens_per_second:.0f} tokens/s\n"
    )
    print(markdown_table(before_after_rows(run)))
    print(f"\nreference unchanged: {run.reference_unchanged}")
    metrics, plot = save_align_run(
        run, args.output, f"{args.loss}, {'LoRA' if args.lora else 'full'}, {strength}"
    )
    events = write_events(run.history, args.output)
    print(f"saved: {metrics}, {plot} and {events.name} (TensorBoard)")


GRPO_OPTIONS = ("grpo", "grpo_reward", "grpo_steps", "seed", "output")  # what `align --grpo` reads


def align_grpo(args: Any) -> None:
    """`align --grpo`: GRPO from the instruction-tuned tiny-gpt2 on the generated tasks."""
    from dataclasses import replace

    from peft_course.command_options import Align
    from peft_course.online_rl import grpo_rows, sample_rows, save_grpo_run, train_grpo
    from peft_course.options import flag_of, typed_fields
    from peft_course.settings import GRPO

    typed = typed_fields(args.command_line, Align, DPORunConfig)
    ignored = [flag for name, flag in typed.items() if name not in GRPO_OPTIONS]
    if ignored:
        options = {f.name: flag_of(f) for cls in (Align, DPORunConfig) for f in fields(cls)}
        takes = ", ".join(options[name] for name in GRPO_OPTIONS[1:])
        verb = "does" if len(ignored) == 1 else "do"
        raise CourseError(
            "--grpo trains the instruction-tuned tiny-gpt2 on its own answers to the generated "
            f"tasks: {', '.join(ignored)} {verb} not apply (it takes {takes})"
        )
    settings = replace(GRPO, steps=args.grpo_steps)
    run = train_grpo(args.grpo_reward, settings, args.seed)
    print(
        f"\nGRPO (trl.GRPOTrainer), {args.grpo_reward} reward, on the generated tasks "
        f"{', '.join(settings.tasks)}: {settings.prompts_per_step} prompts x "
        f"{settings.num_generations} completions a step, beta {settings.beta:g}, lr "
        f"{settings.learning_rate:g}, {run.steps} steps, {run.seconds:.1f} s\n"
    )
    print(markdown_table(grpo_rows([run])))
    print()
    print(markdown_table(sample_rows(run)))
    metrics, plot = save_grpo_run(run, args.output, f"GRPO, {args.grpo_reward} reward")
    events = write_events(run.history, args.output)
    print(f"saved: {metrics}, {plot} and {events.name} (TensorBoard)")


def align_reward_model(args: Any, pairs: Any, source: str, config: DPORunConfig) -> None:
    """`align --reward-model`: a reward model and DPO on the same pairs, their held-out accuracy."""
    from peft_course.preference import reward_model_rows, save_reward_model_run, train_reward_model

    run = train_reward_model(pairs, args.model, config)
    print(
        f"\nreward model (trl.RewardTrainer: scalar head + LoRA) and DPO beside it on {source}: "
        f"{len(pairs['train'])} train / {len(pairs['test'])} held-out pairs, {args.model}, "
        f"lr {args.learning_rate:g}, {run.steps} steps each, {run.seconds:.1f} s\n"
    )
    print(markdown_table(reward_model_rows(run, source)))
    metrics, plot = save_reward_model_run(
        run, args.output, f"reward model, LoRA r={args.r}, lr {args.learning_rate:g}"
    )
    print(f"saved: {metrics} and {plot}")


def command_ablate(args: Any) -> None:
    """Run an ablation sweep (rank, alpha, prompt template or another) and save its tables."""
    from peft_course.ablation import QUICK, named_sweep, run_sweep, sweep_summary, write_sweep

    if args.quick:
        args.max_examples = args.max_examples or QUICK["max_examples"]
        args.epochs = QUICK["epochs"] if args.epochs is None else args.epochs
    with as_flags():
        sweep = named_sweep(
            args.sweep,
            args.values,
            r=args.r,
            alpha=args.alpha,
            alpha_ratio=args.alpha_ratio,
            dropout=args.dropout,
            learning_rate=args.learning_rate,
            full_learning_rate=args.full_learning_rate,
            targets=args.targets,
            template=args.template,
            full=args.full,
        )
    data = load_data(args)
    settings = from_options(
        SweepSettings,
        args,
        model=args.model,
        epochs=SweepSettings.epochs if args.epochs is None else args.epochs,
        cue=args.cue.replace("\\n", "\n"),
    )
    result = run_sweep(sweep, data, settings, args.seeds, args.output, fresh=args.fresh)
    if not distributed.is_main():  # under torchrun, one process writes the tables and prints
        return
    if result.reused:
        print(f"reused {len(result.reused)} finished cell(s): {', '.join(result.reused)}")
    paths = write_sweep(result, args.output, f"{sweep.name} sweep: {args.model} on {data.name}")
    print(sweep_summary(result, args.model, data.name, settings.epochs, args.seeds))
    print("saved: " + ", ".join(str(p) for p in paths))


def command_compare(args: Any) -> None:
    """Train the PEFT family at matched budgets and write the table, the budgets and the plot."""
    from peft_course.compare import compare, summary, write_compare
    from peft_course.system import provenance

    seeds = args.seeds or (COMPARE.seeds[:1] if args.quick else COMPARE.seeds)
    if args.quick:
        args.max_examples = args.max_examples or COMPARE.quick_examples
    data = load_data(args)
    result = compare(
        data,
        args.methods,
        args.budgets,
        seeds,
        args.output,
        args.model,
        args.max_length,
        max_epochs=COMPARE.quick_epochs if args.quick else None,
        search_examples=len(data.splits["train"]) if args.quick else COMPARE.search_examples,
        fresh=args.fresh,
        progress=args.progress,
    )
    if result.reused:
        print(f"reused {len(result.reused)} finished run(s) of {args.output / 'cells'}")
    note = provenance("peft-course compare" + (" --quick" if args.quick else ""))
    paths = write_compare(result, args.output, note)
    print(summary(result, data.name, args.model, seeds))
    print(f"{result.seconds / 60:.1f} min; saved: " + ", ".join(str(p) for p in paths))


def check_arguments(args: Any) -> None:
    """Check what the options' own ranges cannot: that the model and `--output` are usable.

    The ranges were checked when the options were read (`peft_course.options`); here the model
    is found (a missing directory or an unreachable hub id fails now, not after work),
    `--max-length` and `--max-new-tokens` fit its context, and `--output` can be written. A
    command then fails in its first second, before it loads a model or writes a file.

    Args:
        args: the parsed command line of any `peft-course` command.

    Raises:
        CourseError: if `--max-new-tokens` leaves no room for the prompt in the model's context.
    """
    if args.command == "finetune":
        from peft_course.runs import check_run_directory

        check_run_directory(finetune_output(args), args.overwrite, args.resume)
    elif getattr(args, "output", None) is not None:
        # a new or empty directory, or one an earlier run of the same command made
        positional = args.command == "export"  # OUT, not an option
        check_output_kind(args.output, args.command, "OUT" if positional else "--output")
    model = getattr(args, "model", None)
    if model is None or args.command == "count":  # count's --model names an architecture
        return
    from peft_course.models import check_max_length, context_length, model_config

    model_config(model)
    if getattr(args, "max_length", None) is not None:
        check_max_length(args.max_length, model, "--max-length")
    new_tokens, limit = getattr(args, "max_new_tokens", None), context_length(model)
    if new_tokens is not None and limit is not None and new_tokens >= limit:
        raise CourseError(
            f"--max-new-tokens {new_tokens} leaves no room for the prompt: the model "
            f"'{model}' has {limit} positions; use fewer than {limit}"
        )


def writing_output(args: Any) -> AbstractContextManager[None]:
    """The command's hold on its output directory (`files.owning_output`); under torchrun only
    the process that writes holds it."""
    output = finetune_output(args) if args.command == "finetune" else getattr(args, "output", None)
    if output is None or not distributed.is_main():
        return nullcontext()
    return owning_output(output, args.command, claim=args.command != "finetune")


def interrupted_message(args: Any) -> str:
    """What Ctrl-C left behind and how to continue: finetune resumes, ablate keeps its cells."""
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
    if args.command in ("compare", "ablate"):
        kept = "runs" if args.command == "compare" else "cells"
        return (
            f"interrupted; finished {kept} are kept in {args.output / 'cells'}: rerun the same "
            "command to continue (they are reused, and the interrupted one resumes from its "
            "last finished epoch)"
        )
    return "interrupted"
