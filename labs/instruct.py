# %% [markdown]
# # Lab: Instruction tuning
#
# An instruction-tuned model is trained on `### Instruction / ### Context / ### Response`
# texts, with the loss on the response tokens only: the model learns to answer, not to write
# instructions. This lab lays out an example, shows which tokens carry a label, fine-tunes
# tiny-gpt2 on generated tasks whose answers can be checked exactly, and scores it per task.

# %%
from peft_course.instruct import (
    encode,
    exact_match,
    full_text,
    generated_instructions,
    instruct_tune,
)
from peft_course.models import load_model
from peft_course.training import TrainConfig

# %% [markdown]
# ## The format, and labels on the response only
#
# Five generated tasks (sentiment, the n-th word, addition, reversing, sorting), each example
# with one right answer. `encode` sets the label of every prompt token to -100, which the loss
# skips.

# %%
splits = generated_instructions(n_train=300, n_validation=20, n_test=40)
example = splits["train"][4]
print(full_text(example))

model, tokenizer = load_model("tiny-gpt2", task="causal-lm")
encoded = encode(example, tokenizer, max_length=128)
for token, label in zip(encoded["input_ids"][-10:], encoded["labels"][-10:]):
    print(f"{tokenizer.decode([token])!r:16} label {label}")
print(f"{encoded['labels'].count(-100)} of {len(encoded['labels'])} tokens are prompt (-100)")

# %% [markdown]
# ## Exact match
#
# Answers are compared after normalising case, spaces and a final full stop; anything else is
# a miss.

# %%
for prediction, reference in (("2 5 7", "2 5 7"), (" 2 5 7.", "2 5 7"), ("2 5 7 9", "2 5 7")):
    print(f"{prediction!r:12} vs {reference!r}: {exact_match(prediction, reference)}")

# %% [markdown]
# ## Tuning
#
# `instruct_tune` answers the test split, trains on the responses, validates by exact match
# after each epoch, and answers the test split again at the best validation. Full fine-tuning
# here: tiny-gpt2's vocabulary was never trained on most answer tokens, and LoRA alone leaves
# the tied embedding as it is (the chapter shows why; `train_embeddings=True` trains it too).

# %%
config = TrainConfig(epochs=4, batch_size=16, learning_rate=3e-3, progress=False)
result = instruct_tune(splits, method="full", config=config)
print(
    f"exact match on the test split: {result.untrained['accuracy']:.3f} -> "
    f"{result.best['accuracy']:.3f}"
)
for row in result.rows(5):
    print(
        f"{row['task']:10} {row['reference']!r:16} before {row['before']!r:20} "
        f"after {row['after']!r}"
    )

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

tasks = list(result.best["per_task"])
figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
left.plot(
    [h["epoch"] for h in result.training.history],
    [h["train_loss"] for h in result.training.history],
    "o-",
)
left.set_xticks([h["epoch"] for h in result.training.history])
left.set_xlabel("epoch")
left.set_ylabel("response loss (nats a token)")
width = 0.4
positions = range(len(tasks))
right.bar(
    [p - width / 2 for p in positions],
    [result.untrained["per_task"][t] for t in tasks],
    width,
    label="before",
)
right.bar(
    [p + width / 2 for p in positions],
    [result.best["per_task"][t] for t in tasks],
    width,
    label="after",
)
right.set_xticks(list(positions), tasks, fontsize=8)
right.set_ylabel("exact match")
right.legend(fontsize=8)
figure.suptitle("Full fine-tuning of tiny-gpt2 on 300 generated instructions")
figure.tight_layout()
plt.show()

# %% [markdown]
# The response loss falls steadily; exact match is stricter, and with this few steps only some
# tasks move. The chapter's own run (`peft-course instruct --method full`: more examples, more
# epochs) shows how far each task gets.
#
# ## Try this
#
# Run `method="lora"` with `learning_rate=5e-3`, then again with `train_embeddings=True`: which
# tasks does LoRA learn without the embedding? More data helps most: try
# `n_train=1000` (slower). The chapter's sentence-pair tasks (RTE) go through
# `peft_course.finetune` with a separator between the two texts.
