# %% [markdown]
# # Lab: QLoRA
#
# QLoRA stores the frozen weights in 4 bits (NF4: 16 levels placed where normally distributed
# weights fall, one scale per block of 64), computes with them dequantized on the fly, and
# trains a LoRA on top in full precision. This lab quantizes one weight and looks at the error,
# counts the bytes, loads tiny-gpt2 in 4 bits, and trains LoRA on it beside plain LoRA.

# %%
from bitsandbytes.functional import dequantize_4bit, get_4bit_type, quantize_4bit

from peft_course.data import load_classification_data
from peft_course.finetune import finetune
from peft_course.models import count_parameters, load_model
from peft_course.qlora import (
    load_qlora_model,
    nf4_bits_per_parameter,
    nf4_bytes,
    prepare_qlora,
    quantize_nf4,
    quantized_modules,
    stored_quant_bytes,
)
from peft_course.training import TrainConfig

# %% [markdown]
# ## NF4: 16 levels where the weights are
#
# Each block of 64 weights is divided by its largest magnitude (its *absmax*), and each weight
# becomes the nearest of 16 levels in $[-1, 1]$, stored as a 4-bit code. Here is one of
# tiny-gpt2's attention weights, quantized and dequantized by bitsandbytes.

# %%
model, tokenizer = load_model("tiny-gpt2", task="classification", num_labels=2)
weight = model.transformer.h[0].attn.c_attn.weight.detach().float()
packed, state = quantize_4bit(weight, blocksize=64, quant_type="nf4")
restored = dequantize_4bit(packed, state)
error = (restored - weight).abs()
print(f"weight {tuple(weight.shape)}, packed into {packed.numel():,} bytes ({packed.dtype})")
print(
    f"mean |error| {error.mean():.2e}, largest {error.max():.2e}, weights' std {weight.std():.2e}"
)
levels = get_4bit_type("nf4", device="cpu")
print("the 16 levels:", [round(v, 3) for v in levels.tolist()])

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

block = weight.flatten()[:64]
scaled = block / block.abs().max()
figure, axis = plt.subplots(figsize=(6, 2.6))
axis.hist(scaled.tolist(), bins=40, color="lightsteelblue", label="a block, / absmax")
for value in levels.tolist():
    axis.axvline(value, color="darkred", linewidth=0.7)
axis.set_xlabel("weight / absmax (red: the NF4 levels)")
axis.set_ylabel("weights")
axis.set_title("One block of 64 weights and the levels it is rounded to")
plt.show()

# %% [markdown]
# ## What a 4-bit weight occupies
#
# A 4-bit code plus its share of the scale: with fp32 scales that is $4 + 32/64$ bits; with
# *double quantization* the scales are themselves quantized to 8 bits, one fp32 scale per 256
# of them. The formula, and what bitsandbytes stores for the weight above:

# %%
print(
    "bits per weight, formula:",
    nf4_bits_per_parameter(False),
    "and",
    nf4_bits_per_parameter(True),
    f"= {float(nf4_bits_per_parameter(True)):.4f}",
)
for double in (False, True):
    stored = quantize_nf4(weight, double_quant=double)
    print(
        f"double quantization {double!s:5}: {stored.bits_per_parameter:.4f} bits a weight, "
        f"{stored.data_bytes:,} bytes (formula {nf4_bytes(weight.numel(), double):,})"
    )

# %% [markdown]
# ## Loading in 4 bits, and LoRA on top
#
# `load_qlora_model` asks transformers to quantize the block projections while loading;
# embeddings, norms and the head stay in full precision. `prepare_qlora` readies the model for
# training and adds LoRA.

# %%
qmodel, qtokenizer = load_qlora_model("tiny-gpt2", num_labels=2)
print("4-bit layers:", quantized_modules(qmodel))
print(f"their stored bytes: {stored_quant_bytes(qmodel):,}")
qmodel = prepare_qlora(qmodel, r=8, alpha=16, targets=["c_attn"])
print("trainable, total:", count_parameters(qmodel))

# %% [markdown]
# ## Does it still learn?
#
# The same LoRA, trained on the generated reviews with the weights in 4 bits and in 32:

# %%
data = load_classification_data("synthetic-sentiment", max_examples=200)
config = TrainConfig(epochs=4, batch_size=8, learning_rate=5e-3, progress=False)
for method in ("lora", "qlora"):
    run = finetune(data, method=method, config=config, r=8, alpha=16, targets=["c_attn"])
    print(f"{method:6} test accuracy {run.untrained['accuracy']:.3f} -> {run.best['accuracy']:.3f}")

# %% [markdown]
# ## Try this
#
# Quantize with `blocksize=256` in the first cell (fewer scales, larger error?) or with
# `quant_type="fp4"`, the library's other 4-bit code, and compare the mean error. On a GPU,
# `peft-course finetune --method qlora --model smollm2-135m --device cuda` trains the real model
# in 4 bits.
