# %% [markdown]
# # Lab: The PEFT family
#
# Four families of parameter-efficient methods: *selective* (train some weights the model has:
# BitFit's biases), *additive* (new modules beside frozen ones: adapters, (IA)³), *reparametrised*
# (a low-rank update of the weights: LoRA, DoRA) and *soft prompts* (learned input vectors).
# Compared fairly, they get the same budget of trainable parameters. This lab sizes methods to a
# budget, trains them on tiny-gpt2 at it, and measures accuracy and forgetting side by side.

# %%
import tempfile

from peft_course.compare import Counter, compare, match_budget, size_label, table_rows
from peft_course.data import load_classification_data

# %% [markdown]
# ## Matched budgets
#
# Each method has one size knob (LoRA's rank, an adapter's bottleneck, the number of virtual
# tokens). `Counter` prepares the model at a size and counts what trains; `match_budget`
# bisects the knob to the count nearest each share of the model. Methods without a knob
# (BitFit, (IA)³) have one size and stand at the budget nearest it.

# %%
data = load_classification_data("synthetic-sentiment", max_examples=200)
count = Counter("tiny-gpt2", data)
print(f"tiny-gpt2 classifier: {count.total:,} parameters, width {count.width}")
for method in ("bitfit", "ia3", "lora", "houlsby", "prompt-tuning"):
    budgets = match_budget(method, [0.005, 0.01, 0.02], count.total, count, width=count.width)
    sizes = [
        f"{b.share:.1%}: {size_label(method, b.value)} ({b.trainable:,})"
        for b in budgets
        if b.reached
    ]
    print(f"{method:14}", "; ".join(sizes) or "no budget reached")

# %% [markdown]
# ## Trained side by side
#
# `compare` trains every method at every budget it reaches (here one budget, one seed, no
# learning-rate search: each method's registry rate) and scores it on the test split. It also
# measures *forgetting*: how much the language model's loss on general text rose, in nats.

# %%
methods = ["bitfit", "ia3", "lora", "houlsby", "prompt-tuning"]
with tempfile.TemporaryDirectory() as cells:  # finished runs are kept here: a rerun reuses them
    result = compare(
        data,
        methods=methods,
        shares=[0.01],
        seeds=[0],
        output=cells,
        max_epochs=3,
        rate_factors=[1.0],
        progress=False,
    )
rows = table_rows(result)
for row in rows:
    print(
        f"{row['method']:18} {row['size']:18} {row['trainable params']:>6} "
        f"acc {row['test accuracy']:>7}  forgetting {row['forgetting (nats)']}"
    )

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

runs = {
    method: result.runs[(method, 0.01)][0] for method in methods if (method, 0.01) in result.runs
}
figure, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
for method, run in runs.items():
    left.scatter(run["trainable"], run["accuracy"])
    left.annotate(
        method,
        (run["trainable"], run["accuracy"]),
        fontsize=8,
        textcoords="offset points",
        xytext=(4, 4),
    )
left.axhline(next(iter(runs.values()))["untrained"], color="gray", linestyle=":", label="untrained")
left.set_xlabel("trainable parameters")
left.set_ylabel("test accuracy")
left.legend(fontsize=8)
right.barh(list(runs), [run["forgetting"] for run in runs.values()])
right.set_xlabel("forgetting (nats of LM loss)")
figure.suptitle("The PEFT family at a 1% budget, tiny-gpt2, one seed")
figure.tight_layout()
plt.show()

# %% [markdown]
# ## Try this
#
# Add `"dora"`, `"vera"` or `"pfeiffer"` to `methods`, or a second budget (`shares=[0.005,
# 0.02]`), and rerun. One seed is noisy: pass `seeds=[0, 1, 2]` and `table_rows` reports a mean
# and a spread. Why does prompt tuning forget so much more than the others, at the same budget?
