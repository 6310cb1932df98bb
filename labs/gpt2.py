# %% [markdown]
# # Lab: GPT-2 from scratch
#
# The course's GPT-2 is one file (`peft_course/gpt2.py`): embeddings, blocks of causal
# self-attention and an MLP, a tied LM head, with LoRA built in. This lab loads tiny-gpt2's
# weights into it, checks it against transformers, looks at the attention mask, merges LoRA,
# and decodes text by hand with and without the KV cache.

# %%
import time

import torch

from peft_course.decoding import generate
from peft_course.gpt2 import (
    LoRASpec,
    attention_mask,
    freeze_all_but_lora,
    from_pretrained,
    max_logit_difference,
    merge,
)
from peft_course.models import count_parameters, load_model

# %% [markdown]
# ## Equal to transformers
#
# transformers' GPT-2 stores each projection as a `Conv1D`, its weight laid out `(in, out)`;
# the course's model uses `nn.Linear`, `(out, in)`, so loading transposes them. A padded batch,
# compared at the real tokens:

# %%
ours = from_pretrained("tiny-gpt2")
reference, tokenizer = load_model("tiny-gpt2", task="causal-lm")
batch = tokenizer(
    ["the film was", "a superb , moving film with a fine cast ."], padding=True, return_tensors="pt"
)
difference = max_logit_difference(ours, reference, batch["input_ids"], batch["attention_mask"])
print(ours.config)
print(f"largest logit difference from transformers: {difference:.1e}")

# %% [markdown]
# ## The mask: causal, and padding
#
# A query position may attend to itself and to earlier keys, and never to padding. A query
# always sees itself, so no row of the softmax is empty (that would be NaN).

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

padding = torch.tensor([[0, 0, 1, 1, 1, 1]])  # two pad tokens on the left
allowed = attention_mask(padding, queries=6, keys=6)[0, 0]
figure, axis = plt.subplots(figsize=(3, 3))
axis.imshow(allowed, cmap="Blues")
axis.set_xlabel("key position")
axis.set_ylabel("query position")
axis.set_title("May attend (blue)")
plt.show()
print(allowed.int())

# %% [markdown]
# ## LoRA built in
#
# `LoRASpec` names the projections that get a rank-`r` update. `B` starts at zero, so the LoRA
# model computes what the base computes; once `B` has changed, `merge` folds the update in.

# %%
model = from_pretrained("tiny-gpt2", lora=LoRASpec(r=8, alpha=16, targets=("q", "k", "v")))
freeze_all_but_lora(model)
print("trainable, total:", count_parameters(model))
ids, mask = batch["input_ids"], batch["attention_mask"]
print(f"untrained LoRA vs the base: {max_logit_difference(model, reference, ids, mask):.1e}")
for name, parameter in model.named_parameters():
    if name.endswith("lora_B"):
        torch.nn.init.normal_(parameter, std=0.05)  # as if it had trained
model.eval()
with torch.no_grad():
    before = model(ids, attention_mask=mask).logits
    after = merge(model)(ids, attention_mask=mask).logits
print(f"merged vs unmerged: {(before - after).abs().max():.1e}")
print(f"parameters after merging: {count_parameters(model)[1]:,}")

# %% [markdown]
# ## Generating text by hand
#
# One token at a time: greedy takes the likeliest; top-k and top-p (nucleus) sample from the
# few likeliest. The KV cache keeps every earlier position's keys and values, so each step
# feeds only the newest token: the same tokens, less work.

# %%
prompt = torch.tensor([tokenizer("the film was")["input_ids"]])
for strategy, options in (("greedy", {}), ("top-k", {"top_k": 10}), ("top-p", {"top_p": 0.9})):
    out = generate(
        ours, prompt, 12, strategy=strategy, generator=torch.Generator().manual_seed(0), **options
    )
    print(f"{strategy:6} {tokenizer.decode(out[0])!r}")

for use_cache in (True, False):
    started = time.perf_counter()
    out = generate(ours, prompt, 48, use_cache=use_cache)
    print(
        f"cache {use_cache!s:5}: {time.perf_counter() - started:.3f} s, "
        f"same tokens as greedy with cache: {torch.equal(out, generate(ours, prompt, 48))}"
    )

# %% [markdown]
# ## Try this
#
# Sample with `strategy="temperature", temperature=0.5` and then `2.0`; or give LoRA
# `targets=("q", "v", "fc")` (`peft_course.gpt2.PROJECTIONS` lists the names) and see the
# count change. Does the cache's advantage grow with the number of new tokens?
