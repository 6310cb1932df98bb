"""QLoRA from a script: tiny-gpt2 loaded in 4-bit NF4, LoRA on top, one batch through it."""

import torch

from peft_course.models import count_parameters
from peft_course.qlora import load_qlora_model, nf4_bytes, prepare_qlora, quantized_modules

model, tokenizer = load_qlora_model("tiny-gpt2", num_labels=2)  # needs bitsandbytes' 4-bit layers
print("4-bit:", quantized_modules(model))
weight = model.transformer.h[0].attn.c_attn.weight
print(f"c_attn stores {weight.numel():,} bytes of codes ({weight.dtype}) for 64 x 192 weights;")
print(f"with its scales, {nf4_bytes(64 * 192):,} bytes instead of {4 * 64 * 192:,} in fp32")

model = prepare_qlora(model, r=8, alpha=16, targets=["c_attn"])
print("trainable, total:", count_parameters(model))
batch = tokenizer(["a superb film .", "a dull film ."], padding=True, return_tensors="pt")
with torch.no_grad():
    print("logits:", model(**batch).logits.float().tolist())
