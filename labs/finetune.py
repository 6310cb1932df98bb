# %% [markdown]
# # Lab: Fine-tuning for classification
#
# One function, `finetune`, loads the model, applies a method (what trains), trains with the
# shared loop and scores the test split before and after. This lab runs four methods on the
# same data, plots their validation curves, then saves the LoRA run, loads it back and
# classifies new texts with it.

# %%
import tempfile

from peft_course.data import load_classification_data
from peft_course.finetune import finetune
from peft_course.registry import METHODS
from peft_course.runs import RunSpec, load_run, predict_texts, save_run
from peft_course.training import TrainConfig

# %% [markdown]
# ## Choosing what trains
#
# A method is one entry of the registry: a name, a loader, a `prepare` that decides what
# trains, a learning rate that suits it, and its options.

# %%
for name in ("head", "lora", "merged", "full"):
    method = METHODS[name]
    print(f"{name:7} {method.label:22} learning rate {method.learning_rate:g}")

# %% [markdown]
# ## Four runs on the same data
#
# Each run uses its method's learning rate, 4 epochs of batches of 8; LoRA gets rank 8 on
# `c_attn` (peft's default for GPT-2). `merged` trains the
# same LoRA and folds it into the weights at the end, so it should score like `lora`.

# %%
data = load_classification_data("synthetic-sentiment", max_examples=200)
options = {"lora": {"r": 8, "alpha": 16}, "merged": {"r": 8, "alpha": 16}}
results = {}
for name in ("head", "lora", "merged", "full"):
    rate = METHODS[name].learning_rate
    config = TrainConfig(epochs=4, batch_size=8, learning_rate=rate, progress=False)
    results[name] = finetune(data, method=name, config=config, **options.get(name, {}))
    run = results[name]
    print(
        f"{name:7} trainable {run.trainable:>7,} of {run.total:,}: test accuracy "
        f"{run.untrained['accuracy']:.3f} -> {run.best['accuracy']:.3f}"
    )

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

figure, axis = plt.subplots(figsize=(5, 3))
for name, run in results.items():
    history = run.training.history
    axis.plot(
        [h["epoch"] for h in history],
        [h["val_accuracy"] for h in history],
        "o-",
        label=f"{name} ({run.trainable:,})",
    )
axis.set_xlabel("epoch")
axis.set_ylabel("validation accuracy")
axis.set_title("tiny-gpt2 on synthetic-sentiment (trainable parameters)")
axis.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Using the run elsewhere
#
# `save_run` writes only what trained (and the same adapter in peft's format), with what
# rebuilds the model; `load_run` loads the base model again and puts the trained weights in.
# `peft-course finetune` and `peft-course predict` do the same from the command line.

# %%
lora = results["lora"]
spec = RunSpec(
    model="tiny-gpt2",
    method="lora",
    label_names=data.label_names,
    dataset=data.name,
    method_options=options["lora"],
)
texts = ["a superb , moving film .", "the plot was not good .", "dull , but the ending was good ."]
with tempfile.TemporaryDirectory() as directory:
    save_run(directory, lora, spec, data)
    model, tokenizer, _ = load_run(directory)
    for row in predict_texts(model, tokenizer, texts):
        print(f"{row['text']!r:38} {row['label']:9} {row['probabilities']}")

# %% [markdown]
# ## Try this
#
# Give LoRA `r=2` or `targets=["c_attn", "attn.c_proj"]` in `options`, or run `"bitfit"`,
# `"ia3"` or `"dora"` in the loop (every registry method goes through the same `finetune`).
# `finetune(..., model_name="smollm2-135m")` runs the same code on a real pretrained Llama.
