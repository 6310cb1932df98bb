# %% [markdown]
# # Lab: A real model (SmolLM2)
#
# The real-model chapter runs every other chapter on SmolLM2-135M-Instruct, a Llama, with real
# data. This lab runs the same functions on `tiny-llama`, the embedded twin of tiny-gpt2 with
# Llama's architecture, and on generated reviews, so it needs neither SmolLM2 nor the data
# folder. Two settings below point it at the real thing: `MODEL = "smollm2-135m"` (installed and
# converted by `make demo`) and `DATA_DIR = Path("../shared/data")`, the folder holding
# `rotten_tomatoes/{train,validation,test}.jsonl`. Expect minutes instead of seconds on a CPU.

# %%
from pathlib import Path

import torch

from peft_course.data import load_classification_data
from peft_course.finetune import finetune
from peft_course.lora import LoRAConfig, compare_with_peft, default_targets, stores_transposed
from peft_course.models import context_length, count_parameters, load_model
from peft_course.prompting import sentiment_by_prompting
from peft_course.smollm2 import is_installed
from peft_course.training import TrainConfig

MODEL = "tiny-llama"  # or "smollm2-135m"
DATA_DIR: Path | None = None  # or Path("../shared/data")
SIZE = 200  # rows a split; the real-model pages used 400 to 1,000 on a CPU
print("SmolLM2 installed here:", is_installed())

# %% [markdown]
# ## The data
#
# Generated reviews by default; with `DATA_DIR`, the Rotten Tomatoes files read from disk
# (never from the hub), sampled to `SIZE` rows a split.

# %%
if DATA_DIR is None:
    data = load_classification_data("synthetic-sentiment", max_examples=SIZE)
else:
    folder = DATA_DIR / "rotten_tomatoes"
    data = load_classification_data(
        "rotten_tomatoes",
        train_file=folder / "train.jsonl",
        validation_file=folder / "validation.jsonl",
        test_file=folder / "test.jsonl",
        label_names=["negative", "positive"],
        max_examples=SIZE,
    )
print(data.name, {split: len(rows) for split, rows in data.splits.items()}, data.label_names)

# %% [markdown]
# ## What changes from GPT-2
#
# A Llama's projections are `nn.Linear` (weight stored `(out, in)`), split into `q_proj`,
# `k_proj`, `v_proj` and `o_proj`, with a SwiGLU MLP and rotary positions. The code reads the
# layout from the model instead of assuming GPT-2's:

# %%
model, tokenizer = load_model(MODEL, task="classification", num_labels=2)
print(
    type(model).__name__,
    f"{count_parameters(model)[1]:,} parameters,",
    f"vocabulary {model.config.vocab_size:,}, context {context_length(model)}",
)
print(
    "projections of block 0:",
    [
        name.split(".")[-1]
        for name, module in model.model.layers[0].named_modules()
        if isinstance(module, torch.nn.Linear)
    ],
)
print("peft's default LoRA targets:", default_targets(model))
print("weights stored transposed (Conv1D, GPT-2's):", stores_transposed(model))

# %% [markdown]
# ## LoRA from scratch equals peft here too
#
# The chapter's LoRA wraps `nn.Linear` and `Conv1D` alike; `compare_with_peft` checks it against
# peft on this model, `fan_in_fan_out` and all.

# %%
config = LoRAConfig(r=4, alpha=8, targets=default_targets(model), trainable=["score"])
batch = tokenizer(
    ["a superb , moving film .", "the plot was not good ."], padding=True, return_tensors="pt"
)
for name, value in compare_with_peft(
    model, config, batch["input_ids"], torch.tensor([1, 0])
).items():
    print(f"{name:20} {value:.2e}" if isinstance(value, float) else f"{name:20} {value}")

# %% [markdown]
# ## Prompting, no training
#
# The verbalizer reads the probabilities of ` negative` and ` positive` after
# `Review: ... Sentiment:`. SmolLM2-Instruct also takes `chat=True`, which wraps each prompt in
# its chat template (tiny-llama has none).

# %%
lm, lm_tokenizer = load_model(MODEL, task="causal-lm")
test = data.splits["test"]
prompted = sentiment_by_prompting(lm, lm_tokenizer, test["text"], test["label"])
print(f"zero-shot verbalizer accuracy {prompted['accuracy']:.3f}, strict {prompted['strict']:.3f}")

# %% [markdown]
# ## Fine-tuning: the head, then LoRA
#
# The same `finetune` as the fine-tuning chapter, with the model's name. The learning rates are
# tiny-llama's; the chapter's SmolLM2 runs used smaller ones (`docs/real-model.md`).

# %%
runs = {}
for method, rate, options in (("head", 2e-2, {}), ("lora", 5e-3, {"r": 8, "alpha": 16})):
    train_config = TrainConfig(epochs=3, batch_size=8, learning_rate=rate, progress=False)
    runs[method] = finetune(data, method=method, model_name=MODEL, config=train_config, **options)
    run = runs[method]
    print(
        f"{method:5} trainable {run.trainable:>6,}: test accuracy "
        f"{run.untrained['accuracy']:.3f} -> {run.best['accuracy']:.3f}"
    )

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

figure, axis = plt.subplots(figsize=(5, 3))
for method, run in runs.items():
    history = run.training.history
    axis.plot(
        [h["epoch"] for h in history], [h["val_accuracy"] for h in history], "o-", label=method
    )
axis.set_xlabel("epoch")
axis.set_ylabel("validation accuracy")
axis.set_title(f"{MODEL} on {data.name}")
axis.legend()
plt.show()

# %% [markdown]
# ## Try this
#
# Set `MODEL = "smollm2-135m"` in the first cell (after `make demo`; the first load converts
# the GGUF file, about half a minute) and rerun: the prompting cell alone shows what pretraining
# buys. With the data folder, set `DATA_DIR` too. The whole chapter, every part, is one
# resumable command: `python -m peft_course.pages real-model --data-dir ../shared/data`.
