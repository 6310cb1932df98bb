"""Counting from a script: what LoRA trains on tiny-gpt2, by formula and on the module tree."""

from peft_course.counting import lora_count
from peft_course.lora import LoRAConfig, inject_lora
from peft_course.models import count_parameters, load_model
from peft_course.qlora import nf4_bits_per_parameter

model, _ = load_model("tiny-gpt2", task="classification", num_labels=2)
before = count_parameters(model)[1]
width, blocks = model.config.n_embd, model.config.n_layer

inject_lora(model, LoRAConfig(r=8, alpha=16, targets=["c_attn"], trainable=["score"]))
trainable, total = count_parameters(model)
formula = lora_count(8, [(width, 3 * width)] * blocks) + width * 2  # c_attn: d -> 3d, head: d x 2
print(f"before LoRA: {before:,} parameters")
print(f"trainable {trainable:,} of {total:,} ({trainable / total:.2%}); formula {formula:,}")
print("NF4 bits per weight:", nf4_bits_per_parameter(False), nf4_bits_per_parameter(True))
