# %% [markdown]
# # Lab: LoRA from scratch
#
# LoRA keeps a weight $W_0$ frozen and learns a low-rank update beside it:
# $h = W_0 x + \frac{\alpha}{r} B A x$, with $A$ of shape $r \times d_\text{in}$ and $B$ of
# shape $d_\text{out} \times r$. This lab builds one layer by hand, injects LoRA into tiny-gpt2
# by module name, checks it against peft, trains it, and looks at the rank of what it learned.

# %%
import torch

from peft_course.data import load_classification_data
from peft_course.finetune import finetune
from peft_course.lora import LoRAConfig, LoRALayer, compare_with_peft, inject_lora, lora_layers
from peft_course.models import count_parameters, load_model
from peft_course.training import TrainConfig

# %% [markdown]
# ## One layer
#
# $B$ starts at zero, so a freshly wrapped layer computes exactly what the base computed: training
# starts from the pretrained model. Merging adds $\frac{\alpha}{r} B A$ into $W_0$, and the layer
# costs no more than the base.

# %%
torch.manual_seed(0)
base = torch.nn.Linear(16, 8)
layer = LoRALayer(base, r=2, alpha=4)
x = torch.randn(3, 16)
print("A", tuple(layer.lora_A.shape), "B", tuple(layer.lora_B.shape), "scale", layer.scaling)
print("equal to the base at B = 0:", torch.equal(layer(x), base(x)))

torch.nn.init.normal_(layer.lora_B, std=0.1)  # as if it had trained
with torch.no_grad():
    before = layer(x)
    layer.merge()
    print(f"after merging, largest difference {(layer(x) - before).abs().max():.1e}")
    print("rank of the update:", torch.linalg.matrix_rank(layer.delta_weight()).item())

# %% [markdown]
# ## Injection by module name, and peft
#
# `inject_lora` wraps every module whose name matches a pattern (`c_attn` matches each
# block's attention projection) and freezes everything else but the patterns in `trainable`.
# `compare_with_peft` builds peft's LoRA on a copy, shares $A$, $B$ and the head, and reports
# the largest differences of logits and gradients.

# %%
model, tokenizer = load_model("tiny-gpt2", task="classification", num_labels=2)
config = LoRAConfig(r=8, alpha=16, targets=["c_attn"], trainable=["score"])
batch = tokenizer(
    ["a superb film .", "a dull , lifeless film ."], padding=True, return_tensors="pt"
)
differences = compare_with_peft(model, config, batch["input_ids"], torch.tensor([1, 0]))
for name, value in differences.items():
    print(f"{name:28} {value:.2e}" if isinstance(value, float) else f"{name:28} {value}")

print("wrapped:", inject_lora(model, config))
print("trainable, total:", count_parameters(model))

# %% [markdown]
# ## Does it learn?
#
# The same layer through the course's training loop (`method="lora-scratch"`), on the
# generated reviews:

# %%
data = load_classification_data("synthetic-sentiment", max_examples=200)
result = finetune(
    data,
    method="lora-scratch",
    config=TrainConfig(epochs=4, batch_size=8, learning_rate=5e-3, progress=False),
    r=8,
    alpha=16,
    targets=["c_attn"],
)
print("test accuracy: untrained", result.untrained["accuracy"], "trained", result.best["accuracy"])

# %% [markdown]
# The learned update $\frac{\alpha}{r}BA$ of each block has rank at most $r$; its singular values
# show how much of that rank training used.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

figure, axis = plt.subplots(figsize=(5, 3))
for name, lora in lora_layers(result.model).items():
    values = torch.linalg.svdvals(lora.delta_weight().detach())[:16]
    axis.semilogy(range(1, len(values) + 1), values, "o-", label=name.split(".attn")[0])
axis.axvline(8, color="gray", linestyle=":", label="r = 8")
axis.set_xlabel("singular value index")
axis.set_ylabel("singular value")
axis.set_title("The learned update of c_attn")
axis.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Try this
#
# Train with `r=2` or `r=32`, or add `"attn.c_proj"` to `targets`, and rerun the last two
# cells: does the accuracy follow the rank, and how many singular values stand above the rest?
# `alpha` scales the update: try `alpha=64` at `r=8`.
