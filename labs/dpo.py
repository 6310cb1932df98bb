# %% [markdown]
# # Lab: Preference optimization (DPO)
#
# DPO trains a policy from pairs (a prompt $x$, a *chosen* completion $y_w$ and a *rejected*
# one $y_l$) without a reward model. A completion's implicit reward is the policy's log-ratio to
# the frozen reference, scaled by $\beta$, and the loss asks the chosen one's to be the larger:
#
# $$r(y) = \beta \log \frac{\pi(y \mid x)}{\pi_\text{ref}(y \mid x)}$$
#
# $$\mathcal{L} = -\log \sigma\big(r(y_w) - r(y_l)\big)$$
#
# This lab checks the derivation with sympy, computes the loss by hand on a batch, then trains
# tiny-gpt2 through TRL's `DPOTrainer` to prefer the *negative* review of each pair, which it
# does not do to begin with.

# %%
import torch

from peft_course.configs import DPORunConfig
from peft_course.derivations import all_checks
from peft_course.dpo import (
    collate_pairs,
    dpo_loss,
    film_preferences,
    perturbed_copy,
    sequence_logprobs,
    tokenize_pair,
    train_dpo,
)
from peft_course.models import load_model

# %% [markdown]
# ## The derivation, one sympy check per step
#
# From the KL-regularised objective to the optimal policy, the reward read off it, the
# Bradley-Terry probability where the partition function cancels, and the gradient:

# %%
for check in all_checks():
    print(f"{check.step:60} {'holds' if check.holds else 'FAILS'} ({check.method})")

# %% [markdown]
# ## The loss by hand
#
# A batch holds the `prompt + chosen` rows, then the `prompt + rejected` rows; the completion
# mask keeps the prompt's tokens out of each sequence's log-probability.

# %%
pairs = film_preferences(n_train=32, n_test=16, prefer="negative")
print(pairs["train"][0])

reference, tokenizer = load_model("tiny-gpt2", task="causal-lm")
policy = perturbed_copy(reference, scale=0.05)  # as if it had trained a little
batch = collate_pairs(
    [tokenize_pair(tokenizer, p) for p in pairs["train"]][:8], tokenizer.pad_token_id
)


def logprobs(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) sequence log-probabilities of the batch under `model`."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logprobs(logits, batch["input_ids"], batch["completion_mask"]).chunk(2)


same = dpo_loss(*logprobs(reference), *logprobs(reference), beta=0.1)
moved = dpo_loss(*logprobs(policy), *logprobs(reference), beta=0.1)
print(f"policy = reference: loss {same.loss:.4f} (ln 2 = {torch.log(torch.tensor(2.0)):.4f})")
print(f"perturbed policy:   loss {moved.loss:.4f}")

# %% [markdown]
# How the loss and its gradient weight, $\sigma(-\text{margin})$, depend on the reward margin:
# pairs already ranked well push little, pairs ranked wrongly push hard.

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

margins = torch.linspace(-6, 6, 121)
zeros = torch.zeros_like(margins)
losses = [dpo_loss(m.view(1), zeros[:1], zeros[:1], zeros[:1], beta=1.0).loss for m in margins]
figure, axis = plt.subplots(figsize=(5, 3))
axis.plot(margins, [loss.item() for loss in losses], label="loss")
axis.plot(margins, torch.sigmoid(-margins), label="gradient weight")
axis.set_xlabel("reward margin, chosen - rejected")
axis.set_title("The DPO loss as the margin grows")
axis.legend()
plt.show()

# %% [markdown]
# ## Training through TRL
#
# `train_dpo` trains with LoRA (the reference is the same model with its adapters off) and
# measures the held-out pairs before and after. `rewards/accuracies` is the share of test pairs
# whose chosen completion gets the larger implicit reward; `likelihood_accuracy` asks the same of
# the policy's own log-probabilities, meaningful before training too.

# %%
config = DPORunConfig(learning_rate=2e-2, epochs=2, batch_size=8)
run = train_dpo(pairs, config=config)
for key in ("rewards/accuracies", "rewards/margins", "likelihood_accuracy", "loss"):
    print(f"{key:22} {run.before[key]:8.4f} -> {run.after[key]:8.4f}")
print("reference unchanged:", run.reference_unchanged, f"| {len(run.history)} logged steps")

# %% [markdown]
# ## Try this
#
# Make the pairs with `prefer="positive"` (a preference the model may already share), or set
# `beta=0.5` in `DPORunConfig`, and rerun the training cell: how do the held-out margins move?
# With `lora=False`, the policy trains in full and the reference is a second, frozen copy.
