"""The fine-tuning methods, one entry each: adding a method is adding an entry here.

An entry says how the method loads the model, which parameters it trains (its `prepare`
function), what it does after training, which options it takes (a dataclass of
`peft_course.configs`) and its default learning rate. `peft-course finetune --method`, its
`--help`, the run directory's reload path (`peft_course.runs.load_run`), the demo and the docs'
method table all read this dictionary, so none of them names a method itself.

Functions are named by their import path and imported on first use: the command's `--help`
reads this module without loading torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peft_course.configs import (
    AdaLoraOptions,
    IA3Options,
    LoraOptions,
    LoraPlusOptions,
    PeftLoraOptions,
    PrefixOptions,
    PromptEncoderOptions,
    PromptTuningOptions,
    QLoraOptions,
    RankOptions,
    RsLoraOptions,
    ScratchLoraOptions,
    TargetOptions,
)
from peft_course.errors import CourseError


@dataclass(frozen=True)
class Method:
    """One fine-tuning method.

    Attributes:
        label: its name in tables and plots.
        trains: what it trains, in a few words (the docs' method table).
        prepare: `module.function` that sets up the loaded model (which parameters train) and
            returns it; it takes the fields of `options` as keywords.
        learning_rate: its default learning rate (measured on the embedded tiny-gpt2).
        demo_epochs: the epochs it trains in the demo.
        options: the dataclass of the options `prepare` takes; None: it takes none.
        load: `module.function` that loads `(model, tokenizer)` (QLoRA quantizes while loading).
        finish: `module.function` applied to the trained model before the final scoring (e.g.
            merging the adapters); None: nothing.
        in_demo: whether `peft-course demo` trains it (a row of its table).
    """

    label: str
    trains: str
    prepare: str
    learning_rate: float
    demo_epochs: int
    options: type | None = None
    load: str = "peft_course.models.load_model"
    finish: str | None = None
    in_demo: bool = True

    def function(self, role: str) -> Callable[..., Any] | None:
        """The function `role` ("prepare", "load" or "finish") names, imported now."""
        path = getattr(self, role)
        if path is None:
            return None
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)

    @property
    def option_names(self) -> tuple[str, ...]:
        """The keyword options `prepare` takes (those a user can set)."""
        if self.options is None:
            return ()
        return tuple(f.name for f in dataclasses.fields(self.options))


METHODS: dict[str, Method] = {
    "head": Method(
        "head only",
        "the classification head alone (GPT-2's `score`)",
        "peft_course.methods.prepare_head_only",
        learning_rate=2e-2,
        demo_epochs=8,
    ),
    "lora": Method(
        "LoRA (peft)",
        "low-rank adapters through peft, plus a trained copy of the head",
        "peft_course.methods.prepare_lora",
        learning_rate=5e-3,
        demo_epochs=4,
        options=PeftLoraOptions,
    ),
    "lora-scratch": Method(
        "LoRA (from scratch)",
        "the same with the course's own LoRA layer",
        "peft_course.finetune.prepare_lora_scratch",
        learning_rate=5e-3,
        demo_epochs=4,
        options=ScratchLoraOptions,
    ),
    "gpt2-scratch": Method(
        "GPT-2 from scratch + LoRA",
        "LoRA built into the course's own GPT-2 (q, k, v by default), plus the head",
        "peft_course.gpt2.prepare_builtin_lora",
        learning_rate=5e-3,
        demo_epochs=4,
        options=LoraOptions,
        load="peft_course.gpt2.load_classifier",
    ),
    "merged": Method(
        "merged LoRA",
        "`lora`, then the adapters merged into the weights (evaluated with no LoRA code)",
        "peft_course.methods.prepare_lora",
        learning_rate=5e-3,
        demo_epochs=4,
        options=PeftLoraOptions,
        finish="peft_course.methods.merge_and_unload_peft",
    ),
    "qlora": Method(
        "QLoRA (NF4)",
        "`lora` on a model whose projections are stored in 4-bit NF4",
        "peft_course.qlora.prepare_qlora",
        learning_rate=5e-3,
        demo_epochs=4,
        options=QLoraOptions,
        load="peft_course.qlora.load_qlora_model",
    ),
    "full": Method(
        "full fine-tuning",
        "every parameter",
        "peft_course.methods.prepare_full",
        learning_rate=1e-3,
        demo_epochs=3,
    ),
    # the PEFT family (`peft_course.peft_family`): learning rates from a search on tiny-gpt2
    # (--max-examples 200, 4 epochs; tests/test_peft_family.py); not in the demo's table
    **{
        name: Method(
            label,
            trains,
            f"peft_course.peft_family.prepare_{name.replace('-', '_')}",
            learning_rate=rate,
            demo_epochs=4,
            options=options,
            in_demo=False,
        )
        for name, label, trains, rate, options in (
            (
                "bitfit",
                "BitFit",
                "every bias (projections and LayerNorms), plus the head",
                1e-2,
                None,
            ),
            (
                "houlsby",
                "adapters (Houlsby)",
                "a bottleneck adapter after each block's attention and after its MLP (by hand), "
                "plus the head",
                5e-3,
                RankOptions,
            ),
            (
                "pfeiffer",
                "adapters (Pfeiffer)",
                "a bottleneck adapter after each block's MLP (by hand), plus the head",
                5e-3,
                RankOptions,
            ),
            (
                "ia3",
                "(IA)³",
                "a learned scale per output of the attention projection and per input of the "
                "MLP's down projection (peft), plus the head",
                1e-2,
                IA3Options,
            ),
            (
                "ln-tuning",
                "LN-tuning",
                "a copy of every LayerNorm, scale and bias (peft), plus the head",
                1e-2,
                TargetOptions,
            ),
            (
                "prompt-tuning",
                "prompt tuning",
                "virtual token embeddings before the text (peft), plus the head",
                1e-2,
                PromptTuningOptions,
            ),
            (
                "prefix-tuning",
                "prefix tuning",
                "virtual keys and values in every layer (peft), plus the head",
                1e-2,
                PrefixOptions,
            ),
            (
                "p-tuning",
                "P-tuning",
                "virtual tokens made by a small MLP (peft), plus the head",
                1e-2,
                PromptEncoderOptions,
            ),
            ("rslora", "rsLoRA", "`lora` scaled by alpha/sqrt(r)", 5e-3, LoraOptions),
            (
                "dora",
                "DoRA",
                "`lora` for the direction and a learned magnitude per output (peft's use_dora), "
                "plus the head",
                5e-3,
                RsLoraOptions,
            ),
            (
                "pissa",
                "PiSSA",
                "`lora` started from each weight's top-r singular vectors (the rest frozen)",
                5e-3,
                LoraOptions,
            ),
            (
                "vera",
                "VeRA",
                "two vectors per layer on frozen random matrices shared by all layers (peft), plus "
                "the head",
                1e-2,
                RankOptions,
            ),
            (
                "adalora",
                "AdaLoRA",
                "LoRA as P diag(E) Q, its ranks pruned to a budget while training (peft), plus the "
                "head",
                5e-3,
                AdaLoraOptions,
            ),
            (
                "lora-plus",
                "LoRA+",
                "`lora` with B at a higher learning rate than A (peft's LoRA+ optimizer)",
                5e-3,
                LoraPlusOptions,
            ),
            (
                "olora",
                "OLoRA",
                "`lora` started from a QR decomposition of each weight (not on GPT-2's Conv1D)",
                5e-3,
                LoraOptions,
            ),
            (
                "loha",
                "LoHa",
                "an update made of the Hadamard product of two low-rank products (peft; not on "
                "GPT-2's Conv1D), plus the head",
                5e-3,
                LoraOptions,
            ),
            (
                "lokr",
                "LoKr",
                "an update made of a Kronecker product with a low-rank factor (peft; not on "
                "GPT-2's Conv1D), plus the head",
                5e-3,
                LoraOptions,
            ),
            (
                "oft",
                "OFT",
                "a learned block-diagonal rotation of each weight (peft; not on GPT-2's Conv1D), "
                "plus the head",
                5e-3,
                TargetOptions,
            ),
            (
                "boft",
                "BOFT",
                "OFT's rotation as butterfly factors (peft; not on GPT-2's Conv1D), plus the head",
                5e-3,
                TargetOptions,
            ),
        )
    },
}


def get_method(name: str) -> Method:
    """The method called `name`, or an error listing the known ones.

    Args:
        name: a key of `METHODS`.

    Raises:
        CourseError: if `name` is not a known method.
    """
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise CourseError(f"unknown method {name!r}: choose one of {sorted(METHODS)}") from None


def method_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` checked against what method `name` takes: unknown names and bad values refused.

    Returns the options as given (None values dropped, so `prepare`'s own defaults apply).

    Args:
        name: a key of `METHODS`.
        options: the keyword options meant for the method's `prepare`.

    Raises:
        CourseError: if an option is not one the method takes, or its value is out of range.
    """
    method = get_method(name)
    accepted = method.option_names
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"it takes {', '.join(accepted)}" if accepted else "it takes none"
        raise CourseError(f"method {name!r} has no option(s) {', '.join(unknown)}: {takes}")
    if method.options is not None:
        method.options(**options)
    return {k: v for k, v in options.items() if v is not None}


def method_table() -> str:
    """The methods as a Markdown table (the docs' method table is made from it)."""
    rows = ["| method | what trains | options | learning rate |", "|---|---|---|---:|"]
    for name, method in METHODS.items():
        options = ", ".join(f"`{o}`" for o in method.option_names) or "none"
        rows.append(f"| `{name}` | {method.trains} | {options} | {method.learning_rate:g} |")
    return "\n".join(rows) + "\n"
