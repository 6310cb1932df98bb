"""LoRA from a script: inject it into tiny-gpt2, run a batch, merge it away, compare."""

import torch

from peft_course.lora import LoRAConfig, inject_lora, merge_and_unload
from peft_course.models import count_parameters, load_model

model, tokenizer = load_model("tiny-gpt2", task="classification", num_labels=2)
names = inject_lora(model, LoRAConfig(r=8, alpha=16, targets=["c_attn"], trainable=["score"]))
print("wrapped:", names)
print("trainable, total:", count_parameters(model))

for name, parameter in model.named_parameters():  # B starts at zero: give it something to do
    if name.endswith("lora_B"):
        torch.nn.init.normal_(parameter, std=0.02)

batch = tokenizer(
    ["a superb film .", "dull , but the ending was good ."], padding=True, return_tensors="pt"
)
model.eval()
with torch.no_grad():
    adapted = model(**batch).logits
    merged = merge_and_unload(model)  # plain Conv1D layers again, the update inside the weights
    plain = merged(**batch).logits
print("logits with LoRA:", adapted.tolist())
print(f"largest difference after merging: {(adapted - plain).abs().max().item():.1e}")
