# %% [markdown]
# # Lab: Ablations (rank, alpha, the prompt)
#
# Here the classifier is the language model itself: each review is written into a prompt that
# ends with `Sentiment:`, and the answer is the label word the LM head finds likelier
# (` negative` or ` positive`). LoRA trains the model to put its probability there. An ablation
# changes one setting at a time (a *sweep* of *cells*) and reads the test accuracy of each.

# %%
import tempfile

from peft_course.ablation import named_sweep, run_sweep, table_rows
from peft_course.configs import SweepSettings
from peft_course.data import load_classification_data
from peft_course.lm_classification import TEMPLATES, PromptFormat

# %% [markdown]
# ## Classifying with the language-model head
#
# A prompt template is an instruction; the text and the cue follow it. Training puts the loss on
# the label word alone. Two scorings read the answer: the *verbalizer* compares the label words'
# probabilities, *strict* asks whether the single likeliest next token is the right word.

# %%
prompt_format = PromptFormat(instruction=TEMPLATES["simple-1"])
print(prompt_format.prompt("a superb , moving film .") + prompt_format.label_words[1])
print("\ntemplates:", list(TEMPLATES))

# %% [markdown]
# ## Cells and sweeps
#
# `named_sweep` builds the table `peft-course ablate rank` runs; here three ranks with
# `alpha = 2r` and no full fine-tuning row.

# %%
sweep = named_sweep("rank", ["2", "8", "32"], alpha_ratio=2, full=False)
for cell in sweep.cells:
    print(cell.label, cell.config)

# %% [markdown]
# ## Running the sweep
#
# `run_sweep` trains every cell (and seed) and saves each under `output`, so an interrupted or
# repeated sweep trains only what is missing.

# %%
data = load_classification_data("synthetic-sentiment", max_examples=128)
settings = SweepSettings(epochs=2, batch_size=8, progress=False)
with tempfile.TemporaryDirectory() as output:
    result = run_sweep(sweep, data, settings, seeds=(0,), output=output)
    again = run_sweep(sweep, data, settings, seeds=(0,), output=output)
print("trained:", result.trained, "| the second call reused:", again.reused)
rows = table_rows(result)
for row in rows:
    print(
        {
            key: row[key]
            for key in (sweep.column, "trainable params", "verbalizer, best", "strict, best")
        }
    )

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

cells = rows[1:]  # after the untrained row
figure, axis = plt.subplots(figsize=(5, 3))
for column in ("verbalizer, best", "strict, best"):
    axis.plot(
        [int(row["trainable params"].replace(",", "")) for row in cells],
        [float(row[column]) for row in cells],
        "o-",
        label=column,
    )
axis.axhline(float(rows[0]["verbalizer, best"]), color="gray", linestyle=":", label="untrained")
axis.set_xscale("log")
axis.set_xlabel("trainable parameters (r = 2, 8, 32)")
axis.set_ylabel("test accuracy")
axis.set_title("LoRA rank through the LM head, tiny-gpt2, one seed")
axis.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Try this
#
# Sweep the prompt instead: `named_sweep("prompt", ["default", "simple-2", "complex"])`, or
# alpha at a fixed rank: `named_sweep("alpha", ["8", "32"], r=8)`. One seed is noise as much
# as signal: `seeds=(0, 1, 2)` makes each cell a mean and a spread. Is a difference between two
# cells larger than the spread?
