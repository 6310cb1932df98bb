# %% [markdown]
# # Lab: Beyond DPO
#
# DPO's loss is one function of the reward margin $h$ between the chosen and the rejected
# completion. Other losses use other functions of it (IPO a square with a minimum, the hinge a
# margin it stops pushing at, SimPO a length-normalised margin with no reference at all), and
# KTO does without pairs. This lab draws the losses against the margin, computes them by hand,
# and trains three of them side by side through their TRL trainers.

# %%
import torch

from peft_course.configs import DPORunConfig
from peft_course.dpo import dpo_loss, film_preferences
from peft_course.preference import (
    LOSSES,
    LossSettings,
    hinge_loss,
    ipo_loss,
    simpo_loss,
    train_side_by_side,
)

for name, line in LOSSES.items():
    print(f"{name:9} {line}")

# %% [markdown]
# ## One margin, many losses
#
# With every log-probability but the chosen one's at zero, the policy's chosen log-probability
# *is* the margin. Each loss is called as the trainers compute it (one token per completion, so
# IPO's and SimPO's per-token margins equal $h$), at $\beta = 1$:

# %%
# %matplotlib inline
import matplotlib.pyplot as plt

h = torch.linspace(-4, 4, 161)
NAMES = ("DPO", "hinge", "IPO", "SimPO, gamma 1")


def per_pair(name: str, margin: torch.Tensor) -> float:
    """The loss of a single pair at `margin` (each loss function averages over its batch)."""
    m, z, o = margin.view(1), torch.zeros(1), torch.ones(1)
    return {
        "DPO": lambda: dpo_loss(m, z, z, z, beta=1.0),
        "hinge": lambda: hinge_loss(m, z, z, z, beta=1.0),
        "IPO": lambda: ipo_loss(m, z, z, z, 1.0, o, o),
        "SimPO, gamma 1": lambda: simpo_loss(m, z, o, o, beta=1.0, gamma=1.0),
    }[name]().loss.item()


figure, axis = plt.subplots(figsize=(5, 3))
for name in NAMES:
    axis.plot(h, [per_pair(name, value) for value in h], label=name)
axis.set_ylim(0, 5)
axis.set_xlabel("margin h (log-ratio, chosen - rejected)")
axis.set_ylabel("loss")
axis.set_title("Preference losses against the margin, beta = 1")
axis.legend(fontsize=8)
plt.show()
print({name: round(per_pair(name, torch.tensor(0.0)), 4) for name in NAMES}, "at h = 0")

# %% [markdown]
# DPO keeps pushing however large the margin; the hinge stops at $h = 1/\beta$; IPO pulls the
# margin towards $1/(2\beta)$ from both sides; SimPO is DPO shifted by its target margin.
#
# ## Trained side by side
#
# The same pairs (the model must learn to prefer the negative review), the same steps, three
# losses. Each run reports the held-out reward accuracy, the response length and the KL to the
# reference on sampled completions, before and after.

# %%
pairs = film_preferences(n_train=32, n_test=16, prefer="negative")
config = DPORunConfig(learning_rate=2e-2, epochs=1, batch_size=8)
runs = train_side_by_side(
    pairs, ["dpo", "ipo", "simpo"], config=config, settings=LossSettings(gamma=0.5)
)
for run in runs:
    print(
        f"{run.loss:6} reward accuracy {run.before['rewards/accuracies']:.2f} -> "
        f"{run.after['rewards/accuracies']:.2f}, length {run.length_before:.1f} -> "
        f"{run.length_after:.1f}, KL {run.kl_before:.3f} -> {run.kl_after:.3f} "
        f"({run.steps} steps)"
    )

# %% [markdown]
# ## Try this
#
# Add `"hinge"`, `"robust"`, `"apo-zero"`, `"kto"` or `"orpo"` to the list (ORPO needs a larger
# `LossSettings(orpo_lambda=2.0)` to move in so few steps), or raise `epochs`. Which losses drift
# furthest from the reference (the KL column) for the same gain in accuracy?
