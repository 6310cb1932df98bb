# %% [markdown]
# # Lab: Counting parameters
#
# Before training anything, count what a method trains: by formula (sympy), then on the module
# tree, and check that the two agree. A share of "the parameters LoRA trains" is only as
# good as the conventions behind it: which layers, which biases, whether the head counts.

# %%
import sympy as sp

from peft_course.counting import (
    MLP_BIASES,
    MLP_PARAMETERS,
    architecture,
    bitfit,
    breakdown,
    build_mlp,
    evaluate_architecture,
    evaluate_mlp,
    family_count,
    lora_formulas,
)
from peft_course.lora import LoRAConfig, inject_lora
from peft_course.models import count_parameters, load_model

# %% [markdown]
# ## A plain network and BitFit
#
# An MLP with widths $d_0, \dots, d_L$ has $\sum_i (d_{i-1} d_i + d_i)$ parameters; BitFit
# trains only the biases, $\sum_i d_i$. The formula, its value, and PyTorch's own count:

# %%
widths = [32, 16, 8, 2]
print("formula:", MLP_PARAMETERS, "| BitFit:", MLP_BIASES)
mlp = bitfit(build_mlp(widths))
trainable, total = count_parameters(mlp)
print("by formula:", evaluate_mlp(MLP_PARAMETERS, widths), evaluate_mlp(MLP_BIASES, widths))
print("on the model:", total, trainable)

# %% [markdown]
# ## GPT-2 small and LoRA
#
# LoRA adds $r(d_\text{in} + d_\text{out})$ per adapted projection and block. `lora_formulas`
# writes the trainable and total counts of a peft LoRA model as formulas in the rank.

# %%
gpt2 = architecture("gpt2-small")
trainable_formula, total_formula = lora_formulas(gpt2, ["c_attn"])
print("trainable:", sp.simplify(trainable_formula))
for rank in (1, 8, 64):
    lora = evaluate_architecture(trainable_formula, gpt2, rank=rank)
    total = evaluate_architecture(total_formula, gpt2, rank=rank)
    print(f"r={rank:>2}: {lora:>9,} of {total:,} ({lora / total:.3%})")

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

ranks = [1, 2, 4, 8, 16, 32, 64, 128]
figure, axis = plt.subplots(figsize=(5, 3))
for targets in (
    ["c_attn"],
    ["c_attn", "attn.c_proj"],
    ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"],
):
    lora, total = lora_formulas(gpt2, targets)
    shares = [
        evaluate_architecture(lora, gpt2, rank=r) / evaluate_architecture(total, gpt2, rank=r)
        for r in ranks
    ]
    axis.loglog(ranks, [100 * s for s in shares], "o-", label=" + ".join(targets))
axis.set_xlabel("rank r")
axis.set_ylabel("trainable share (%)")
axis.set_title("LoRA on GPT-2 small, by formula")
axis.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## The same count on a real module tree
#
# On the embedded tiny-gpt2 (width 64, 2 blocks), LoRA from scratch on `c_attn` with the head
# trainable; `breakdown` sums the trainable parameters per module type.

# %%
model, _ = load_model("tiny-gpt2", task="classification", num_labels=2)
inject_lora(model, LoRAConfig(r=8, alpha=16, targets=["c_attn"], trainable=["score"]))
for row in breakdown(model):
    print(f"{row.module:28} {row.parameter:8} {row.modules} x {row.each} = {row.trainable:,}")
width, blocks = model.config.n_embd, model.config.n_layer
print("by hand:", blocks * 8 * (width + 3 * width), "+ head", width * 2)
print("counted:", count_parameters(model))

# %% [markdown]
# ## The PEFT family on GPT-2 small
#
# Every method in the registry has a formula; at their default sizes:

# %%
for method in ("bitfit", "houlsby", "ia3", "lora", "dora", "vera", "prompt-tuning"):
    count = family_count(method, gpt2)
    print(f"{method:14} {count:>10,}" if count is not None else f"{method:14} refused")

# %% [markdown]
# ## Try this
#
# Change `widths` in the first cell, or pass `bias="lora_only"` and `saves_head=True` to
# `lora_formulas` and see which conventions move the share. `architecture("smollm2-135m")`
# counts the Llama this course runs as its real model (its projections are `q_proj`, `k_proj`,
# `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`).
