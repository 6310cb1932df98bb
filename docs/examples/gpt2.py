"""GPT-2 from scratch, from a script: tiny-gpt2's weights in the course's model, text out of it."""

import torch

from peft_course.decoding import generate
from peft_course.gpt2 import LoRASpec, freeze_all_but_lora, from_pretrained
from peft_course.models import count_parameters, load_tokenizer

tokenizer = load_tokenizer("tiny-gpt2")
model = from_pretrained("tiny-gpt2", lora=LoRASpec(r=8, alpha=16, targets=("q", "k", "v")))
freeze_all_but_lora(model)  # only the A and B matrices train
print("trainable, total:", count_parameters(model))

prompt = torch.tensor([tokenizer("the film was")["input_ids"]])  # (1, T)
greedy = generate(model, prompt, max_new_tokens=12)  # the KV cache is on by default
nucleus = generate(
    model, prompt, 12, strategy="top-p", top_p=0.9, generator=torch.Generator().manual_seed(0)
)
print("greedy:", repr(tokenizer.decode(greedy[0])))
print("top-p: ", repr(tokenizer.decode(nucleus[0])))
