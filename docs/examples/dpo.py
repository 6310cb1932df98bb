"""DPO from a script: the loss of a batch of preference pairs, chosen rows first."""

import torch

from peft_course.dpo import (
    collate_pairs,
    dpo_loss,
    film_preferences,
    perturbed_copy,
    sequence_logprobs,
    tokenize_pair,
)
from peft_course.models import load_model

reference, tokenizer = load_model("tiny-gpt2", task="causal-lm")
policy = perturbed_copy(reference, scale=0.05)  # stands in for a policy that has trained a little
pairs = film_preferences(n_train=4, n_test=1)["train"]
print(pairs[0])

# One batch holds the `prompt + chosen` rows first, then the `prompt + rejected` rows.
batch = collate_pairs([tokenize_pair(tokenizer, p) for p in pairs], tokenizer.pad_token_id)
with torch.no_grad():
    logps = {
        name: sequence_logprobs(
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
            batch["input_ids"],
            batch["completion_mask"],
        ).chunk(2)  # (chosen, rejected): one log-probability per pair each
        for name, model in (("policy", policy), ("reference", reference))
    }
result = dpo_loss(*logps["policy"], *logps["reference"], beta=0.1)
print(f"loss {result.loss.item():.4f} (ln 2 = 0.6931 when the policy is the reference)")
print("reward margins:", (result.chosen_rewards - result.rejected_rewards).tolist())
