# %% [markdown]
# # Lab: Foundations
#
# A model, a dataset, and one loop that trains whatever is trainable. This lab loads the
# embedded `tiny-gpt2` and the generated `synthetic-sentiment` reviews, freezes everything but
# the classification head, trains it, and reads the history the loop kept. Everything runs on a
# CPU in seconds.

# %%
from peft_course.data import load_classification_data, tokenize
from peft_course.methods import prepare_full, prepare_head_only
from peft_course.models import count_parameters, load_model
from peft_course.training import TrainConfig, evaluate_classifier, load_trainable_state, train

# %% [markdown]
# ## The data and the model
#
# `load_classification_data` returns checked `train`, `validation` and `test` splits and the
# label names; `load_model` builds (once, then from the course cache) the two-layer GPT-2 with a
# fresh classification head, `score`, on top.

# %%
data = load_classification_data("synthetic-sentiment", max_examples=120)
print(data.label_names, {split: len(rows) for split, rows in data.splits.items()})
print(data.splits["train"][0])

model, tokenizer = load_model("tiny-gpt2", task="classification", num_labels=data.num_labels)
tokenized = tokenize(data, tokenizer, max_length=64)
print(tokenizer.tokenize(data.splits["train"][0]["text"])[:12])

# %% [markdown]
# ## Which parameters train
#
# A method is a function that decides which parameters keep `requires_grad`. Full fine-tuning
# keeps them all; the head-only method keeps `score` alone. The loop never asks which method it
# runs: it trains what is trainable.

# %%
print("full:     ", count_parameters(prepare_full(model)))
model = prepare_head_only(model)
trainable, total = count_parameters(model)
print("head only:", (trainable, total))
print([name for name, p in model.named_parameters() if p.requires_grad])

# %% [markdown]
# ## One loop for every method
#
# `train` runs AdamW over the trainable parameters, validates after every epoch and keeps the
# weights of the best validation accuracy (`best_state`), while the model itself is left at the
# last step's weights.

# %%
untrained = evaluate_classifier(model, tokenized["test"], tokenizer)
config = TrainConfig(epochs=4, learning_rate=2e-2, progress=False)
result = train(model, tokenized, tokenizer, config)
for entry in result.history:
    print({key: round(value, 4) for key, value in entry.items()})

load_trainable_state(model, result.best_state)  # the best-validation weights
test = evaluate_classifier(model, tokenized["test"], tokenizer)
print(f"test accuracy: untrained {untrained['accuracy']:.3f}, trained {test['accuracy']:.3f}")

# %% [markdown]
# The same loop trains every weight when the method leaves them all trainable. Full
# fine-tuning from the same starting point, at a smaller learning rate, beside the head alone:

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

full_model, _ = load_model("tiny-gpt2", task="classification", num_labels=data.num_labels)
full_model = prepare_full(full_model)
full = train(
    full_model, tokenized, tokenizer, TrainConfig(epochs=4, learning_rate=1e-3, progress=False)
)

figure, axis = plt.subplots(figsize=(5, 3))
for label, run in (("head only", result), ("full fine-tuning", full)):
    epochs = [entry["epoch"] for entry in run.history]
    axis.plot(epochs, [entry["val_accuracy"] for entry in run.history], "o-", label=label)
axis.set_xlabel("epoch")
axis.set_ylabel("validation accuracy")
axis.set_title("tiny-gpt2 on synthetic-sentiment")
axis.legend()
plt.show()

# %% [markdown]
# ## Try this
#
# Raise the data to `max_examples=400` in the first cell, or `epochs` to 8, and rerun from the
# top. Which moves the validation curves more: more data, more epochs, or more of the model
# training? Then try full fine-tuning at the head's learning rate, `2e-2`: what happens?
