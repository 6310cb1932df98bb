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
    LoraOptions,
    PeftLoraOptions,
    QLoraOptions,
    ScratchLoraOptions,
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
    """

    label: str
    trains: str
    prepare: str
    learning_rate: float
    demo_epochs: int
    options: type | None = None
    load: str = "peft_course.models.load_model"
    finish: str | None = None

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
